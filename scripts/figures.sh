#!/usr/bin/env bash
# Runs the experiments of one figure document (docs/DOC.md) and regenerates it:
#
#   scripts/figures.sh DOC SIZE ITERATIONS [runner flags…]
#
# with DOC `ablations`, `controls` or `highres` (their experiments are listed by
# `runner report --doc DOC --experiments`); SIZE or ITERATIONS `-` keeps the specs' own. FEATURES=cudnn (or a `--device cuda…` flag) builds
# with the GPU. Runs already complete are skipped, so an interrupted regeneration resumes.
set -uo pipefail
cd "$(dirname "$0")/.."
DOC=$1 SIZE=$2 ITER=$3
shift 3
BUILD=()
if [ -n "${FEATURES:-}" ]; then BUILD=(--features "$FEATURES")
elif printf '%s\n' "$@" | grep -q '^cuda'; then BUILD=(--features cuda); fi
cargo build --release -p runner "${BUILD[@]}" || exit 2
R=target/release/runner
experiments=$("$R" report --doc "$DOC" --experiments) || exit 2
status=0
OVERRIDE=()
if [ "$SIZE" != - ]; then OVERRIDE+=(--size "$SIZE"); fi
if [ "$ITER" != - ]; then OVERRIDE+=(--iterations "$ITER"); fi
for e in $experiments; do
  "$R" "experiments/$e.toml" "${OVERRIDE[@]}" "$@" || status=$?
done
"$R" report --results results --docs docs --doc "$DOC" || status=$?
exit $status
