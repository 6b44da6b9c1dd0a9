#!/usr/bin/env bash
# Regenerates the experiments of Gatys et al. 2017's controls, then docs/controls.md.
#
#   scripts/controls.sh                        # 256 px, 250 iterations: the committed figures (CPU)
#   scripts/controls.sh 512 500 --device cuda  # the paper's size on a GPU (cargo feature cuda)
#
# Runs already complete are skipped, so an interrupted regeneration resumes where it stopped.
exec "$(dirname "$0")/figures.sh" controls "${1:-256}" "${2:-250}" "${@:3}"
