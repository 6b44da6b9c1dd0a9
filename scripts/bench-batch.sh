#!/usr/bin/env bash
# Batched against sequential sweeps, back to back (A B A B): RUNS runs (seeds 0…RUNS−1, noise
# start, tubingen × starry_night) at SIZE px for ITERS L-BFGS iterations, first one run after
# another in one process (--in-process), then all of them as one batch (--batch RUNS). Prints
# the wall time of each, the ratio, and checks that both give the same final losses.
#
#   scripts/bench-batch.sh [SIZE] [RUNS] [ITERS] [DEVICE] [RUNNER]
#   scripts/bench-batch.sh 256 16 20 cuda target/release/runner
set -euo pipefail
size=${1:-128}
runs=${2:-16}
iters=${3:-20}
device=${4:-cpu}
runner=${5:-target/release/runner}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seeds=$(seq -s, 0 $((runs - 1)))
cat >"$work/bench.toml" <<SPEC
name = "bench_batch"
[defaults]
content = "tubingen"
style = "starry_night"
size = $size
iterations = $iters
init = "noise"
device = "$device"
[sweep]
seed = [$seeds]
SPEC
finals() { cut -d, -f1,4 "$1/bench_batch/summary.csv" | sort; }
one() { # MODE FLAGS…
  local mode=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  "$runner" "$work/bench.toml" --out "$work/$mode" --force "$@" >/dev/null 2>"$work/$mode.log"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
declare -a seq bat
for round in 1 2; do
  seq[$round]=$(one sequential --in-process)
  bat[$round]=$(one batched --batch "$runs")
  echo "round $round: ${size} px, $runs runs × $iters it on $device: sequential ${seq[$round]} s, batched ${bat[$round]} s, speed-up $(echo "scale=2; ${seq[$round]} / ${bat[$round]}" | bc)×"
done
grep '^batched ' "$work/batched.log" || true
if diff <(finals "$work/sequential") <(finals "$work/batched") >/dev/null; then
  echo "final losses: equal in both modes (summary.csv, 7 digits)"
else
  echo "final losses differ:"
  diff <(finals "$work/sequential") <(finals "$work/batched") || true
fi
