#!/usr/bin/env python3
"""Render a Kustomize directory without the kustomize binary (none is installed here).

Only the subset of Kustomize that k8s/ uses is implemented, and anything outside it is an
error rather than silently ignored, so an overlay can never use a feature this renderer
would get wrong:

* kustomization keys: apiVersion, kind, resources, components, namespace, images, patches
  (patches as `- path: FILE`, strategic merge, targeted by the patch's kind and name);
* resources: YAML files (several documents each) and directories with a kustomization;
* components (kind: Component) with the same keys;
* strategic merge: maps merge recursively, `null` deletes a key, lists of built-in kinds
  merge by the Kubernetes merge key (containers by name, env by name, volumeMounts by
  mountPath, ...), an item `{$patch: delete, <key>: ...}` removes an item, and every other
  list (including all lists of custom resources, as in Kustomize) is replaced;
* images: name, newName, newTag, digest, applied to pod templates' containers;
* namespace: set on every namespaced resource.

Order as in Kustomize: resources, then components, then this level's patches, images and
namespace.

Usage: kustomize_lite.py DIR [-o OUT.yaml]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Any

import yaml

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "patches"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ClusterTriggerAuthentication",
}
# API groups whose schemas carry strategic-merge keys; lists of other kinds are replaced.
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}
# Field name -> merge key, as in the Kubernetes OpenAPI `x-kubernetes-patch-merge-key`.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "hostAliases": "ip",
}


class KustomizeError(Exception):
    """The directory uses something this renderer does not support, or is inconsistent."""


def load_yaml_documents(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            raise KustomizeError(f"{path}: every document must be a Kubernetes object with kind and metadata")
    return docs


def res_id(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj.get("kind", ""), obj["metadata"].get("name", ""), obj["metadata"].get("namespace", ""))


def api_group(obj: dict[str, Any]) -> str:
    api = obj.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def merge_list(base: list[Any], patch: list[Any], field: str, builtin: bool) -> list[Any]:
    key = MERGE_KEYS.get(field)
    if field == "ports" and builtin:
        # Container ports merge by containerPort, Service ports by port.
        sample = next((p for p in base + patch if isinstance(p, dict)), {})
        key = "containerPort" if "containerPort" in sample else "port"
    if not builtin or key is None:
        return [i for i in copy.deepcopy(patch) if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    out = copy.deepcopy(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise KustomizeError(f"list `{field}`: every patch item needs its merge key `{key}`")
        idx = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is None:
                raise KustomizeError(f"list `{field}`: no item with {key}={item[key]!r} to delete")
            del out[idx]
        elif idx is None:
            out.append(copy.deepcopy(item))
        else:
            out[idx] = merge(out[idx], item, builtin)
    return out


def merge(base: Any, patch: Any, builtin: bool, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k == "$patch":
                raise KustomizeError("`$patch` directives are supported on list items only")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, builtin, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        return merge_list(base, patch, field, builtin)
    return copy.deepcopy(patch)


def apply_patch(resources: list[dict[str, Any]], patch: dict[str, Any], where: str) -> None:
    kind, name = patch.get("kind"), patch.get("metadata", {}).get("name")
    matches = [i for i, r in enumerate(resources) if r.get("kind") == kind and r["metadata"].get("name") == name]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: patch for {kind}/{name} matches {len(matches)} resources (need exactly 1)")
    i = matches[0]
    resources[i] = merge(resources[i], patch, api_group(resources[i]) in BUILTIN_GROUPS)


def split_image(image: str) -> tuple[str, str]:
    """`name[:tag][@digest]` -> (name, rest including its separator)."""
    at = image.find("@")
    head, digest = (image[:at], image[at:]) if at >= 0 else (image, "")
    slash = head.rfind("/")
    colon = head.rfind(":")
    if colon > slash:
        return head[:colon], head[colon:] + digest
    return head, digest


def apply_images(resources: list[dict[str, Any]], images: list[dict[str, Any]], where: str) -> None:
    for spec in images:
        unknown = set(spec) - IMAGE_KEYS
        if unknown or "name" not in spec:
            raise KustomizeError(f"{where}: images entries take name, newName, newTag, digest (got {sorted(spec)})")
        for r in resources:
            pod = r.get("spec", {}).get("template", {}).get("spec", {})
            for field in ("containers", "initContainers"):
                for c in pod.get(field, []) or []:
                    name, rest = split_image(c.get("image", ""))
                    if name != spec["name"]:
                        continue
                    new_name = spec.get("newName", name)
                    if "digest" in spec:
                        rest = "@" + spec["digest"]
                    elif "newTag" in spec:
                        rest = ":" + str(spec["newTag"])
                    c["image"] = new_name + rest


def render(directory: str, expect_kind: str = "Kustomization") -> list[dict[str, Any]]:
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unknown)} (this renderer supports {sorted(KUSTOMIZATION_KEYS)})")
    kind = k.get("kind", "Kustomization")
    if kind != expect_kind:
        raise KustomizeError(f"{path}: kind {kind}, expected {expect_kind}")

    resources: list[dict[str, Any]] = []
    for entry in k.get("resources", []) or []:
        target = os.path.normpath(os.path.join(directory, entry))
        resources.extend(render(target) if os.path.isdir(target) else load_yaml_documents(target))
    seen: set[tuple[str, str, str]] = set()
    for r in resources:
        if res_id(r) in seen:
            raise KustomizeError(f"{path}: {res_id(r)} defined twice")
        seen.add(res_id(r))

    for entry in k.get("components", []) or []:
        component_dir = os.path.normpath(os.path.join(directory, entry))
        resources = apply_level(component_dir, resources, expect_kind="Component")

    return transform(k, directory, path, resources)


def apply_level(directory: str, resources: list[dict[str, Any]], expect_kind: str) -> list[dict[str, Any]]:
    """A component: its resources join the accumulated ones, then its transformers run on all."""
    own = render_resources_only(directory, expect_kind)
    ids = {res_id(r) for r in resources}
    for r in own:
        if res_id(r) in ids:
            raise KustomizeError(f"{directory}: {res_id(r)} already defined")
    path = os.path.join(directory, "kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    return transform(k, directory, path, resources + own)


def render_resources_only(directory: str, expect_kind: str) -> list[dict[str, Any]]:
    path = os.path.join(directory, "kustomization.yaml")
    with open(path, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unknown)}")
    if k.get("kind") != expect_kind:
        raise KustomizeError(f"{path}: kind {k.get('kind')}, expected {expect_kind}")
    if k.get("components"):
        raise KustomizeError(f"{path}: nested components are not supported")
    out: list[dict[str, Any]] = []
    for entry in k.get("resources", []) or []:
        target = os.path.normpath(os.path.join(directory, entry))
        out.extend(render(target) if os.path.isdir(target) else load_yaml_documents(target))
    return out


def transform(k: dict[str, Any], directory: str, path: str, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for p in k.get("patches", []) or []:
        if not isinstance(p, dict) or set(p) != {"path"}:
            raise KustomizeError(f"{path}: patches entries must be `- path: FILE` (strategic merge, targeted by kind and name)")
        patch_path = os.path.join(directory, p["path"])
        for patch in load_yaml_documents(patch_path):
            apply_patch(resources, patch, patch_path)
    apply_images(resources, k.get("images", []) or [], path)
    if "namespace" in k:
        for r in resources:
            if r.get("kind") not in CLUSTER_SCOPED_KINDS:
                r["metadata"]["namespace"] = k["namespace"]
    return resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args()
    try:
        docs = render(args.directory)
    except (KustomizeError, OSError, yaml.YAMLError) as e:
        print(f"kustomize_lite: {e}", file=sys.stderr)
        return 1
    text = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
