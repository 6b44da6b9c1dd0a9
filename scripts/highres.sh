#!/usr/bin/env bash
# Regenerates the high-resolution experiments (coarse-to-fine at 384 px, and up to 2048 px),
# then docs/highres.md. Each experiment runs at its own sizes and per-stage iterations:
#
#   scripts/highres.sh                    # on the CPU, about 45 minutes on 2 cores
#   scripts/highres.sh --device cuda      # on a GPU (cargo feature cuda)
#
# Runs already complete are skipped, so an interrupted regeneration resumes where it stopped.
exec "$(dirname "$0")/figures.sh" highres - - "$@"
