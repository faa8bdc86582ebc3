#!/usr/bin/env bash
# Static checks of everything under deploy/ and k8s/, offline (PyPI only, to install the
# pinned tools when missing). Run from anywhere:
#
#   PYTHON=/path/to/venv/bin/python bash deploy/check.sh
#
# The pinned tools are installed on first use into <venv>/deploy-check/ (see "tools").
#
# 1. python-hcl2 parses every .tf file; variables/outputs described and validated, and
#    explained in deploy/README.md; no account ids; routing-patterns.json has one
#    EventBridge pattern per domain.
#    `terraform fmt -check` (offline: formatting needs no provider).
# 2. The Kustomize base and overlays are rendered by the real Kustomize (`kubectl
#    kustomize`, or a `kustomize` binary), exactly what `kubectl apply -k` applies, and
#    every object is validated: built-in kinds with kubernetes-validate --strict, KEDA kinds
#    with a local subset schema, plus the deployment's own invariants
#    (deploy/tools/validate_manifests.py).
# 3. The ECS task definitions (deploy/tools/check_ecs.py).
# 3b. Observability (deploy/tools/check_observability.py): every alarm's metric, dimension
#    and value is one the code emits and the collector publishes (with the delta
#    conversion), every ECS task and rendered workload that exports OTLP has its collector
#    sidecar, the k8s copy of the collector config is deploy/otel-collector/config.yaml, and
#    every Grafana query reads emitted series with a job variable of the right service.
# 4. checkov: terraform + dockerfile + secrets over deploy/ and k8s/, kubernetes over the
#    rendered overlays (every base and component object is in one of them).
#    The overlays are given to checkov as rendered in step 2.
#    Zero failed checks; skips only inline, with a reason (listed in deploy/README.md).
#
# Exit status: 0 when every check passes, 1 otherwise.
set -uo pipefail

PYTHON="${PYTHON:-python3}"
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_HCL2_VERSION=8.1.4
# The oldest Kubernetes minor the manifests must work on (preStop sleep needs >= 1.30).
K8S_VERSION=1.31.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
START=$(date +%s)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# checkov must never call home: no Bridgecrew/Prisma API key is given (so nothing is
# uploaded), no guideline mapping download, no version check, no SCA package scan, no
# external module download. Parse errors fail the run instead of being skipped.
# No __pycache__ in the work tree from deploy/tools.
export PYTHONDONTWRITEBYTECODE=1
export BC_SKIP_MAPPING=TRUE
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export CKV_PARSE_ERROR_FAIL=true
export CHECKOV_REQUEST_CONNECT_TIMEOUT=2
export CHECKOV_REQUEST_RETRIES=0
unset BC_API_KEY PRISMA_API_URL

declare -a RESULTS=()
FAILED=0
record() { # name, status
  RESULTS+=("$(printf '%-44s %s' "$1" "$2")")
  [ "$2" = ok ] || FAILED=1
}


echo "== tools"
"$PYTHON" --version || { echo "PYTHON=$PYTHON is not a python interpreter"; exit 1; }
# The tools get their own venv inside the given one (<venv>/deploy-check/venv): installed
# into the project venv, checkov would downgrade boto3, botocore and networkx under the AWS
# emulator (moto) that the tests run from there.
# Without a venv (PYTHON is a system interpreter) they go to the user's cache instead.
TOOLS="$("$PYTHON" -c 'import os, sys
if sys.prefix != sys.base_prefix:
    print(os.path.join(sys.prefix, "deploy-check"))
else:
    print(os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stripe-worker-deploy-check"))')"
if [ ! -x "$TOOLS/venv/bin/python" ]; then
  echo "creating $TOOLS/venv"
  "$PYTHON" -m venv "$TOOLS/venv" || { echo "cannot create $TOOLS/venv"; exit 1; }
fi
PY="$TOOLS/venv/bin/python"
installed_version() {
  "$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}
want=()
[ "$(installed_version checkov)" = "$CHECKOV_VERSION" ] || want+=("checkov==$CHECKOV_VERSION")
[ "$(installed_version kubernetes-validate)" = "$KUBERNETES_VALIDATE_VERSION" ] || want+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if [ ${#want[@]} -gt 0 ]; then
  echo "installing ${want[*]} into $TOOLS/venv"
  "$PY" -m pip install -q --disable-pip-version-check "${want[@]}" || { echo "pip install failed"; exit 1; }
fi
# python-hcl2 and checkov's fork bc-python-hcl2 both install a module named `hcl2`;
# python-hcl2 goes into its own directory, put on PYTHONPATH for its one script.
HCL2_DIR="$TOOLS/python-hcl2-$PYTHON_HCL2_VERSION"
if [ ! -f "$HCL2_DIR/.complete" ]; then
  echo "installing python-hcl2==$PYTHON_HCL2_VERSION into $HCL2_DIR"
  rm -rf "$HCL2_DIR"
  "$PY" -m pip install -q --disable-pip-version-check --target "$HCL2_DIR" "python-hcl2==$PYTHON_HCL2_VERSION" \
    && touch "$HCL2_DIR/.complete" || { echo "pip install python-hcl2 failed"; exit 1; }
fi
CHECKOV=("$PY" -m checkov.main)
echo "checkov $("${CHECKOV[@]}" --version), kubernetes-validate $(installed_version kubernetes-validate), python-hcl2 $PYTHON_HCL2_VERSION"

echo "== terraform (python-hcl2)"
mapfile -t TF_FILES < <(find deploy -name '*.tf' -not -path '*/.terraform/*' | sort)
if PYTHONPATH="$HCL2_DIR" "$PY" deploy/tools/check_terraform.py deploy/README.md deploy/routing-patterns.json "${TF_FILES[@]}"; then
  record "terraform parse (${#TF_FILES[@]} files)" ok
else
  record "terraform parse (${#TF_FILES[@]} files)" FAILED
fi

echo "== terraform fmt"
if ! command -v terraform >/dev/null; then
  echo "terraform is not installed: https://developer.hashicorp.com/terraform/install"
  record "terraform fmt -check" FAILED
elif terraform fmt -check -recursive -diff deploy; then
  record "terraform fmt -check" ok
else
  record "terraform fmt -check" FAILED
fi

echo "== kubernetes (kustomize + kubernetes-validate $K8S_VERSION --strict + invariants)"
if command -v kubectl >/dev/null; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
  KUSTOMIZE=(kustomize build)
else
  KUSTOMIZE=()
  echo "neither kubectl nor kustomize is installed: the overlays cannot be rendered"
fi
echo "renderer: ${KUSTOMIZE[*]:-none}"
mkdir -p "$WORK/rendered"
for target in base overlays/dev overlays/prod; do
  out="$WORK/rendered/$(echo "$target" | tr / -).yaml"
  if [ ${#KUSTOMIZE[@]} -eq 0 ] || ! "${KUSTOMIZE[@]}" "k8s/$target" >"$out"; then
    record "render k8s/$target" FAILED
    continue
  fi
  partial=()
  # The base alone has no worker autoscaler: that comes with a component in each overlay.
  [ "$target" = base ] && partial=(--partial)
  if "$PY" deploy/tools/validate_manifests.py --k8s-version "$K8S_VERSION" --readme README.md --env-rs src/config/env.rs "${partial[@]}" "$out"; then
    record "validate k8s/$target" ok
  else
    record "validate k8s/$target" FAILED
  fi
done

echo "== ecs task definitions"
if "$PY" deploy/tools/check_ecs.py README.md src/config/env.rs deploy/ecs/*-task-definition.json; then
  record "ecs task definitions" ok
else
  record "ecs task definitions" FAILED
fi

echo "== observability (alarms, collector, dashboard)"
if "$PY" deploy/tools/check_observability.py "$ROOT" "$WORK"/rendered/*.yaml; then
  record "alarms, collector sidecars, dashboard" ok
else
  record "alarms, collector sidecars, dashboard" FAILED
fi

# checkov exits 1 on failed checks; its JSON report is read for the summary either way.
run_checkov() { # label, report name, checkov arguments...
  local label="$1" report="$2"
  shift 2
  timeout 600 "${CHECKOV[@]}" "$@" --skip-download --compact \
    -o cli -o json --output-file-path "console,$WORK/$report" >"$WORK/$report.log" 2>&1
  local rc=$?
  "$PY" - "$WORK/$report" "$label" <<'PY' || rc=1
import json, sys
path, label = sys.argv[1], sys.argv[2]
try:
    data = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"  {label}: no report ({e})")
    sys.exit(1)
for r in data if isinstance(data, list) else [data]:
    s = r.get("summary", {})
    print(f"  {label} [{r.get('check_type') or 'no findings'}]: passed {s.get('passed', 0)}, failed {s.get('failed', 0)}, "
          f"skipped {s.get('skipped', 0)}, parsing errors {s.get('parsing_errors', 0)}")
    for c in r.get("results", {}).get("failed_checks", []):
        print(f"    FAIL {c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}")
    for c in r.get("results", {}).get("skipped_checks", []):
        print(f"    skip {c['check_id']} {c['resource']}: {c.get('check_result', {}).get('suppress_comment', '')}")
PY
  if [ $rc -ne 0 ]; then
    tail -n 40 "$WORK/$report.log"
    return 1
  fi
  return 0
}

echo "== checkov"
for overlay in dev prod; do
  mkdir -p "$WORK/checkov-k8s/$overlay"
  cp "$WORK/rendered/overlays-$overlay.yaml" "$WORK/checkov-k8s/$overlay/"
done
if run_checkov "deploy/ + k8s/" ck-source -d deploy -d k8s --framework terraform dockerfile secrets; then
  record "checkov deploy/ k8s/ (terraform, dockerfile, secrets)" ok
else
  record "checkov deploy/ k8s/ (terraform, dockerfile, secrets)" FAILED
fi
# Raw k8s/ files are not given to the kubernetes framework: overlay patches are partial
# objects by design. The rendered overlays hold every base and component object.
if run_checkov "k8s/overlays/{dev,prod} rendered" ck-rendered -d "$WORK/checkov-k8s/dev" -d "$WORK/checkov-k8s/prod" --framework kubernetes; then
  record "checkov rendered overlays (kubernetes)" ok
else
  record "checkov rendered overlays (kubernetes)" FAILED
fi

echo "== summary ($(( $(date +%s) - START ))s)"
printf '%s\n' "${RESULTS[@]}"
passed=0; failed=0
for r in "${RESULTS[@]}"; do case "$r" in *" ok") passed=$((passed + 1));; *) failed=$((failed + 1));; esac; done
echo "deploy-checks: $passed passed, $failed failed"
exit $FAILED
