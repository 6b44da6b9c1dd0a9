#!/usr/bin/env bash
# Regenerates every ablation of the paper and of the seed README, then docs/ablations.md.
#
#   scripts/ablations.sh                      # 384 px, 300 iterations: the committed figures (CPU)
#   scripts/ablations.sh 512 500 --device cuda  # the paper's size on a GPU (cargo feature cuda)
#   FEATURES=cudnn scripts/ablations.sh 512 500 --device cuda   # with cuDNN 9: 2-3x faster
#
# Runs already complete are skipped, so an interrupted regeneration resumes where it stopped.
exec "$(dirname "$0")/figures.sh" ablations "${1:-384}" "${2:-300}" "${@:3}"
