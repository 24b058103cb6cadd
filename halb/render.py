"""Offline render: what a stack would apply, as files, with no Pulumi CLI.

Runs the real program under mocks and writes DIR/manifests.yaml (every
Kubernetes object, one document each), DIR/keepalived/<node>.conf,
DIR/haproxy/haproxy.cfg and DIR/resources.json. Files are built in memory
first, so a failure writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from components.edge_pod import COOKIE_SECRET, HANDOFF_SECRET, TICKET_SECRET
from components.settings import RawConfig, parse_settings
from halb.mockrun import Recorded, Run, run_program
from halb.stackfile import REDACTED

K8S_PREFIX = "kubernetes:"
RANCHER_NAMESPACE = "rancher2:index/namespace:Namespace"
PATCH_SUFFIX = "Patch"
PROJECT_ANNOTATION = "field.cattle.io/projectId"


def _manifest(r: Recorded) -> dict[str, Any] | None:
    """The Kubernetes object a resource stands for (None: not a k8s object)."""
    if r.type == RANCHER_NAMESPACE:
        # Rancher creates a plain Namespace, tied to the project by annotation.
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": r.inputs["name"],
                "labels": r.inputs.get("labels", {}),
                "annotations": {PROJECT_ANNOTATION: r.inputs.get("projectId", "")},
            },
        }
    if not r.type.startswith(K8S_PREFIX) or r.type.startswith("pulumi:providers"):
        return None
    doc = dict(r.inputs)
    minted = r.outputs.get("metadata", {}).get("name")
    if isinstance(doc.get("metadata"), dict) and not doc["metadata"].get("name") and minted:
        doc["metadata"] = {**doc["metadata"], "name": minted}  # auto-named by the provider
    kind = str(doc.get("kind", ""))
    if kind == "Secret" and doc.get("metadata", {}).get("name") in MINTED_SECRETS:
        # Minted by pulumi_random at `pulumi up`: the mocks' stand-in is no one's secret.
        doc["stringData"] = {k: REDACTED for k in doc.get("stringData", {})}
    if kind.endswith(PATCH_SUFFIX):
        # A server-side-apply patch: the partial object it applies.
        doc["kind"] = kind[: -len(PATCH_SUFFIX)]
    order = ["apiVersion", "kind", "metadata"]
    return {k: doc[k] for k in order if k in doc} | {k: doc[k] for k in sorted(doc) if k not in order}


# Minted by pulumi_random at `pulumi up`; the mocks' stand-ins are written as REDACTED.
MINTED_SECRETS = frozenset({TICKET_SECRET, COOKIE_SECRET, HANDOFF_SECRET})

KIND_ORDER = ["Namespace", "Node", "ConfigMap", "Secret", "Service", "Deployment", "DaemonSet"]


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _doc_key(doc: dict[str, Any]) -> tuple[int, str, str]:
    kind = doc.get("kind", "")
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    meta = doc.get("metadata", {})
    return rank, meta.get("namespace", ""), meta.get("name", "")


def manifests(run: Run) -> list[dict[str, Any]]:
    """Every Kubernetes object, in apply order, keys sorted below the top."""
    docs = [m for r in run.resources if (m := _manifest(r)) is not None]
    return sorted(({k: _sorted_keys(v) for k, v in d.items()} for d in docs), key=_doc_key)


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    raise KeyError(f"no {kind} {name} in the rendered stack")


def resources_table(run: Run) -> list[dict[str, str | None]]:
    names = {r.urn: r.name for r in run.resources}
    rows = [
        {"type": r.type, "name": r.name, "parent": names.get(r.parent or "")}
        for r in run.resources
        if r.type != "pulumi:pulumi:Stack"
    ]
    return sorted(rows, key=lambda row: (row["parent"] or "", row["name"] or ""))


def render_files(raw: RawConfig, stack: str) -> dict[str, str]:
    """Relative path -> content. Raises SettingsError before running anything."""
    settings = parse_settings(raw)
    run = run_program(raw, stack)
    docs = manifests(run)
    files = {
        "manifests.yaml": yaml.safe_dump_all(docs, sort_keys=False, width=100),
        "resources.json": json.dumps(resources_table(run), indent=2) + "\n",
        "haproxy/haproxy.cfg": _find(docs, "ConfigMap", "haproxy-config")["data"]["haproxy.cfg"],
    }
    # keepalived's configs, or with bgp FRR's (frr.conf and the same table).
    daemon = "keepalived" if settings.bgp is None else "frr"
    confs = _find(docs, "Secret", f"{daemon}-config")["stringData"]
    for node in settings.lb_nodes:
        files[f"{daemon}/{node}.conf"] = confs[f"{node}.conf"]
        files[f"{daemon}/{node}.nft"] = confs[f"{node}.nft"]
    return files
