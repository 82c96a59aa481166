#!/usr/bin/env bash
# Run facepipe's checks and tests on this machine, installing what they need first.
#   scripts/test.sh            # setup, fmt, clippy, the whole test suite
#   scripts/test.sh -- ARGS    # extra arguments for `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --browser
. scripts/env.sh

extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> build the binaries the end-to-end tests run"
cargo build --workspace --bins --all-features
echo "==> build the Lambda worker as the emulator builds it (so the tests reuse it)"
(cd pipeline && cargo build --features lambda --bin facepipe-lambda-worker)
echo "==> cargo test"
cargo test --workspace --all-features "${extra[@]}"
