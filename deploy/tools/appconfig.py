"""What the stripe-worker binary accepts as configuration variables, read from the
repository so the deployment checks follow the code instead of a copied list."""

from __future__ import annotations

import re


def allowed_config_variables(readme: str, env_rs: str) -> set[str]:
    """STRIPE_WORKER_* names the worker accepts: the keys of the README's configuration
    table, and the command-line variables the configuration layer passes over
    (`CLI_VARIABLES` in src/config/env.rs). Any other STRIPE_WORKER_* variable makes the
    binary refuse to start."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    keys = set(re.findall(r"^\|\s*`[a-z_.]+`\s*\|\s*`([a-z_]+)`\s*\|", text, flags=re.M))
    if len(keys) < 5:
        raise SystemExit(f"{readme}: could not read the configuration table (found {sorted(keys)})")
    with open(env_rs, encoding="utf-8") as f:
        source = f.read()
    block = re.search(r"CLI_VARIABLES:\s*&\[&str\]\s*=\s*&\[(.*?)\];", source, flags=re.S)
    if block is None:
        raise SystemExit(f"{env_rs}: could not find CLI_VARIABLES")
    cli = set(re.findall(r'"([A-Z_]+)"', block.group(1)))
    return {f"STRIPE_WORKER_{k.upper()}" for k in keys} | {f"STRIPE_WORKER_{k}" for k in cli}
