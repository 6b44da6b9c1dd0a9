#!/usr/bin/env bash
# CI check of issue 17 on a real Slurm: starts a single-node cluster on this machine
# (local-cluster.sh installs and starts slurm-wlm and munge), submits a small sweep
# (content_recon at 64 px, 20 iterations: 5 runs) twice through submit.sh, as a job array of
# 3 shard tasks and as 3 claim workers, each followed by its collect job (afterany), waits for
# them, and checks that every task completed and that each collected summary.csv has the same
# runs, statuses and final losses as the same sweep run in one process.
#
#   scripts/slurm/ci-test.sh [RUNNER]      # default target/debug/runner (built by cargo test)
set -euo pipefail
cd "$(dirname "$0")/../.."
runner=$(realpath "${1:-target/debug/runner}")
spec=experiments/content_recon.toml
plan=(--size 64 --iterations 20)
t0=$(date +%s)

scripts/slurm/local-cluster.sh
work=$(mktemp -d /tmp/gatys-slurm.XXXXXX)

# Submit both sweeps; 1 CPU per task, so two tasks run at once on a 2-CPU machine.
read -r shard_array shard_collect < <(scripts/slurm/submit.sh "$spec" --tasks 3 --cpus 1 \
    --out "$work/shards" --runner "$runner" -- "${plan[@]}")
read -r claim_array claim_collect < <(scripts/slurm/submit.sh "$spec" --tasks 3 --cpus 1 --claim \
    --out "$work/claims" --runner "$runner" -- "${plan[@]}")
jobs="$shard_array $shard_collect $claim_array $claim_collect"

# Meanwhile, the reference: the same sweep in one process.
"$runner" "$spec" --out "$work/local" "${plan[@]}" 2> "$work/local.log" || { cat "$work/local.log"; exit 1; }

deadline=$(( $(date +%s) + 600 ))
while [[ -n "$(squeue -h -j "${jobs// /,}" 2>/dev/null)" ]]; do
    if (( $(date +%s) > deadline )); then
        echo "slurm ci: jobs still queued after 10 minutes" >&2
        squeue >&2; exit 1
    fi
    sleep 2
done

# Every task and both collect jobs completed (slurmctld keeps finished jobs for MinJobAge).
failed=0
for id in $jobs; do
    while read -r line; do
        fields=$(tr ' ' '\n' <<< "$line" | grep -E '^(JobId|JobName|ArrayTaskId|JobState|RunTime)=' | tr '\n' ' ')
        echo "slurm ci: $fields"
        [[ $fields == *JobState=COMPLETED* ]] || failed=1
    done < <(scontrol -o show job "$id")
done
if (( failed )); then
    tail -n 30 "$work"/*/slurm-logs/* >&2
    exit 1
fi

python3 - "$work" <<'PY'
import csv, sys
work = sys.argv[1]
def rows(sub):
    with open(f"{work}/{sub}/content_recon/summary.csv") as f:
        return [(r["name"], r["status"], r["final_total"]) for r in csv.DictReader(f)]
local = rows("local")
assert len(local) == 5 and all(r[1] == "ok" for r in local), local
for sub in ("shards", "claims"):
    got = rows(sub)
    assert got == local, f"{sub}: {got}\n   one process: {local}"
    print(f"slurm ci: {sub}: {len(got)} runs, statuses and final losses equal to one process's")
PY
for f in "$work"/claims/slurm-logs/sweep-*; do
    echo "slurm ci: claim worker $(basename "$f" .out): computed $(grep -c '^ok ' "$f" || true) runs"
done
echo "slurm ci: passed in $(( $(date +%s) - t0 )) s"
rm -rf "$work"
