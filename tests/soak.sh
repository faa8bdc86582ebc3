#!/usr/bin/env bash
# Soak: a long run of the whole pipeline on the embedded backend with transient faults on,
# sampling the worker's resident memory while it runs. Not part of CI.
#
#   bash tests/soak.sh [EVENTS] [FAULT_RATE] [SAMPLE_SECS] [CHUNK]
#   (defaults 1000000 0.02 10 50000)
#
# Builds the release binary (or uses STRIPE_WORKER_BIN when set), runs `demo --events EVENTS --fault-rate FAULT_RATE --chunk-events CHUNK --json`
# (the demo generates, drains and checks CHUNK events at a time, so memory stays flat),
# writes RSS samples (seconds since start, RSS in MiB) to soak-rss.tsv and the demo's JSON
# report to soak-report.json in a temporary directory it prints, and exits non-zero when
# the demo's final state does not match the generator's expected state.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${1:-1000000}"
FAULT_RATE="${2:-0.02}"
SAMPLE_SECS="${3:-10}"
CHUNK="${4:-50000}"
OUT="$(mktemp -d -t stripe-worker-soak.XXXXXX)"

if [ -n "${STRIPE_WORKER_BIN:-}" ]; then
  BIN="${STRIPE_WORKER_BIN}"
else
  cargo build --release --quiet
  BIN="target/release/stripe-worker"
fi

echo "soak: ${EVENTS} events, fault rate ${FAULT_RATE}; output in ${OUT}"
start=$(date +%s)
RUST_LOG=error "${BIN}" demo --events "${EVENTS}" --fault-rate "${FAULT_RATE}" \
  --chunk-events "${CHUNK}" --json \
  --data-dir "${OUT}/data" >"${OUT}/soak-report.json" 2>"${OUT}/soak-stderr.log" &
pid=$!
printf 'secs\trss_mib\n' >"${OUT}/soak-rss.tsv"
while kill -0 "${pid}" 2>/dev/null; do
  rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/${pid}/status" 2>/dev/null || echo 0)
  printf '%s\t%s\n' "$(( $(date +%s) - start ))" "$(( ${rss_kb:-0} / 1024 ))" >>"${OUT}/soak-rss.tsv"
  sleep "${SAMPLE_SECS}"
done
status=0
wait "${pid}" || status=$?

echo "RSS over time (secs, MiB):"
column -t "${OUT}/soak-rss.tsv" | awk 'NR == 1 || NR % 6 == 2'
python3 - "${OUT}/soak-report.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["generated_events", "published", "applied", "duplicates", "retried", "dead_lettered",
        "dead_letter_reasons", "faults_injected", "events_per_sec", "p50_ms", "p99_ms",
        "elapsed_secs", "publish_secs", "chunks", "state_matches", "mismatches"]
for k in keys:
    print(f"{k}: {r.get(k)}")
PY
if [ -s "${OUT}/soak-stderr.log" ]; then
  echo "stderr (last lines):"
  tail -5 "${OUT}/soak-stderr.log"
fi
exit "${status}"
