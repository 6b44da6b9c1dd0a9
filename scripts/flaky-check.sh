#!/usr/bin/env bash
# Runs the whole test suite N times (default 5) and reports every test whose outcome varied
# between runs, or that failed every time. Use it before submitting a change that touches tests:
#   scripts/flaky-check.sh 5            # the README's test command, 5 times
#   scripts/flaky-check.sh 200 -p runner --test integration fixture::hand_written
# Extra arguments go to `cargo test` (before `--`). Exit status: 0 when every test passed every
# time, 1 when any test failed or varied. Logs are kept in $FLAKY_LOGS (default a temp folder).
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-5}"
shift || true
logs="${FLAKY_LOGS:-$(mktemp -d -t flaky.XXXXXX)}"
mkdir -p "$logs"
export NST_IMAGE_MIRROR="${NST_IMAGE_MIRROR:-$(cd .. && pwd)/shared/images}"

# Build once, so the timing of the loop is the tests' alone.
cargo test --workspace --no-run "$@" >"$logs/build.log" 2>&1 || { cat "$logs/build.log"; exit 1; }
for i in $(seq 1 "$n"); do
  cargo test --workspace "$@" >"$logs/run_$i.log" 2>&1
  rc=$?
  passed=$(grep -c -E '^test .* \.\.\. ok$' "$logs/run_$i.log")
  failed=$(grep -c -E '^test .* \.\.\. FAILED$' "$logs/run_$i.log")
  echo "run $i/$n: exit $rc, $passed passed, $failed failed"
done

# One line per (binary::test, outcome) across runs; a test with two outcomes, one missing from a
# run, or one that failed, is reported.
for f in "$logs"/run_*.log; do
  awk '/^ *Running /{ bin = $2 } /^test .* \.\.\. (ok|FAILED|ignored)$/{ print bin "::" $2 "\t" $NF }' "$f"
done | sort | uniq -c |
  awk -v n="$n" '
    { count = $1; name = $2; outcome = $3
      seen[name] = seen[name] " " outcome "x" count; if (outcome != "ok") bad[name] = 1; total[name] += count }
    END {
      status = 0
      for (t in seen) {
        if (bad[t] || total[t] != n) { print "VARIED OR FAILED  " t ":" seen[t] " (of " n " runs)"; status = 1 }
      }
      if (status == 0) print "every test passed in all " n " runs (" length(seen) " tests)"
      exit status
    }'
status=$?
echo "logs: $logs"
exit $status
