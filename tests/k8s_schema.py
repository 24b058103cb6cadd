"""Strict schema validation of rendered manifests, custom resources included.

Built-in kinds go to kubernetes-validate. Custom resources are checked
against their CRD's openAPIV3Schema (tests/crds), made strict the way the
API server's strict field validation is: a field the schema does not
declare is an error, not silently pruned. Their metadata is checked as
ObjectMeta by kubernetes-validate.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.30"
CRDS = Path(__file__).resolve().parent / "crds"


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
            # Go allows inline flags after '^'; Python wants them first.
            out["pattern"] = "(?i)^" + out["pattern"][len("^(?i)") :]
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every CRD in tests/crds."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            # metadata is ObjectMeta, checked apart; the CRD only says "object".
            schema["properties"]["metadata"] = {"type": "object"}
            out[(f"{group}/{version['name']}", kind)] = schema
    return out


# cert-manager's CRDs as validators compiled from them (`make deps` installs the
# npm package @kubernetes-models/cert-manager under .venv/node). These check
# types, enums and patterns; unknown fields pass them, so the tests pin the
# Certificate's spec whole.
CERT_MANAGER = (
    Path(sys.executable).parent.parent / "node" / "node_modules" / "@kubernetes-models" / "cert-manager"
)
CERT_MANAGER_GROUPS = ("cert-manager.io/",)


def cert_manager_problems(docs: list[dict[str, Any]]) -> dict[str, str]:
    """name -> why the validator refused it (empty: every document is valid)."""
    script = Path(__file__).resolve().parent / "cert_manager_validate.mjs"
    done = subprocess.run(
        ["node", str(script), str(CERT_MANAGER)],
        input=json.dumps(docs), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0 or len(done.stdout.splitlines()) != len(docs):
        raise RuntimeError(
            f"the cert-manager validator did not run (`make deps` installs it): {done.stderr[-500:]}"
        )
    bad = {}
    for line in done.stdout.splitlines():
        verdict, name, *why = line.split(" ", 2)
        if verdict != "ok":
            bad[name] = " ".join(why)
    return bad


def validate(doc: dict[str, Any]) -> None:
    """Raise if `doc` is not a valid object of its kind (strict)."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key[0].startswith(CERT_MANAGER_GROUPS):
        bad = cert_manager_problems([doc])
        if bad:
            raise ValueError(f"{doc['metadata']['name']}: {next(iter(bad.values()))}")
        meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        kubernetes_validate.validate(meta_only, K8S_VERSION, strict=True)
        return
    schema = crd_schemas().get(key)
    if schema is None:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(doc)
    meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    kubernetes_validate.validate(meta_only, K8S_VERSION, strict=True)
