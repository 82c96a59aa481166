# Source me: the environment every facepipe build, test and run uses.
#   . scripts/env.sh
# Everything downloaded lives in the cache (outside the clone) and is reused.
export FACEPIPE_CACHE="${FACEPIPE_CACHE:-$HOME/.cache/facepipe}"
export FACEPIPE_VENV="${FACEPIPE_VENV:-$FACEPIPE_CACHE/venv}"
export FACEPIPE_MODELS="${FACEPIPE_MODELS:-$FACEPIPE_CACHE/face-api-1.7.15/package/model}"
# tch finds libtorch through the venv's torch (libtorch 2.11 for tch 0.24).
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK="${LIBTORCH_BYPASS_VERSION_CHECK:-0}"
case ":$PATH:" in
  *":$FACEPIPE_VENV/bin:"*) ;;
  *) export PATH="$FACEPIPE_VENV/bin:$PATH" ;;
esac
export PYTHON="$FACEPIPE_VENV/bin/python3"
# One build folder outside the clone, so CI and fresh clones reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FACEPIPE_CACHE/target}"
# Incremental artifacts break under concurrent builds and slow clean CI builds: off by default.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export FACEPIPE_BIN="$CARGO_TARGET_DIR/debug/facepipe"
