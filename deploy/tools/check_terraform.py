#!/usr/bin/env python3
"""Parse every Terraform file with python-hcl2 (no terraform binary here) and check what a
parse can check: every variable and output is described, non-boolean variables are
validated, no account id is written into the code, and deploy/routing-patterns.json holds
one EventBridge pattern per domain.

Run with python-hcl2 importable as `hcl2` (check.sh puts it on PYTHONPATH: checkov's
bc-python-hcl2 fork installs a module of the same name into the venv).

Every variable must also be explained in the deploy README (named in backticks).

Usage: check_terraform.py DEPLOY_README ROUTING_PATTERNS_JSON TF_FILE...
"""

from __future__ import annotations

import json
import re
import sys

import hcl2

DOMAINS = {"subscription", "payment", "customer"}


def strip_quotes(name: str) -> str:
    return name.strip('"')


def check_pattern(where: str, value, errors: list[str]) -> None:
    """An EventBridge pattern: objects whose leaves are non-empty arrays, `$or` arrays of patterns."""
    if not isinstance(value, dict) or not value:
        errors.append(f"{where}: must be a non-empty JSON object")
        return
    for key, v in value.items():
        if key == "$or":
            if not isinstance(v, list) or len(v) < 2:
                errors.append(f"{where}.$or: must list at least two patterns")
                continue
            for i, branch in enumerate(v):
                check_pattern(f"{where}.$or[{i}]", branch, errors)
        elif isinstance(v, dict):
            check_pattern(f"{where}.{key}", v, errors)
        elif not isinstance(v, list) or not v:
            errors.append(f"{where}.{key}: must be a non-empty array of values or matchers")


def main() -> int:
    readme_path, patterns_path, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    errors: list[str] = []
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    counts = {"files": 0, "variables": 0, "outputs": 0, "resources": 0}

    with open(patterns_path, encoding="utf-8") as f:
        patterns = json.load(f)
    if set(patterns) != DOMAINS:
        errors.append(f"{patterns_path}: keys must be exactly {sorted(DOMAINS)}, got {sorted(patterns)}")
    for domain, pattern in patterns.items():
        check_pattern(f"{patterns_path}:{domain}", pattern, errors)

    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            doc = hcl2.loads(text)
        except Exception as e:  # the parser raises lark errors of several types
            errors.append(f"{path}: does not parse: {e}")
            continue
        counts["files"] += 1
        for line_no, line in enumerate(text.splitlines(), 1):
            if re.search(r"(?<![0-9{])[0-9]{12}(?![0-9}])", line) and not line.lstrip().startswith("#"):
                errors.append(f"{path}:{line_no}: looks like a hard-coded account id")
        for block in doc.get("variable", []):
            for name, body in block.items():
                counts["variables"] += 1
                name = strip_quotes(name)
                if not body.get("description"):
                    errors.append(f"{path}: variable {name} has no description")
                if f"`{name}`" not in readme:
                    errors.append(f"{path}: variable {name} is not explained in {readme_path}")
                type_ = str(body.get("type", ""))
                if "bool" not in type_ and "map" not in type_ and not body.get("validation"):
                    errors.append(f"{path}: variable {name} has no validation")
        for block in doc.get("output", []):
            for name, body in block.items():
                counts["outputs"] += 1
                if not body.get("description"):
                    errors.append(f"{path}: output {strip_quotes(name)} has no description")
        for block in doc.get("resource", []):
            counts["resources"] += sum(len(v) for v in block.values())

    for e in errors:
        print(f"  FAIL {e}")
    print(
        f"  python-hcl2: {counts['files']} .tf files parsed, {counts['resources']} resources, "
        f"{counts['variables']} variables, {counts['outputs']} outputs; routing patterns for "
        f"{len(patterns)} domains; {len(errors)} problems"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
