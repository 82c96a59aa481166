#!/usr/bin/env bash
# The main job on embedded defaults: local storage, local workers, CPU, bundled sample data.
# Installs what it needs (idempotent), then prepare → train → evaluate → deploy, and leaves
# the web page up at the printed URL (Ctrl-C stops it).
#
#   scripts/run.sh                 # everything, ends serving on 127.0.0.1:8080
#   FACEPIPE_LISTEN=0.0.0.0:9000 scripts/run.sh
#   FACEPIPE_WORK=/tmp/fp scripts/run.sh   # where outputs go (default: ./out)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh

work="${FACEPIPE_WORK:-$PWD/out}"
listen="${FACEPIPE_LISTEN:-127.0.0.1:8080}"
sample=assets/sample
mkdir -p "$work"

echo "==> build (release)"
cargo build --release --bin facepipe
fp="$CARGO_TARGET_DIR/release/facepipe"

echo "==> 1. prepare: detect and align every face (local workers, local storage)"
"$fp" prepare "$sample/people" "$work/people-prepared" --job sample-people --workers 2
"$fp" prepare "$sample/orl" "$work/orl-prepared" --job sample-orl --workers 2

echo "==> 2. train: fine-tune the pretrained network on ORL people, evaluate on held-out people"
rm -rf "$work/model"   # a fresh run each time (use `facepipe train --resume` to continue one)
"$fp" train "$work/orl-prepared" "$work/model" --arch resnet128 --init pretrained \
  --epochs "${FACEPIPE_EPOCHS:-3}" --device auto
"$fp" evaluate pretrained "$work/orl-prepared" --out "$work/eval-pretrained"

echo "==> 3. deploy: model + gallery of the sample people, then serve"
"$fp" deploy --model "$work/model" --gallery "$work/people-prepared" \
  --registry "$work/registry" --listen "$listen"
