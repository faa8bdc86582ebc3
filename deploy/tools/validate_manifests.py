#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests of stripe-worker.

1. Schemas. Built-in kinds: kubernetes-validate, strict (unknown fields are errors), for
   the Kubernetes version given. KEDA kinds (keda.sh/v1alpha1, not in kubernetes-validate):
   the subset schema in keda-schema.json, also closed to unknown fields. Any other kind
   is an error: add a schema before adding the kind.
2. What this deployment relies on, which no schema says: pulls always and pins the image,
   probes on the health endpoints, the hardened security context, requests and limits,
   no service-link variables (the worker rejects unknown STRIPE_WORKER_* variables), only
   configuration keys the README documents, a grace period above the drain time, every
   worker Deployment scaled by exactly one autoscaler (and no `replicas` fighting it), KEDA triggers on the queue the
   Deployment consumes, and every referenced ConfigMap and ServiceAccount present.

Usage: validate_manifests.py --k8s-version 1.31.0 --readme README.md --env-rs src/config/env.rs
       [--partial] FILE...
(--partial: a base without its autoscaling component; skips the autoscaler coverage.)
Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from appconfig import allowed_config_variables

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHUTDOWN_GRACE_SECS = 20
DOMAINS = {"subscription", "payment", "customer"}
QUEUE_URL = re.compile(r"^https://sqs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<account>[0-9]{12})/(?P<name>[A-Za-z0-9_-]+)$")


def load(files: list[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    out.append((path, doc))
    return out


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_schemas(docs, k8s_version: str, errors: list[str]) -> dict[str, int]:
    with open(os.path.join(HERE, "keda-schema.json"), encoding="utf-8") as f:
        keda = json.load(f)
    counts = {"built-in (kubernetes-validate --strict)": 0, "KEDA (local subset schema)": 0}
    for path, doc in docs:
        api = doc.get("apiVersion", "")
        if api.startswith("keda.sh/"):
            kind_schema = keda["kinds"].get(doc.get("kind"))
            if kind_schema is None:
                errors.append(f"{path}: {name_of(doc)}: no KEDA schema for this kind in keda-schema.json")
                continue
            schema = dict(kind_schema, definitions=keda["definitions"])
            for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str):
                where = "/".join(str(p) for p in e.absolute_path)
                errors.append(f"{path}: {name_of(doc)}: {where}: {e.message}")
            counts["KEDA (local subset schema)"] += 1
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
            counts["built-in (kubernetes-validate --strict)"] += 1
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            errors.append(f"{path}: {name_of(doc)}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{path}: {name_of(doc)}: no schema ({e}); add one before using this kind")
    return counts


def check_container(where: str, c: dict[str, Any], pod_sc: dict[str, Any], errors: list[str], app: bool = True) -> None:
    """The hardening every container needs; `app`: stripe-worker itself, with its probes."""
    image = c.get("image", "")
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
        errors.append(f"{where}: image `{image}` needs a digest or an explicit tag other than latest")
    if c.get("imagePullPolicy") != "Always":
        errors.append(f"{where}: imagePullPolicy must be Always")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")) if app else ():
        got = c.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            errors.append(f"{where}: {probe} must GET {path} (got {got})")
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        errors.append(f"{where}: runAsNonRoot must be true")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{where}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: allowPrivilegeEscalation must be false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        errors.append(f"{where}: capabilities must drop ALL")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    if seccomp != "RuntimeDefault":
        errors.append(f"{where}: seccompProfile must be RuntimeDefault")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(part, {})):
            errors.append(f"{where}: resources.{part} must set cpu and memory")


def check_invariants(docs, allowed_vars: set[str], partial: bool, errors: list[str]) -> int:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmaps = by_kind.get("ConfigMap", {})
    accounts = by_kind.get("ServiceAccount", {})
    checked = 0

    for cm_name, cm in configmaps.items():
        for key in cm.get("data", {}):
            if key.startswith("STRIPE_WORKER_") and key not in allowed_vars:
                errors.append(f"ConfigMap/{cm_name}: {key} is not a documented configuration variable (the worker would refuse to start)")

    for dep_name, dep in by_kind.get("Deployment", {}).items():
        checked += 1
        where = f"Deployment/{dep_name}"
        pod = dep["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        if pod.get("enableServiceLinks") is not False:
            errors.append(f"{where}: enableServiceLinks must be false (service-link variables named STRIPE_WORKER_* would be rejected)")
        if not pod.get("topologySpreadConstraints"):
            errors.append(f"{where}: topologySpreadConstraints missing")
        spread_keys = [t.get("topologyKey") for t in pod.get("topologySpreadConstraints", [])]
        if len(spread_keys) != len(set(spread_keys)):
            errors.append(f"{where}: topologySpreadConstraints has two rules for one topologyKey ({spread_keys}): an overlay merged into the base's list instead of replacing it")
        sa = pod.get("serviceAccountName")
        if sa not in accounts:
            errors.append(f"{where}: ServiceAccount {sa} is not in the manifests")
        elif "eks.amazonaws.com/role-arn" not in accounts[sa]["metadata"].get("annotations", {}):
            errors.append(f"ServiceAccount/{sa}: eks.amazonaws.com/role-arn annotation missing (IRSA)")

        grace = DEFAULT_SHUTDOWN_GRACE_SECS
        for c in pod.get("containers", []):
            env_names = {e["name"] for e in c.get("env", [])}
            for e in c.get("env", []):
                if e["name"].startswith("STRIPE_WORKER_") and e["name"] not in allowed_vars:
                    errors.append(f"{where}: env {e['name']} is not a documented configuration variable")
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef", {}).get("name")
                if ref is not None and ref not in configmaps:
                    errors.append(f"{where}: envFrom ConfigMap {ref} is not in the manifests")
                elif ref is not None:
                    data = configmaps[ref].get("data", {})
                    overlap = env_names & set(data)
                    if overlap:
                        errors.append(f"{where}: {sorted(overlap)} set both in env and in ConfigMap {ref}")
                    if "STRIPE_WORKER_SHUTDOWN_GRACE_SECS" in data:
                        grace = int(data["STRIPE_WORKER_SHUTDOWN_GRACE_SECS"])
            check_container(f"{where}/{c.get('name')}", c, pod_sc, errors)
            pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            tgp = pod.get("terminationGracePeriodSeconds", 30)
            if tgp <= grace + pre_stop:
                errors.append(f"{where}: terminationGracePeriodSeconds {tgp} must exceed the drain time {grace}s plus preStop {pre_stop}s")
        for c in pod.get("initContainers", []):
            check_container(f"{where}/{c.get('name')}", c, pod_sc, errors, app=False)
        for v in pod.get("volumes", []):
            ref = v.get("configMap", {}).get("name")
            if ref is not None and ref not in configmaps:
                errors.append(f"{where}: volume ConfigMap {ref} is not in the manifests")

    # Autoscaling: each worker Deployment has exactly one scaler; KEDA reads its own queue.
    targets: dict[str, list[str]] = {}
    for hpa_name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        targets.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(f"HorizontalPodAutoscaler/{hpa_name}")
    prefix = configmaps.get("stripe-worker-common", {}).get("data", {}).get("STRIPE_WORKER_PREFIX")
    for so_name, so in by_kind.get("ScaledObject", {}).items():
        target = so["spec"]["scaleTargetRef"]["name"]
        targets.setdefault(target, []).append(f"ScaledObject/{so_name}")
        dep = by_kind.get("Deployment", {}).get(target)
        if dep is None:
            errors.append(f"ScaledObject/{so_name}: target Deployment {target} is not in the manifests")
            continue
        args = dep["spec"]["template"]["spec"]["containers"][0].get("args", [])
        domain = args[args.index("--domains") + 1] if "--domains" in args else None
        for t in so["spec"]["triggers"]:
            url = t["metadata"]["queueURL"]
            want = f"{prefix}-{domain}-events"
            region = t["metadata"].get("awsRegion")
            # A full URL, as Terraform's queue_urls output gives it: a bare name makes KEDA
            # guess the account, and a URL of another region never matches.
            m = QUEUE_URL.match(url)
            if m is None:
                errors.append(f"ScaledObject/{so_name}: queueURL {url} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)")
            elif m["name"] != want:
                errors.append(f"ScaledObject/{so_name}: queueURL {url} is not the queue {want} that {target} consumes")
            elif m["region"] != region:
                errors.append(f"ScaledObject/{so_name}: queueURL region {m['region']} is not awsRegion {region}")
            auth = t.get("authenticationRef", {}).get("name")
            if auth is not None and auth not in by_kind.get("TriggerAuthentication", {}):
                errors.append(f"ScaledObject/{so_name}: TriggerAuthentication {auth} is not in the manifests")
    for dep_name, dep in by_kind.get("Deployment", {}).items():
        scalers = targets.get(dep_name, [])
        if len(scalers) > 1:
            errors.append(f"Deployment/{dep_name}: scaled by {scalers}; exactly one autoscaler may own it")
        if scalers and "replicas" in dep["spec"]:
            errors.append(f"Deployment/{dep_name}: sets replicas although {scalers[0]} owns the count (every apply would reset it)")
        is_worker = dep["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
        if is_worker and not partial and not scalers:
            errors.append(f"Deployment/{dep_name}: no ScaledObject or HorizontalPodAutoscaler")
        if is_worker:
            args = dep["spec"]["template"]["spec"]["containers"][0].get("args", [])
            if "--domains" not in args or args[args.index("--domains") + 1] not in DOMAINS:
                errors.append(f"Deployment/{dep_name}: a worker Deployment must run one domain (`run --domains <domain>`)")

    # The fewest replicas each Deployment may run: its autoscaler's minimum, else replicas.
    least: dict[str, int] = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        least[hpa["spec"]["scaleTargetRef"]["name"]] = hpa["spec"].get("minReplicas", 1)
    for so in by_kind.get("ScaledObject", {}).values():
        least[so["spec"]["scaleTargetRef"]["name"]] = so["spec"].get("minReplicaCount", 0)
    for pdb_name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        hits = [d for d in by_kind.get("Deployment", {}).values() if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if not hits:
            errors.append(f"PodDisruptionBudget/{pdb_name}: selects no Deployment's pods")
        min_available = pdb["spec"].get("minAvailable")
        for d in hits:
            name = d["metadata"]["name"]
            floor = least.get(name, d["spec"].get("replicas", 1))
            if isinstance(min_available, int) and min_available >= floor:
                errors.append(f"PodDisruptionBudget/{pdb_name}: minAvailable {min_available} with as few as {floor} replicas of {name} blocks every node drain (use maxUnavailable)")
            if pdb["spec"].get("maxUnavailable") in (0, "0%"):
                errors.append(f"PodDisruptionBudget/{pdb_name}: maxUnavailable 0 blocks every node drain")
    return checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k8s-version", required=True)
    parser.add_argument("--readme", required=True, help="README.md with the configuration table")
    parser.add_argument("--env-rs", required=True, help="src/config/env.rs with CLI_VARIABLES")
    parser.add_argument("--partial", action="store_true")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    docs = load(args.files)
    errors: list[str] = []
    counts = validate_schemas(docs, args.k8s_version, errors)
    deployments = check_invariants(docs, allowed_config_variables(args.readme, args.env_rs), args.partial, errors)
    label = ", ".join(f"{n} {k}" for k, n in counts.items())
    for e in errors:
        print(f"  FAIL {e}")
    print(f"  {' '.join(args.files)}: {len(docs)} objects ({label}); {deployments} Deployments checked; {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
