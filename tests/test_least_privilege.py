"""Least privilege, asserted on the rendered manifests every stack applies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import STACKS, cached, rendered, settings_of

from halb.render import manifests

EDGE_CAPS = {
    "keepalived": {"NET_ADMIN", "NET_RAW", "SETGID", "SYS_NICE"},
    "haproxy": {"NET_BIND_SERVICE"},
    "haproxy-watch": set(),
    "vrrp-exporter": set(),
    "haproxy-reload": set(),
}


@cached
def docs(stack: str) -> list[dict[str, Any]]:
    return manifests(rendered(stack))


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def workloads(stack: str) -> list[dict[str, Any]]:
    return [d for d in docs(stack) if d["kind"] in ("Deployment", "DaemonSet")]


def pod(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_privileged_anywhere(stack: str) -> None:
    assert [v for k, v in walk(docs(stack)) if k == "privileged" and v is not False] == []


@pytest.mark.parametrize("stack", STACKS)
def test_no_host_pid_or_ipc(stack: str) -> None:
    keys = {k for k, _ in walk(docs(stack))}
    assert not {"hostPID", "hostIPC"} & keys


@pytest.mark.parametrize("stack", STACKS)
def test_capabilities_exactly_as_documented(stack: str) -> None:
    apps = {svc.name for svc in settings_of(stack).services}
    seen = set()
    for d in workloads(stack):
        for c in pod(d)["containers"]:
            caps = c["securityContext"]["capabilities"]
            assert caps["drop"] == ["ALL"], c["name"]
            expected = set() if c["name"] in apps else EDGE_CAPS[c["name"]]
            assert set(caps.get("add", [])) == expected, c["name"]
            seen.add(c["name"])
    assert seen == set(EDGE_CAPS) | apps


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_read_only_bounded_no_escalation(stack: str) -> None:
    for d in workloads(stack):
        for c in pod(d)["containers"]:
            sc = c["securityContext"]
            # Every daemon here runs with a read-only root; writes go to emptyDirs.
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"], c["name"]
            assert res["limits"]["memory"], c["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_edge_namespace_uses_host_networking(stack: str) -> None:
    s = settings_of(stack)
    namespaces = {
        d["metadata"]["name"]: d["metadata"]["labels"] for d in docs(stack) if d["kind"] == "Namespace"
    }
    assert namespaces[s.apps_namespace]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces[s.edge_namespace]["pod-security.kubernetes.io/enforce"] == "privileged"
    host_net = {d["metadata"]["namespace"] for d in workloads(stack) if pod(d).get("hostNetwork")}
    assert host_net == {s.edge_namespace}
    for d in workloads(stack):
        if d["metadata"]["namespace"] == s.apps_namespace:
            spec = pod(d)
            assert not spec.get("hostNetwork")
            assert spec["securityContext"] == {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            for c in spec["containers"]:
                assert c["securityContext"]["runAsNonRoot"] is True
                assert c["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("stack", STACKS)
def test_root_only_where_capabilities_need_it(stack: str) -> None:
    # Kubernetes gives no ambient capabilities: a capability works only for uid 0.
    for d in workloads(stack):
        for c in pod(d)["containers"]:
            sc = c["securityContext"]
            if c["securityContext"]["capabilities"].get("add"):
                assert sc["runAsUser"] == 0, c["name"]
            else:
                assert sc.get("runAsUser", 1) != 0 and sc["runAsNonRoot"] is True, c["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_service_account_tokens_not_mounted(stack: str) -> None:
    for d in workloads(stack):
        assert pod(d)["automountServiceAccountToken"] is False, d["metadata"]["name"]
