#!/usr/bin/env bash
# End-to-end pipeline benchmark: decode → SSD → landmarks → align → embed every face, images/s
# at 1 and 2 threads (one photo per thread) and single-photo latency (threads inside each
# op), with the numpy reference pipeline timed on the same photos in the same run as the
# baseline. Writes bench/results/pipeline.json.
#   scripts/bench/pipeline.sh [PHOTO_DIR...]     (default: people/ + scenes/)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
DATA="${FACEPIPE_SAMPLE_DATA:-assets/sample}"
DIRS=("$@")
[ ${#DIRS[@]} -gt 0 ] || DIRS=("$DATA/people" "$DATA/scenes")
# The numpy reference pipeline (the baseline run beside us) is not part of the repository.
REF="${FACEPIPE_REFERENCE:?set FACEPIPE_REFERENCE to the folder of the numpy reference pipeline (faceapi_np.py, pipeline.py): the baseline this benchmark runs beside}"
mkdir -p bench/results
BASE=bench/results/pipeline_reference.json

echo "== reference (numpy, 1 thread): decode, SSD, landmarks, chip, descriptor for every face"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 FACEAPI_MODEL_DIR="$FACEPIPE_MODELS" \
PYTHONPATH="$REF" "$PYTHON" - "$BASE" "${DIRS[@]}" <<'PY'
import json, os, sys, time
import pipeline as P
out, dirs = sys.argv[1], sys.argv[2:]
files = sorted(os.path.join(r, f) for d in dirs for r, _, fs in os.walk(d) for f in fs
               if f.lower().rsplit('.', 1)[-1] in ('jpg', 'jpeg', 'png', 'pgm', 'gif', 'webp', 'bmp'))
P.weights()
ms, faces = [], 0
for path in files:
    t = time.perf_counter()
    img = P.load_image(path)
    for _, box in P.detect(img, 'ssd'):
        pts, _ = P.landmarks(img, box)
        if pts is not None:
            P.descriptor_chip(img, pts)
            faces += 1
    ms.append((time.perf_counter() - t) * 1e3)
json.dump({'photos': len(files), 'faces': faces, 'per_photo_ms': ms}, open(out, 'w'))
print(f"reference: {len(files)} photos, {faces} faces, {len(files) / (sum(ms) / 1e3):.2f} img/s")
PY

echo "== facepipe (release)"
cargo build --release -q -p facepipe-training --example pipeline_bench
"$CARGO_TARGET_DIR/release/examples/pipeline_bench" --out bench/results/pipeline.json --baseline "$BASE" "${DIRS[@]}"
