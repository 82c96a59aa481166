#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with a CUDA device and no Rust toolchain.
#
#   scripts/device_check.sh pack   (here) build the CUDA tests and the training benchmarks in
#                                  release, strip them and put them with the pretrained model in
#                                  .device-kit/ (about 35 MB: small enough to carry)
#   scripts/device_check.sh run    (on the GPU machine, from the repository root, with
#                                  .device-kit/ carried) run, each logged under $OUT (or out/device):
#                                  1. the CUDA tests (bf16/fp16 autocast, the fp16 loss scaler
#                                     skipping an overflowing step, exact resume on CUDA);
#                                  2. the training step, facepipe (tch) beside PyTorch eager, both
#                                     backbones, bf16 -> train_gpu.json;
#                                  3. the real training loop on CUDA: loader alone, no-op step,
#                                     model step and full step at 1-16 workers -> train_step_cuda.json;
#                                  4. the ORL fine-tune with augmentation on the device vs the host
#                                     over 3 seeds -> augment_effect_cuda.json;
#                                  with nvidia-smi sampling GPU utilisation and memory throughout.
# The machine's python3 must have a CUDA build of torch 2.11 (its lib/ is the libtorch the
# binaries were linked against).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.device-kit

case "${1:-}" in
  pack)
    . scripts/env.sh
    cargo build --release -q -p facepipe-training --examples
    cargo test --release -q -p facepipe-training --test cuda --no-run
    rm -rf "$kit" && mkdir -p "$kit/examples" "$kit/models"
    for ex in train_bench step_bench orl_experiment; do
      strip -o "$kit/examples/$ex" "$CARGO_TARGET_DIR/release/examples/$ex"
    done
    test_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/cuda-* | grep -v '\.d$' | head -1)
    strip -o "$kit/cuda_tests" "$test_bin"
    # Every network: the model folder is checked whole, though only the embedder runs here.
    cp "$FACEPIPE_MODELS"/* "$kit/models/"
    du -sh "$kit"
    ;;
  run)
    [ -d "$kit" ] || { echo "no $kit here: run 'scripts/device_check.sh pack' and carry $kit" >&2; exit 2; }
    out="${OUT:-out/device}"
    mkdir -p "$out"
    py="${PYTHON:-python3}"
    torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
    export FACEPIPE_MODELS="$PWD/$kit/models" FACEPIPE_EXAMPLES="$PWD/$kit/examples" PYTHON="$py"
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$out/device.txt"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$out/gpu_samples.csv" &
    smi=$!
    trap 'kill $smi 2>/dev/null || true' EXIT
    mark() { echo "$(date -u +%FT%T.%3N) $*" | tee -a "$out/phases.txt"; }
    status=0
    mark "cuda tests"
    "$kit/cuda_tests" --ignored --test-threads 1 --nocapture >"$out/cuda_tests.log" 2>&1 || status=1
    tail -5 "$out/cuda_tests.log"
    mark "train step vs pytorch"
    scripts/bench/train.sh gpu bf16 >"$out/train_gpu.log" 2>&1 || status=1
    tail -3 "$out/train_gpu.log"
    mark "training loop on cuda"
    "$kit/examples/step_bench" "$out/train_step_cuda.json" cuda >"$out/train_step_cuda.log" 2>&1 || status=1
    tail -6 "$out/train_step_cuda.log"
    mark "orl fine-tune, augmentation on device vs host"
    "$kit/examples/orl_experiment" "$out/orl" 6 0.002 augment 3 "$out/augment_effect_cuda.json" >"$out/augment_effect.log" 2>&1 || status=1
    tail -6 "$out/augment_effect.log"
    mark "done (status $status)"
    cp bench/results/train_gpu.json "$out/" 2>/dev/null || true
    exit "$status"
    ;;
  *)
    sed -n 2,18p "$0"
    exit 2
    ;;
esac
