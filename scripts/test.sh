#!/usr/bin/env bash
# The project's test command (README: "Test"): the Rust test suite, then the end-to-end tests
# that drive the built binaries with the real client SDKs (installed into ./.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --locked
cargo test --workspace --locked

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
GEMINI_POOL_BIN_DIR="$PWD/target/debug" .venv/bin/python -m pytest -q tests/python
