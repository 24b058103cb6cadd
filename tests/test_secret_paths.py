"""Secrets asserted by path: each secret value sits only under a path Pulumi holds secret.

"Some field of this resource is secret" lets a password sit in plain beside
a secret field. Here every string in every resource's inputs, every read,
and every export is walked; where a secret value occurs, that exact path
(or one above it) must be among the paths the engine received as secret
(`Recorded.secret_paths`). And each secret must reach where it is needed:
the providers, the kubeconfig, the pull secret, keepalived's Secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import cached, stack_raw, with_overrides

from halb.mockrun import Recorded, Run, run_program

TOKEN, AUTH, REGISTRY = "tok-3f9a-secret", "au7hp4ss", "reg-pw-secret"
SECRETS = (TOKEN, AUTH, REGISTRY)


@cached
def run() -> Run:
    raw = with_overrides(
        stack_raw("prod"),
        secret=True,
        vrrp={"version": 2, "advertInterval": 1},
        vrrpAuthPass=AUTH,
        registryPassword=REGISTRY,
        **{"rancher2:tokenKey": TOKEN},
    )
    return run_program(raw, "prod")


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf, paths as `halb.mockrun` writes them (`a.b[0].c`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def under(path: str, secret_paths: list[str]) -> bool:
    """`path` is a secret path or lies inside one (a whole secret object or list)."""
    return any(path == p or path.startswith((p + ".", p + "[")) for p in secret_paths)


def where(r: Recorded, secret: str) -> list[str]:
    return [p for p, v in leaves(r.inputs) if isinstance(v, str) and secret in v]


def test_under_means_the_path_or_below_it() -> None:
    assert under("stringData.lb-1.conf", ["stringData"])
    assert under("registries[0].password", ["registries"])
    assert under("tokenKey", ["tokenKey"])
    assert not under("stringDataX", ["stringData"]) and not under("kubeconfig", ["kube"])
    assert not under("metadata.name", [])


def test_every_secret_value_sits_only_under_secret_paths() -> None:
    found: dict[str, set[str]] = {s: set() for s in SECRETS}
    for r in run().resources + run().reads:
        for secret in SECRETS:
            paths = where(r, secret)
            for path in paths:
                assert under(path, r.secret_paths), f"{secret!r} in plain at {r.type} {r.name} {path}"
            if paths:
                found[secret].add(r.name)
    # ...and each reached where it is used.
    assert found[TOKEN] == {"cluster-rancher", "cluster-k8s"}
    assert found[AUTH] == {"edge-keepalived-config"}
    assert found[REGISTRY] == {
        "images-pull",
        "images-apps-pull",
        "images-haproxy-build",
        "images-keepalived-build",
    }


def test_secrets_reach_their_consumers_at_the_right_field() -> None:
    r = run()
    assert r.named("cluster-rancher").inputs["tokenKey"] == TOKEN
    cfg = yaml.safe_load(r.named("cluster-k8s").inputs["kubeconfig"])
    assert cfg["users"][0]["user"]["token"] == TOKEN
    confs = r.named("edge-keepalived-config").inputs["stringData"]
    assert set(confs) == {"lb-1.conf", "lb-2.conf", "lb-1.nft", "lb-2.nft"}
    assert all(f"        auth_pass {AUTH}\n" in c for k, c in confs.items() if k.endswith(".conf"))
    (entry,) = r.named("images-pull").inputs["registries"]
    assert entry == {"address": "registry.example.com", "username": "ci-prod", "password": REGISTRY}
    for name in ("images-haproxy-build", "images-keepalived-build"):
        assert r.named(name).inputs["registry"] == {
            "server": "registry.example.com",
            "username": "ci-prod",
            "password": REGISTRY,
        }


def test_no_secret_in_a_plain_export_and_the_registration_commands_secret() -> None:
    r = run()
    for key, value in r.exports.items():
        for path, leaf in leaves(value, key):
            if isinstance(leaf, str) and any(s in leaf for s in SECRETS):
                pytest.fail(f"secret in export {path}")
    assert r.secret_exports == {"registrationCommands"}


def test_nothing_secret_in_the_pod_templates() -> None:
    """Pods get keepalived's password through the Secret volume, never in their spec."""
    for r in run().resources:
        if r.type in ("kubernetes:apps/v1:DaemonSet", "kubernetes:apps/v1:Deployment"):
            assert r.secret_paths == [], r.name
            assert not any(s in str(r.inputs) for s in SECRETS), r.name
