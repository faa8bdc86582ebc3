#!/usr/bin/env bash
# Run every coverage-guided fuzz target (tests/fuzz, cargo-fuzz and libFuzzer) for a
# bounded time each, and print each target's executions. Not part of CI: CI runs proptest
# properties over the same entry points (tests/decode.rs, tests/ingress.rs,
# src/pattern/tests.rs, tests/reliability_props.rs).
#
#   bash tests/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Targets are built without a sanitizer: the code
# is safe Rust, and what the fuzzer looks for is panics, aborts, hangs and runaway memory.
# Findings are kept in tests/fuzz/artifacts/<target>/ (git-ignored); the corpus grows in
# tests/fuzz/corpus/<target>/, seeded from the project's fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
FUZZ_DIR="tests/fuzz"
TARGETS=(decode_message signature pattern)

# Seed corpora from the fixtures, so the fuzzer starts from real envelopes and patterns.
mkdir -p "${FUZZ_DIR}/corpus/decode_message" "${FUZZ_DIR}/corpus/pattern" "${FUZZ_DIR}/corpus/signature"
cp tests/fixtures/envelopes/*.json tests/fixtures/poison/*.json "${FUZZ_DIR}/corpus/decode_message/" 2>/dev/null || true
for f in tests/fixtures/patterns/*.json; do
  [ -e "$f" ] && cp "$f" "${FUZZ_DIR}/corpus/pattern/"
done
printf 't=1700000000,v1=%064d\n{"id":"evt_1"}' 0 >"${FUZZ_DIR}/corpus/signature/seed"

cargo +nightly fuzz build --fuzz-dir "${FUZZ_DIR}" -s none

status=0
for target in "${TARGETS[@]}"; do
  log="$(mktemp -t "fuzz-${target}.XXXXXX.log")"
  echo "==> ${target}: ${SECONDS_PER_TARGET}s"
  if cargo +nightly fuzz run --fuzz-dir "${FUZZ_DIR}" -s none "${target}" -- \
      -max_total_time="${SECONDS_PER_TARGET}" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"${log}" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE' "${log}" || tail -3 "${log}"
  else
    echo "FINDING in ${target}; log ${log}, inputs in ${FUZZ_DIR}/artifacts/${target}/"
    tail -40 "${log}"
    status=1
  fi
done
exit "${status}"
