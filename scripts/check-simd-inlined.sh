#!/usr/bin/env bash
# Fails when a function of our crates calls an x86 intrinsic (`core::core_arch`) out of line.
#
# An intrinsic is inlined only into code compiled with its instruction set. Code inside a
# closure is compiled without the features of the `#[target_feature]` function that defines or
# calls it: in a8fea1b the direct convolution's register blocks ran inside `with_buffer`'s
# closure, every vector operation became a call, and conv1_1 at 160×120 took 30 ms instead of
# 1.2 ms. Nothing else notices: the results are the same bits. The dependencies' own calls
# (gemm's f16 kernels, candle's bf16 helpers) are theirs and not checked.
#
# Usage: scripts/check-simd-inlined.sh BINARY   (a build of the runner with opt-level ≥ 1 for
# our crates: `cargo test`'s target/debug/runner, or the release build)
set -euo pipefail
bin="${1:?usage: $0 BINARY}"
if ! command -v objdump >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null
fi
# Each call to core::core_arch, with the function it lies in, demangled.
calls=$(objdump -d -C --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<")) }
    /call/ && /core_arch/ { print fn }')
ours=$(grep -E '^<(vgg|losses|optim|runner)::' <<<"$calls" | sort | uniq -c || true)
if [[ -n "$ours" ]]; then
    echo "error: $bin: intrinsics called out of line (not inlined into code compiled for their set):" >&2
    echo "$ours" >&2
    exit 1
fi
echo "SIMD inlined: no out-of-line intrinsic calls in our crates ($(wc -l <<<"$calls") in dependencies)"
