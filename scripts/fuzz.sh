#!/usr/bin/env bash
# Fuzzing on demand (not in CI): runs each cargo-fuzz target of fuzz/ for SECONDS (default 60),
# seeding empty corpora from the translate crate's fixtures, then minimises the corpora, which
# are kept in fuzz/corpus/. A crash leaves its input in fuzz/artifacts/<target>/ and fails.
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(request_mapping response_mapping stream_translator sse_decoder upstream_error
    responses_request responses_stream)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes -Z flags (sanitizer, coverage) that a stable compiler accepts only with
# RUSTC_BOOTSTRAP; this machine has no nightly toolchain.
export RUSTC_BOOTSTRAP=1

fixtures=crates/translate/tests/fixtures
seed() {
  local target=$1
  local corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  if [ -n "$(ls -A "$corpus")" ]; then
    return
  fi
  case "$target" in
    request_mapping) cp "$fixtures"/requests/*.json "$corpus"/ ;;
    response_mapping) cp "$fixtures"/gemini/generate_*.json "$corpus"/ ;;
    stream_translator | responses_stream)
      for file in "$fixtures"/gemini/*.sse; do
        sed -n 's/^data: //p' "$file" >"$corpus/$(basename "$file")"
      done
      ;;
    sse_decoder) cp "$fixtures"/gemini/*.sse "$corpus"/ ;;
    responses_request) cp "$fixtures"/responses/*.json "$corpus"/ ;;
    upstream_error)
      # A status byte, then the body.
      for file in "$fixtures"/gemini/errors/*.json; do
        { printf '\x1d'; cat "$file"; } >"$corpus/$(basename "$file")"
      done
      ;;
  esac
}

for target in "${targets[@]}"; do
  seed "$target"
  echo "== $target: ${seconds}s"
  (cd fuzz && cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1) |
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY" || true
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "$target: crash inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
  (cd fuzz && cargo fuzz cmin "$target" "corpus/$target" >/dev/null 2>&1) || true
done
