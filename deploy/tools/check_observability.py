#!/usr/bin/env python3
"""Check that the alarms and the dashboard can see what the code emits, through a collector
that is really there.

1. Alarms (deploy/terraform/alarms.tf) on the application namespace: every metric is one
   src/telemetry/metrics.rs defines, every dimension one of its labels, every `reason` /
   `status` value one the ingress emits (src/ingress/counters.rs); the collector's awsemf
   pipeline publishes the metric with exactly those dimensions, keeps it through its filter,
   and converts it to deltas first (cumulativetodelta) when it is a counter or histogram
   (else a first-seen series is dropped and a histogram's maximum is a lifetime maximum);
   no Maximum/Minimum on a histogram (the delta conversion carries neither).
2. The collector configuration: the k8s copy (k8s/base/otel-collector-config.yaml) is
   deploy/otel-collector/config.yaml byte for byte.
3. Every ECS container and every rendered Kubernetes workload that exports OTLP
   (OTEL_EXPORTER_OTLP_ENDPOINT) reaches a collector: a sidecar of the same task or pod,
   listening where the endpoint points, running this configuration.
4. Grafana (deploy/grafana/stripe-worker.json): every series a query reads is one the code
   emits (after the collector's Prometheus translation), and a query on the ingress's
   metrics selects its `job` with a variable listing the ingress's services (the ingress
   runs as its own service: a variable listing the workers' would leave its panels empty),
   and likewise for the workers' metrics.

Usage: check_observability.py ROOT RENDERED_K8S_YAML...
Exit status 1 when anything fails.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any
from urllib.parse import urlparse

import yaml

COLLECTOR = "otel-collector"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --- What the code emits ------------------------------------------------------------------


def code_metrics(root: str) -> dict[str, dict[str, Any]]:
    """OTel name -> {kind, unit, labels} of every MetricDef in src/telemetry/metrics.rs."""
    with open(os.path.join(root, "src/telemetry/metrics.rs"), encoding="utf-8") as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"MetricDef\s*=\s*MetricDef\s*\{(.*?)\n\};", text, flags=re.S):
        body = m.group(1)
        name = re.search(r'name:\s*"([^"]+)"', body).group(1)
        out[name] = {
            "kind": re.search(r"kind:\s*Kind::(\w+)", body).group(1),
            "unit": re.search(r'unit:\s*"([^"]*)"', body).group(1),
            "labels": set(re.findall(r'"([a-z_]+)"', re.search(r"labels:\s*&\[(.*?)\]", body, flags=re.S).group(1))),
        }
    if len(out) < 5:
        raise SystemExit(f"src/telemetry/metrics.rs: could not read the metric definitions (found {sorted(out)})")
    return out


def prometheus_series(name: str, d: dict[str, Any]) -> set[str]:
    """The series names after the collector's OTLP -> Prometheus translation (as
    MetricDef::prometheus_series in the code)."""
    base = name.replace(".", "_") + ("_seconds" if d["unit"] == "s" else "")
    if d["kind"] == "Counter":
        base += "_total"
    if d["kind"] == "Histogram":
        return {base + s for s in ("_bucket", "_sum", "_count")}
    return {base}


def ingress_label_values(root: str) -> dict[str, set[str]]:
    """The `reason` and `status` values of stripe_worker.ingress.requests."""
    with open(os.path.join(root, "src/ingress/counters.rs"), encoding="utf-8") as f:
        text = f.read()
    as_str = re.search(r"fn as_str\(self\).*?\{(.*?)\n    \}", text, flags=re.S).group(1)
    status = re.search(r"fn status\(self\).*?\{(.*?)\n    \}", text, flags=re.S).group(1)
    reasons = set(re.findall(r'=>\s*"([a-z_0-9]+)"', as_str)) | {"accepted"}
    statuses = set(re.findall(r"=>\s*(\d{3})", status)) | {"200"}
    if len(reasons) < 5 or "503" not in statuses:
        raise SystemExit("src/ingress/counters.rs: could not read the reject reasons and statuses")
    return {"reason": reasons, "status": statuses}


# --- Terraform alarms ---------------------------------------------------------------------


def blocks(text: str, header: str) -> list[tuple[str, str]]:
    """(name, body) of each `resource "<header>" "<name>" { ... }` (braces balanced)."""
    out = []
    for m in re.finditer(r'^resource "' + re.escape(header) + r'" "([^"]+)" \{', text, flags=re.M):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((m.group(1), text[m.end() : i - 1]))
    return out


def variable_defaults(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return dict(re.findall(r'variable "([a-z0-9_]+)" \{[^}]*?default\s*=\s*"([^"]*)"', text, flags=re.S))


def string_lists(text: str) -> dict[str, list[str]]:
    """`name = [ "a", "b" ]` assignments (the locals of alarms.tf)."""
    return {
        m.group(1): re.findall(r'"([^"]*)"', m.group(2))
        for m in re.finditer(r"^\s*([a-z0-9_]+)\s*=\s*\[(.*?)\]", text, flags=re.M | re.S)
    }


def alarm_metrics(body: str, defaults: dict[str, str], lists: dict[str, list[str]]):
    """(namespace, metric, {dimension: [values]}, statistic) of the alarm's metric and of
    each metric of its metric queries."""
    out = []
    dynamic = re.search(r"for_each\s*=\s*local\.([a-z0-9_]+)", body)
    chunks = re.split(r"\n\s*metric \{", body)
    for chunk in chunks:
        ns = re.search(r"\bnamespace\s*=\s*(\S+)", chunk)
        name = re.search(r"\bmetric_name\s*=\s*(\S+)", chunk)
        if not ns or not name:
            continue
        resolve = lambda v: defaults.get(v[4:], v) if v.startswith("var.") else v.strip('"')
        dims: dict[str, list[str]] = {}
        d = re.search(r"\bdimensions\s*=\s*\{([^}]*)\}", chunk)
        for key, value in re.findall(r"([a-zA-Z_]+)\s*=\s*([^,\n]+)", d.group(1) if d else ""):
            value = value.strip()
            if value == "metric_query.value" and dynamic:
                dims[key] = lists.get(dynamic.group(1), [])
            elif value.startswith('"') and "${" not in value:
                dims[key] = [value.strip('"')]
            else:
                dims[key] = []  # computed (each.key, a resource name): not checked
        stat = re.search(r"\b(?:statistic|stat)\s*=\s*\"(\w+)\"", chunk)
        out.append((ns.group(1), resolve(name.group(1)), dims, stat.group(1) if stat else None))
    return out


def check_alarms(root: str, metrics, values, collector: dict[str, Any], errors: list[str]) -> int:
    tf = os.path.join(root, "deploy/terraform")
    with open(os.path.join(tf, "alarms.tf"), encoding="utf-8") as f:
        text = f.read()
    defaults = variable_defaults(os.path.join(tf, "variables.tf"))
    lists = string_lists(text)
    pipelines = collector.get("service", {}).get("pipelines", {})
    processors = collector.get("processors", {})
    emf = collector.get("exporters", {}).get("awsemf", {})
    declarations = emf.get("metric_declarations", [])
    cw = [p for p in pipelines.values() if "awsemf" in p.get("exporters", [])]
    checked = 0
    for alarm, body in blocks(text, "aws_cloudwatch_metric_alarm"):
        for ns, name, dims, stat in alarm_metrics(body, defaults, lists):
            if ns != "var.app_metric_namespace":
                continue
            checked += 1
            where = f"alarms.tf: {alarm}: {name}"
            d = metrics.get(name)
            if d is None:
                errors.append(f"{where}: no such metric in src/telemetry/metrics.rs (known: {sorted(metrics)})")
                continue
            if emf.get("namespace") != defaults.get("app_metric_namespace"):
                errors.append(f"{where}: awsemf namespace {emf.get('namespace')} is not app_metric_namespace {defaults.get('app_metric_namespace')}")
            for key, vals in dims.items():
                if key not in d["labels"]:
                    errors.append(f"{where}: dimension {key} is not a label of the metric ({sorted(d['labels'])})")
                for v in vals:
                    if key in values and v not in values[key]:
                        errors.append(f"{where}: {key}={v} is never emitted (src/ingress/counters.rs: {sorted(values[key])})")
                if key in values and not vals:
                    errors.append(f"{where}: dimension {key} has no value to check")
            if d["kind"] == "Histogram" and stat in ("Maximum", "Minimum"):
                errors.append(f"{where}: {stat} of a histogram: the delta conversion carries no min/max (use Average or the sum/count)")
            declared = any(
                any(re.search(sel, name) for sel in decl.get("metric_name_selectors", []))
                and sorted(dims) in [sorted(s) for s in decl.get("dimensions", [])]
                for decl in declarations
            )
            if not declared:
                errors.append(f"{where}: the collector's awsemf metric_declarations do not publish it with dimensions {sorted(dims)}")
            if not cw:
                errors.append(f"{where}: no collector pipeline exports to awsemf")
            for pipeline in cw:
                names = pipeline.get("processors", [])
                for p in names:
                    if p.startswith("filter") and name not in json.dumps(processors.get(p, {})):
                        errors.append(f"{where}: dropped by the collector's {p}")
                if d["kind"] in ("Counter", "Histogram"):
                    delta = [p for p in names if p.split("/")[0] == "cumulativetodelta" and name in processors.get(p, {}).get("include", {}).get("metrics", [])]
                    if not delta:
                        errors.append(f"{where}: a cumulative {d['kind'].lower()} reaches awsemf without a cumulativetodelta processor (first points dropped, lifetime maximum)")
    if checked == 0:
        errors.append("alarms.tf: no alarm on var.app_metric_namespace found")
    return checked


# --- Collector reachability ---------------------------------------------------------------


def receiver_ports(collector: dict[str, Any]) -> dict[str, int]:
    protocols = collector.get("receivers", {}).get("otlp", {}).get("protocols", {})
    return {p: int(str(v.get("endpoint", "")).rsplit(":", 1)[-1]) for p, v in protocols.items() if v}


def endpoint_reaches(where: str, endpoint: str, protocol: str, ports: dict[str, int], errors: list[str]) -> None:
    url = urlparse(endpoint)
    want = ports.get("http" if protocol.startswith("http") else "grpc")
    if url.hostname not in LOOPBACK:
        errors.append(f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not the sidecar collector on the loopback interface")
    elif url.port != want:
        errors.append(f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not the collector's {protocol} port {want}")


def check_ecs(root: str, ports, errors: list[str]) -> int:
    checked = 0
    ecs = os.path.join(root, "deploy/ecs")
    for file in sorted(os.listdir(ecs)):
        if not file.endswith("-task-definition.json"):
            continue
        with open(os.path.join(ecs, file), encoding="utf-8") as f:
            td = json.load(f)
        containers = {c["name"]: c for c in td.get("containerDefinitions", [])}
        for c in containers.values():
            env = {e["name"]: e["value"] for e in c.get("environment", [])}
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if c["name"] == COLLECTOR or endpoint is None:
                continue
            checked += 1
            where = f"deploy/ecs/{file}: {c['name']}"
            endpoint_reaches(where, endpoint, env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ports, errors)
            sidecar = containers.get(COLLECTOR)
            if sidecar is None:
                errors.append(f"{where}: exports OTLP but the task has no {COLLECTOR} container")
                continue
            config = [a.split("=env:", 1)[1] for a in sidecar.get("command", []) if a.startswith("--config=env:")]
            if not config or config[0] not in {s["name"] for s in sidecar.get("secrets", [])}:
                errors.append(f"{where}: the {COLLECTOR} container must read its configuration from a `secrets` entry (--config=env:NAME)")
            if {"containerName": COLLECTOR, "condition": "START"} not in c.get("dependsOn", []):
                errors.append(f"{where}: must dependsOn {COLLECTOR} (START), so the collector outlives it at stop")
    return checked


def check_k8s(files: list[str], config_text: str, ports, errors: list[str]) -> int:
    checked = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
        for dep in (d for d in docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")):
            pod = dep["spec"]["template"]["spec"]
            sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always" and c["name"] == COLLECTOR]
            for c in pod.get("containers", []):
                env: dict[str, str] = {}
                for src in c.get("envFrom", []):
                    env.update(configmaps.get(src.get("configMapRef", {}).get("name"), {}))
                env.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
                endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                if endpoint is None:
                    continue
                checked += 1
                where = f"{os.path.basename(path)}: {dep['kind']}/{dep['metadata']['name']}/{c['name']}"
                endpoint_reaches(where, endpoint, env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ports, errors)
                if not sidecars:
                    errors.append(f"{where}: exports OTLP but the pod has no {COLLECTOR} sidecar (an init container with restartPolicy: Always)")
                    continue
                mounts = {m["name"] for m in sidecars[0].get("volumeMounts", [])}
                volumes = [v for v in pod.get("volumes", []) if v["name"] in mounts and "configMap" in v]
                texts = [configmaps.get(v["configMap"]["name"], {}).get("config.yaml") for v in volumes]
                if config_text not in texts:
                    errors.append(f"{where}: the {COLLECTOR} sidecar does not mount deploy/otel-collector/config.yaml as config.yaml")
    return checked


# --- Grafana ------------------------------------------------------------------------------


def check_grafana(root: str, metrics, errors: list[str]) -> int:
    path = os.path.join(root, "deploy/grafana/stripe-worker.json")
    with open(path, encoding="utf-8") as f:
        board = json.load(f)
    series = {s: name for name, d in metrics.items() for s in prometheus_series(name, d)}
    shared = {"stripe_worker.backend.duration", "stripe_worker.retries"}
    side = lambda name: "any" if name in shared else ("ingress" if ".ingress." in name else "worker")
    variables = {}
    for v in board.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        m = re.match(r"label_values\((\w+),\s*job\)", q)
        if m:
            if m.group(1) not in series:
                errors.append(f"{path}: variable {v['name']} lists the jobs of {m.group(1)}, which no code emits")
            else:
                variables[v["name"]] = side(series[m.group(1)])
    checked = 0
    for panel in board.get("panels", []):
        for t in panel.get("targets", []):
            expr = t.get("expr", "")
            checked += 1
            where = f"{path}: panel {panel.get('title')!r}"
            used = set(re.findall(r"\b(stripe_worker_[a-z_]+)\b", expr))
            for s in used - set(series):
                errors.append(f"{where}: {s} is not a series the code emits")
            sides = {side(series[s]) for s in used if s in series} - {"any"}
            for var in re.findall(r'job=~"\$(\w+)"', expr):
                source = variables.get(var)
                if source is None:
                    errors.append(f"{where}: job variable ${var} is not a label_values(<metric>, job) variable")
                elif source != "any" and sides and sides != {source}:
                    errors.append(f"{where}: reads {sorted(sides)} metrics with ${var}, which lists the {source}'s services only (its panels stay empty when the ingress runs as its own service)")
    return checked


def main() -> int:
    root, rendered = sys.argv[1], sys.argv[2:]
    errors: list[str] = []
    config_path = os.path.join(root, "deploy/otel-collector/config.yaml")
    with open(config_path, encoding="utf-8") as f:
        config_text = f.read()
    collector = yaml.safe_load(config_text)
    with open(os.path.join(root, "k8s/base/otel-collector-config.yaml"), encoding="utf-8") as f:
        if f.read() != config_text:
            errors.append("k8s/base/otel-collector-config.yaml differs from deploy/otel-collector/config.yaml: copy it over")
    metrics = code_metrics(root)
    values = ingress_label_values(root)
    ports = receiver_ports(collector)
    alarms = check_alarms(root, metrics, values, collector, errors)
    ecs = check_ecs(root, ports, errors)
    k8s = check_k8s(rendered, config_text, ports, errors)
    queries = check_grafana(root, metrics, errors)
    for e in errors:
        print(f"  FAIL {e}")
    print(
        f"  {alarms} alarm metrics, {ecs} ECS containers, {k8s} Kubernetes containers exporting OTLP, "
        f"{queries} Grafana queries checked against {len(metrics)} metrics; {len(errors)} problems"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
