#!/usr/bin/env bash
# Installs the peers the benchmark can compare gemini-pool with, into target/peers:
# LiteLLM's proxy (PyPI) and Portkey's gateway (npm), at pinned versions. Then
#   cargo run -p bench --release -- peers
# runs them, gemini-pool and the floor against the same mock and writes results/peers.md.
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_VERSION=1.108.7
PORTKEY_VERSION=1.15.2
dir=target/peers
mkdir -p "$dir"

if [ ! -x "$dir/venv/bin/litellm" ]; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
fi
if [ ! -f "$dir/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    (cd "$dir" && { [ -f package.json ] || npm init -y > /dev/null; } \
        && npm install --no-audit --no-fund --silent "@portkey-ai/gateway@$PORTKEY_VERSION")
fi
echo "peers ready in $dir: LiteLLM $LITELLM_VERSION, Portkey gateway $PORTKEY_VERSION"
