#!/usr/bin/env python3
"""Check the ECS task definitions (deploy/ecs/*-task-definition.json), which no checkov
framework reads: they must be what deploy/README.md promises.

Every container: image from ${IMAGE}, read-only root filesystem, non-root user, no
privileges, ALL capabilities dropped, a healthCheck, awslogs logging, secrets only as
Secrets Manager `valueFrom` references (never a literal secret in `environment`),
stopTimeout above the drain time (STRIPE_WORKER_SHUTDOWN_GRACE_SECS), only documented
STRIPE_WORKER_* variables.

The OpenTelemetry collector sidecar (container `otel-collector`) gets the same hardening,
with its own image placeholder and no health check (its image has no shell nor client to
run one); that every exporting container reaches it is checked in check_observability.py.

Usage: check_ecs.py README.md src/config/env.rs TASK_DEFINITION_JSON...
"""

from __future__ import annotations

import json
import re
import sys

from appconfig import allowed_config_variables

DEFAULT_SHUTDOWN_GRACE_SECS = 20
COLLECTOR = "otel-collector"
SECRET_NAMES = re.compile(r"(SECRET|API_KEY|TOKEN|PASSWORD)", re.I)


def main() -> int:
    readme, env_rs, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    allowed = allowed_config_variables(readme, env_rs)
    errors: list[str] = []
    containers = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            td = json.load(f)
        for key in ("family", "taskRoleArn", "executionRoleArn", "containerDefinitions"):
            if key not in td:
                errors.append(f"{path}: {key} missing")
        if td.get("networkMode") != "awsvpc":
            errors.append(f"{path}: networkMode must be awsvpc (one ENI and security group per task)")
        for c in td.get("containerDefinitions", []):
            containers += 1
            where = f"{path}: container {c.get('name')}"
            env = {e["name"]: e["value"] for e in c.get("environment", [])}
            grace = int(env.get("STRIPE_WORKER_SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE_SECS))
            collector = c.get("name") == COLLECTOR
            image = "${OTEL_COLLECTOR_IMAGE}" if collector else "${IMAGE}"
            if c.get("image") != image:
                errors.append(f"{where}: image must be the {image} placeholder (a digest set at deploy time)")
            if c.get("readonlyRootFilesystem") is not True:
                errors.append(f"{where}: readonlyRootFilesystem must be true")
            user = str(c.get("user", "root")).split(":")[0]
            if user in ("", "0", "root"):
                errors.append(f"{where}: user must be a non-root uid")
            if c.get("privileged") is not False:
                errors.append(f"{where}: privileged must be false")
            if "ALL" not in c.get("linuxParameters", {}).get("capabilities", {}).get("drop", []):
                errors.append(f"{where}: linuxParameters.capabilities.drop must contain ALL")
            hc = c.get("healthCheck", {}).get("command", [])
            if collector:
                if c.get("essential") is not False:
                    errors.append(f"{where}: the collector must not be essential (telemetry must not stop the service)")
            elif not hc or hc[0] != "CMD" or not any("/healthz" in part for part in hc):
                errors.append(f"{where}: healthCheck must be an exec-form CMD against /healthz (the image has no shell)")
            if c.get("stopTimeout", 30) <= grace:
                errors.append(f"{where}: stopTimeout {c.get('stopTimeout', 30)} must exceed the drain time {grace}s")
            if c.get("stopTimeout", 30) > 120:
                errors.append(f"{where}: stopTimeout cannot exceed 120 (ECS maximum)")
            log = c.get("logConfiguration", {})
            if log.get("logDriver") != "awslogs":
                errors.append(f"{where}: logConfiguration.logDriver must be awslogs")
            for name in env:
                if name.startswith("STRIPE_WORKER_") and name not in allowed:
                    errors.append(f"{where}: {name} is not a documented configuration variable")
                if SECRET_NAMES.search(name) and not name.startswith("STRIPE_WORKER_"):
                    errors.append(f"{where}: {name} looks like a secret: use `secrets` with valueFrom")
            secrets = c.get("secrets", [])
            if not secrets:
                errors.append(f"{where}: no secrets (webhook secrets or API keys come from Secrets Manager)")
            for s in secrets:
                if set(s) != {"name", "valueFrom"}:
                    errors.append(f"{where}: secret {s.get('name')} must have exactly name and valueFrom")
    for e in errors:
        print(f"  FAIL {e}")
    print(f"  ECS: {len(files)} task definitions, {containers} containers checked; {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
