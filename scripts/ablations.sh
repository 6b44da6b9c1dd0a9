#!/usr/bin/env bash
# Regenerates every ablation of the paper and of the seed README, then docs/ablations.md.
#
#   scripts/ablations.sh                      # 384 px, 300 iterations: the committed figures (CPU)
#   scripts/ablations.sh 512 500 --device cuda  # the paper's size on a GPU (cargo feature cuda)
#   FEATURES=cudnn scripts/ablations.sh 512 500 --device cuda   # with cuDNN 9: 2-3x faster
#
# Runs already complete are skipped, so an interrupted regeneration resumes where it stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-384}
ITER=${2:-300}
shift $(( $# < 2 ? $# : 2 ))
BUILD=()
if [ -n "${FEATURES:-}" ]; then BUILD=(--features "$FEATURES")
elif printf '%s\n' "$@" | grep -q '^cuda'; then BUILD=(--features cuda); fi
cargo build --release -p runner "${BUILD[@]}" || exit 2
R=target/release/runner
status=0
for e in style_transfer content_recon style_recon init content_layer ratio; do
  "$R" "experiments/$e.toml" --size "$SIZE" --iterations "$ITER" "$@" || status=$?
done
"$R" report --results results --docs docs || status=$?
exit $status
