#!/usr/bin/env bash
# Training benchmarks.
#   scripts/bench/train.sh loader   img/s of JPEG decode, decode+augment, the real loader (host
#                                   and device augmentation) and the former loader, measured at
#                                   1, 2 and all cores -> bench/results/loader.json   (CPU)
#   scripts/bench/train.sh step     the CPU training loop at 1 and 2 threads: loader alone, no-op
#                                   step, model step alone and full step, and which one bounds
#                                   the run -> bench/results/train_step.json
#   scripts/bench/train.sh step-cuda
#                                   the same on CUDA (bf16, device augmentation, pinned batches)
#                                   at 1, 2, 4, 8, 16 workers -> bench/results/train_step_cuda.json
#   scripts/bench/train.sh gpu [bf16|fp16|f32]
#                                   img/s of a training step at batch 256 (default bf16 autocast
#                                   on the backbone, head in f32; fp16 adds loss scaling) for
#                                   each backbone, facepipe (tch) and the PyTorch eager twin
#                                   (scripts/bench/train_torch.py) in the same run and the same
#                                   precision, with peak GPU memory
#                                   -> bench/results/train_gpu.json   (needs a CUDA GPU)
#   scripts/bench/train.sh cpu      the same step benchmark on CPU at batch 32, f32
#                                   -> bench/results/train_cpu.json
# On a GPU machine with the binaries carried over, set FACEPIPE_EXAMPLES to the folder holding
# the built examples (default: $CARGO_TARGET_DIR/release/examples) and PYTHON to its python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
mode="${1:-loader}"
mkdir -p bench/results
ex="${FACEPIPE_EXAMPLES:-$CARGO_TARGET_DIR/release/examples}"
if [ -z "${FACEPIPE_EXAMPLES:-}" ]; then
  cargo build --release -q -p facepipe-training --examples
fi
py="${PYTHON:-python3}"
# A GPU machine has no venv: its own python3 then runs the PyTorch twin.
[ -x "$py" ] || command -v "$py" >/dev/null || py=python3

step_pair() { # arch batch steps precision -> prints a JSON object with both implementations
  local arch="$1" batch="$2" steps="$3" prec="$4" mem_log
  mem_log="$(mktemp)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$mem_log" &
    local smi=$!
  fi
  local tch_json torch_json
  tch_json="$("$ex/train_bench" "$arch" "$batch" "$steps" "$prec" | tail -1)"
  if [ -n "${smi:-}" ]; then kill "$smi" 2>/dev/null || true; fi
  local tch_mem
  tch_mem="$(sort -n "$mem_log" | tail -1)"
  torch_json="$("$py" scripts/bench/train_torch.py "$arch" "$batch" "$steps" "$prec" | tail -1)"
  rm -f "$mem_log"
  "$py" - "$tch_json" "$torch_json" "${tch_mem:-null}" <<'PY'
import json, sys
a, b, mem = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
a["peak_gpu_memory_used_mib_nvidia_smi"] = None if mem in ("", "null") else float(mem)
ratio = a["img_per_s_median_of_3"] / b["img_per_s_median_of_3"]
print(json.dumps({"arch": a["arch"], "facepipe": a, "pytorch": b, "ratio_facepipe_over_pytorch": ratio}))
PY
}

case "$mode" in
  loader)
    "$ex/loader_bench" bench/results/loader.json
    ;;
  step)
    "$ex/step_bench" bench/results/train_step.json
    ;;
  step-cuda)
    "$ex/step_bench" bench/results/train_step_cuda.json cuda
    ;;
  gpu|cpu)
    if [ "$mode" = gpu ]; then batch=256; steps=20; prec="${2:-bf16}"; else batch=32; steps=3; prec=f32; fi
    out="bench/results/train_$mode.json"
    {
      echo "["
      step_pair mobilefacenet "$batch" "$steps" "$prec"
      echo ","
      step_pair resnet128 "$batch" "$steps" "$prec"
      echo "]"
    } >"$out.tmp"
    "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); json.dump({"bench":"training step img/s, facepipe (tch) vs PyTorch eager, same run","runs":d}, open(sys.argv[2],"w"), indent=2); [print(f"{r[\"arch\"]:15} facepipe {r[\"facepipe\"][\"img_per_s_median_of_3\"]:9.1f} img/s  pytorch {r[\"pytorch\"][\"img_per_s_median_of_3\"]:9.1f} img/s  ratio {r[\"ratio_facepipe_over_pytorch\"]:.3f}") for r in d]' "$out.tmp" "$out"
    rm -f "$out.tmp"
    echo "wrote $out"
    ;;
  *)
    echo "usage: $0 loader|step|step-cuda|gpu|cpu" >&2
    exit 2
    ;;
esac
