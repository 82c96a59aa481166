#!/usr/bin/env bash
# `facepipe cluster` on photos whose people are known, written to bench/results/cluster.json.
# The pile: the bundled sample people (70 photos, renamed to bare numbers and flattened so
# nothing in a path names anyone), every ORL photo (400, nested folders), and the scenes
# (group photos and a photo of dogs). One prepare pass, then grouping runs that differ only
# in the constraints, each scored against the truth (pairwise and BCubed P/R/F):
#   1. baseline: distances only (faces of one photo may be grouped together);
#   2. default: + two faces of one photo are never one person;
#   3. anchors: + Barack Obama and Joe Biden enrolled in a deployment (the test fixture
#      gallery), whose groups get their names.
# Grouping time per 1,000 faces comes from each run's measured grouping step.
#   scripts/bench/cluster.sh
#   FACEPIPE_BIN=target/debug/facepipe scripts/bench/cluster.sh   # skip the release build
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/env.sh
ROOT="$PWD"
DATA="$ROOT/assets/sample"
WORK="$(mktemp -d /tmp/facepipe-bench-cluster.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

if [ -z "${FACEPIPE_BIN:-}" ]; then
  echo "== release build"
  cargo build --release -p facepipe
  FACEPIPE_BIN="$CARGO_TARGET_DIR/release/facepipe"
fi
fp="$FACEPIPE_BIN"

echo "== the pile and its truth"
pile="$WORK/pile"
mkdir -p "$pile/misc" "$pile/archive"
python3 - "$DATA" "$pile" "$WORK/truth.json" <<'EOF'
import json, os, shutil, sys
data, pile, truth_path = sys.argv[1:]
truth = {}
n = 0
for person in sorted(os.listdir(f"{data}/people")):
    for photo in sorted(os.listdir(f"{data}/people/{person}")):
        n += 1
        ext = photo.rsplit(".", 1)[-1]
        key = f"misc/{n:04d}.{ext}"
        shutil.copy(f"{data}/people/{person}/{photo}", f"{pile}/{key}")
        truth[key] = person
for subject in sorted(os.listdir(f"{data}/orl")):
    folder = f"{data}/orl/{subject}"
    if not os.path.isdir(folder):
        continue
    os.makedirs(f"{pile}/archive/{subject}x", exist_ok=True)
    for photo in sorted(os.listdir(folder)):
        key = f"archive/{subject}x/{photo}"
        shutil.copy(f"{folder}/{photo}", f"{pile}/{key}")
        truth[key] = f"orl-{subject}"
for photo in sorted(os.listdir(f"{data}/scenes")):
    shutil.copy(f"{data}/scenes/{photo}", f"{pile}/{photo}")
json.dump(truth, open(truth_path, "w"), indent=1)
print(f"{len(truth)} labelled photos + {len(os.listdir(f'{data}/scenes'))} scenes")
EOF

echo "== anchors: a deployment of the fixture gallery (Barack Obama, Joe Biden)"
"$fp" -q deploy --model pretrained --gallery "$ROOT/tests/fixtures/serving/gallery" \
  --registry "$WORK/registry" --no-serve

out="$WORK/out"
run() {
  local name="$1"; shift
  echo "== $name"
  "$fp" cluster "$pile" "$out" --truth "$WORK/truth.json" --workers 2 "$@" | tail -3
  cp "$out/clusters.json" "$WORK/$name.json"
}
LOAD_BEFORE="$(cat /proc/loadavg)"
run baseline --no-photo-constraint
run default
run anchors --deployment "$WORK/registry"
LOAD_AFTER="$(cat /proc/loadavg)"

mkdir -p bench/results
python3 - "$WORK" "$LOAD_BEFORE" "$LOAD_AFTER" > bench/results/cluster.json <<'EOF'
import json, sys
work, before, after = sys.argv[1:]
runs = {}
for name in ["baseline", "default", "anchors"]:
    c = json.load(open(f"{work}/{name}.json"))
    s = c["scores"]
    named = sorted({g["suggested_name"] for g in c["groups"] if g["suggested_name"]})
    dogs = [g for g in c["groups"] if any(m["photo"] == "dogs.jpg" for m in g["members"])]
    runs[name] = {
        "threshold": c["threshold"],
        "photos": c["photo_count"], "faces": c["face_count"],
        "groups": len(c["groups"]), "unclustered": len(c["unclustered"]),
        "labelled_faces": s["labelled_faces"], "people": s["people"],
        "pairwise": s["pairwise"], "bcubed": s["bcubed"],
        "named_groups": named,
        "groups_holding_dogs_jpg": len(dogs),
        "grouping_s": c["grouping_s"],
        "grouping_ms_per_1000_faces": 1e6 * c["grouping_s"] / max(c["face_count"], 1),
    }
base = runs["baseline"]["bcubed"]["f1"]
print(json.dumps({
    "benchmark": "cluster",
    "what": "sample people (flattened, renamed) + ORL + scenes; pretrained network",
    "load_before": before, "load_after": after,
    "runs": runs,
    "bcubed_f_default_minus_baseline": runs["default"]["bcubed"]["f1"] - base,
}, indent=2))
EOF
python3 - <<'EOF'
import json
r = json.load(open("bench/results/cluster.json"))["runs"]
print(f"{'run':<10} {'groups':>6} {'pair P':>7} {'pair R':>7} {'pair F':>7} {'B3 P':>6} {'B3 R':>6} {'B3 F':>6} {'ms/1k faces':>11}")
for k, v in r.items():
    p, b = v["pairwise"], v["bcubed"]
    print(f"{k:<10} {v['groups']:>6} {p['precision']:>7.3f} {p['recall']:>7.3f} {p['f1']:>7.3f} "
          f"{b['precision']:>6.3f} {b['recall']:>6.3f} {b['f1']:>6.3f} {v['grouping_ms_per_1000_faces']:>11.1f}")
EOF
echo "wrote bench/results/cluster.json"
