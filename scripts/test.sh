#!/usr/bin/env bash
# The project's test command (README: "Test"): the Rust test suite, then the end-to-end tests
# that drive the built binaries with the real client SDKs (installed into ./.venv) and the
# dashboard in Debian's headless Chromium (screenshots in artifacts/screenshots/).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --locked
cargo test --workspace --locked

# Debian packages: Chromium (never a downloaded browser), a CJK font for the Chinese UI, and the
# shell linter for the packaging tests.
if ! command -v chromium >/dev/null 2>&1 || ! command -v shellcheck >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei shellcheck >/dev/null
  else
    echo "missing Debian packages: install chromium, fonts-wqy-microhei and shellcheck (as root)" >&2
    exit 1
  fi
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
GEMINI_POOL_BIN_DIR="$PWD/target/debug" node --test tests/browser/

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
GEMINI_POOL_BIN_DIR="$PWD/target/debug" .venv/bin/python -m pytest -q tests/python
