#!/usr/bin/env bash
# Submits an experiment spec to Slurm as a job array plus a collect job that runs after it
# (afterany), and prints their job ids. docs/cluster.md has the whole story.
#
#   scripts/slurm/submit.sh experiments/style_transfer.toml                # a task per run
#   scripts/slurm/submit.sh SPEC --tasks 8 --claim --cpus 4 -- --size 256  # 8 claim workers
#   scripts/slurm/submit.sh SPEC --gpus 1 --partition gpu --time 2:00:00
#
# Options (before `--`): --tasks N (default: one per run, at most 100), --claim (tasks are
# claim workers instead of shards), --out DIR (default results; on a filesystem every node
# sees), --runner PATH (default target/release/runner), --cpus C per task (default 2), --gpus G
# per task, --mem M per task, --partition P, --time T, --log DIR (Slurm's output files; default
# OUT/slurm-logs), --sbatch "ARGS" (anything else for sbatch). After `--`: plan flags
# (--size, --iterations, --set, --only, --device), given to the tasks and the collect job alike.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
(( $# >= 1 )) || usage
spec=$1
shift
tasks="" mode=shard out=results runner=target/release/runner cpus=2 log="" extra=()
while (( $# )); do
    case "$1" in
        --tasks) tasks=$2; shift 2 ;;
        --claim) mode=claim; shift ;;
        --out) out=$2; shift 2 ;;
        --runner) runner=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --gpus) extra+=("--gpus-per-task=$2"); shift 2 ;;
        --mem) extra+=("--mem=$2"); shift 2 ;;
        --partition) extra+=("--partition=$2"); shift 2 ;;
        --time) extra+=("--time=$2"); shift 2 ;;
        --log) log=$2; shift 2 ;;
        --sbatch) read -r -a more <<< "$2"; extra+=("${more[@]}"); shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "submit.sh: unknown option \`$1\` (plan flags go after \`--\`)" >&2; exit 2 ;;
    esac
done
plan=("$@")

[[ -x "$runner" ]] || { echo "submit.sh: no runner at $runner (cargo build --release -p runner, or --runner PATH)" >&2; exit 2; }
# Tasks run elsewhere, maybe from another folder: absolute paths.
runner=$(realpath "$runner")
spec=$(realpath "$spec")
mkdir -p "$out"
out=$(realpath "$out")
log=${log:-$out/slurm-logs}
mkdir -p "$log"

# The plan is checked here, before anything is queued (a bad spec fails now, not in N tasks).
runs=$("$runner" "$spec" --list "${plan[@]}" | wc -l)
(( runs > 0 )) || { echo "submit.sh: the plan has no runs" >&2; exit 1; }
if [[ -z "$tasks" ]]; then
    tasks=$(( runs < 100 ? runs : 100 ))
fi
(( tasks >= 1 )) || { echo "submit.sh: --tasks must be at least 1" >&2; exit 2; }
if [[ $mode == shard ]] && (( tasks > runs )); then
    tasks=$runs   # an empty shard would only take a slot
fi

array=$(sbatch --parsable --array="0-$(( tasks - 1 ))" --cpus-per-task="$cpus" "${extra[@]}" \
    --output="$log/sweep-%A_%a.out" "$here/sweep.sbatch" "$runner" "$spec" "$out" "$mode" "${plan[@]}")
array=${array%%;*}
collect=$(sbatch --parsable --dependency="afterany:$array" --output="$log/collect-%j.out" \
    "$here/collect.sbatch" "$runner" "$spec" "$out" "${plan[@]}")
collect=${collect%%;*}
echo >&2 "submitted $runs runs of $spec as job array $array ($tasks $mode tasks, $cpus CPUs each) and collect job $collect; results in $out, logs in $log"
echo "$array $collect"
