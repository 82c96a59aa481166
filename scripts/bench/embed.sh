#!/usr/bin/env bash
# Embedding benchmark: ms/face of the pretrained 128-d network at batch 1 and 16 on 1 and 2
# threads (median, p95), with the numpy reference descriptor timed on the same crops in the
# same run as the baseline. Writes bench/results/embed.json.
#   scripts/bench/embed.sh [CROP...]     (default: the 150 px John chips of people/)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
DATA="${FACEPIPE_SAMPLE_DATA:-assets/sample}"
CROPS=("$@")
[ ${#CROPS[@]} -gt 0 ] || CROPS=("$DATA"/people/John_*/*.jpg)
# The numpy reference pipeline (the baseline run beside us) is not part of the repository.
REF="${FACEPIPE_REFERENCE:?set FACEPIPE_REFERENCE to the folder of the numpy reference pipeline (faceapi_np.py, pipeline.py): the baseline this benchmark runs beside}"
mkdir -p bench/results
BASE=bench/results/embed_reference.json

echo "== reference (numpy, 1 thread) on ${#CROPS[@]} crops"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 FACEAPI_MODEL_DIR="$FACEPIPE_MODELS" \
PYTHONPATH="$REF" "$PYTHON" - "$BASE" "${CROPS[@]}" <<'PY'
import json, os, sys, time
import numpy as np
from PIL import Image
import faceapi_np as F
from tfjs_load import load
out, files = sys.argv[1], sys.argv[2:]
w = load(os.environ['FACEAPI_MODEL_DIR'], 'face_recognition_model')
imgs = [np.asarray(Image.open(f).convert('RGB'), dtype=np.float32) for f in files]
F.descriptor(imgs[0], w)  # warm-up
ms = []
for img in imgs:
    t = time.perf_counter(); F.descriptor(img, w); ms.append((time.perf_counter() - t) * 1e3)
json.dump({'crops': len(imgs), 'ms_per_face': ms}, open(out, 'w'))
print(f"reference: median {sorted(ms)[len(ms)//2]:.2f} ms/face")
PY

echo "== facepipe (release)"
cargo build --release -p facepipe-training --example embed_bench
"$CARGO_TARGET_DIR/release/examples/embed_bench" --out bench/results/embed.json --baseline "$BASE" "${CROPS[@]}"
