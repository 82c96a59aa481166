#!/usr/bin/env bash
# Face-engine benchmark: per-stage ms/image (decode, SSD, tiny, landmarks, align) at 1 and 2
# threads on the bundled photos (people/ + scenes/), median and p95, peak RSS, with the
# numpy reference implementation timed on the same photos in the same run as the baseline.
# Writes bench/results/engine.json.
#   scripts/bench/engine.sh [PHOTO_DIR...]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
DATA="${FACEPIPE_SAMPLE_DATA:-assets/sample}"
DIRS=("$@")
[ ${#DIRS[@]} -gt 0 ] || DIRS=("$DATA/people" "$DATA/scenes")
# The numpy reference pipeline (the baseline run beside us) is not part of the repository.
REF="${FACEPIPE_REFERENCE:?set FACEPIPE_REFERENCE to the folder of the numpy reference pipeline (faceapi_np.py, pipeline.py): the baseline this benchmark runs beside}"
mkdir -p bench/results
BASE=bench/results/engine_reference.json

echo "== reference (numpy, 1 thread) on ${DIRS[*]}"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 FACEAPI_MODEL_DIR="$FACEPIPE_MODELS" \
PYTHONPATH="$REF" "$PYTHON" - "$BASE" "${DIRS[@]}" <<'PY'
import json, os, sys, time
import pipeline as P
import faceapi_np as F
out, dirs = sys.argv[1], sys.argv[2:]
files = sorted(os.path.join(r, f) for d in dirs for r, _, fs in os.walk(d) for f in fs
               if f.lower().rsplit('.', 1)[-1] in ('jpg', 'jpeg', 'png', 'pgm', 'gif', 'webp', 'bmp'))
W = P.weights()
stages = {k: [] for k in ('decode', 'detect_ssd', 'detect_tiny', 'landmarks_per_face', 'align_dlib_chip_per_face')}
for path in files:
    t = time.thread_time(); img = P.load_image(path); stages['decode'].append((time.thread_time() - t) * 1e3)
    t = time.thread_time(); dets = P.detect(img, 'ssd'); stages['detect_ssd'].append((time.thread_time() - t) * 1e3)
    t = time.thread_time(); P.detect(img, 'tiny'); stages['detect_tiny'].append((time.thread_time() - t) * 1e3)
    for _, box in dets:
        t = time.thread_time(); pts, _ = P.landmarks(img, box); stages['landmarks_per_face'].append((time.thread_time() - t) * 1e3)
        if pts is None: continue
        t = time.thread_time(); rect, angle = P.chip_details(pts, 150, 0.25); P.extract_chip(img, rect, angle, 150)
        stages['align_dlib_chip_per_face'].append((time.thread_time() - t) * 1e3)
json.dump({'photos': len(files), 'stages': stages}, open(out, 'w'))
print(f"reference: {len(files)} photos timed")
PY

echo "== facepipe engine (release)"
cargo build --release -p facepipe-pipeline --example engine_bench
"$CARGO_TARGET_DIR/release/examples/engine_bench" --out bench/results/engine.json --baseline "$BASE" "${DIRS[@]}"
