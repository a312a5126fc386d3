#!/usr/bin/env bash
# The project's test command (README: "Test"): the Rust test suite, then the end-to-end tests
# that drive the built binaries with the real client SDKs and frameworks (Node packages in each
# test folder's node_modules, Python ones in ./.venv and ./.venv-llamaindex) and the dashboard in
# Debian's headless Chromium (screenshots in artifacts/screenshots/).
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL for the storage and several-instance tests: the server on 127.0.0.1:5432 when one
# answers (test machines have one, trusting local connections), else Debian's, installed and
# started here with a password for the postgres user.
export GEMINI_POOL_TEST_POSTGRES="${GEMINI_POOL_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "no PostgreSQL on 127.0.0.1:5432: start one or set GEMINI_POOL_TEST_POSTGRES" >&2
    exit 1
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  service postgresql start >/dev/null 2>&1 \
    || pg_ctlcluster "$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)" main start
  for _ in $(seq 1 30); do
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break
    sleep 1
  done
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  export GEMINI_POOL_TEST_POSTGRES=postgres://postgres:postgres@127.0.0.1:5432/postgres
fi
if ! command -v psql >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
fi
# Each test makes its own gp_test_… database; drop the ones earlier runs left.
psql "$GEMINI_POOL_TEST_POSTGRES" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'gp\_test\_%'" |
  while read -r database; do
    psql "$GEMINI_POOL_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS $database" >/dev/null
  done

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
# The Vercel AI SDK and the openai npm package (pinned in tests/clients-node/package-lock.json).
(cd tests/clients-node && npm ci --no-audit --no-fund --loglevel=error)
GEMINI_POOL_BIN_DIR="$PWD/target/debug" node --test tests/clients-node/

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
GEMINI_POOL_BIN_DIR="$PWD/target/debug" .venv/bin/python -m pytest -q tests/python \
  --ignore=tests/python/test_frameworks_llamaindex.py
# llama-index in a virtualenv of its own: llama-index-llms-openai requires openai<3, the SDK tests
# above pin openai 3.
if [ ! -x .venv-llamaindex/bin/python ]; then
  python3 -m venv .venv-llamaindex
fi
.venv-llamaindex/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements-llamaindex.txt
GEMINI_POOL_BIN_DIR="$PWD/target/debug" .venv-llamaindex/bin/python -m pytest -q tests/python/test_frameworks_llamaindex.py
