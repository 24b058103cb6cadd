"""The whole program under recording mocks: real arguments of real resources."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from conftest import STACKS, rendered, settings_of, stack_raw, with_overrides

from components.settings import RawConfig
from halb.mockrun import FAKE_DIGEST, Recorded, Run, run_program

DS = "kubernetes:apps/v1:DaemonSet"
DEPLOY = "kubernetes:apps/v1:Deployment"
K8S_TYPES = ("kubernetes:core/v1:", "kubernetes:apps/v1:", "kubernetes:policy/v1:")


def daemonset(run: Run, name: str) -> Recorded:
    return next(r for r in run.of_type(DS) if r.inputs["metadata"]["name"] == name)


def pod_spec(r: Recorded) -> dict[str, Any]:
    spec: dict[str, Any] = r.inputs["spec"]["template"]["spec"]
    return spec


def role_terms(spec: dict[str, Any]) -> list[Any]:
    req = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms: list[Any] = req["nodeSelectorTerms"]
    return terms


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in items}


def containers(run: Run) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for r in run.resources:
        if r.type in (DS, DEPLOY):
            out += [(r.name, c) for c in pod_spec(r)["containers"]]
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_edge_daemonsets_only_on_lb_hosts_in_host_network(stack: str) -> None:
    run = rendered(stack)
    for name in ("haproxy", "keepalived"):
        spec = pod_spec(daemonset(run, name))
        assert role_terms(spec) == [
            {"matchExpressions": [{"key": "role", "operator": "In", "values": ["load-balancer"]}]}
        ]
        assert spec["hostNetwork"] is True
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
        strategy = daemonset(run, name).inputs["spec"]["updateStrategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 1


@pytest.mark.parametrize("stack", STACKS)
def test_keepalived_capabilities_exactly_vrrp_needs(stack: str) -> None:
    spec = pod_spec(daemonset(rendered(stack), "keepalived"))
    container = by_name(spec["containers"])["keepalived"]
    sc = container["securityContext"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_BROADCAST", "NET_RAW"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert 5 <= spec["terminationGracePeriodSeconds"] <= 30
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["KEEPALIVED_VIP"]["value"] == str(settings_of(stack).vip.address)


@pytest.mark.parametrize("stack", STACKS)
def test_haproxy_watch_sidecar_unprivileged_sharing_the_track_file(stack: str) -> None:
    spec = pod_spec(daemonset(rendered(stack), "keepalived"))
    cs = by_name(spec["containers"])
    watch = cs["haproxy-watch"]
    assert watch["image"] == cs["keepalived"]["image"]
    assert watch["command"] == [
        "/usr/local/bin/haproxy-watch",
        "--port",
        str(settings_of(stack).load_balancer.stats_port),
        "--file",
        "/run/halb/haproxy-down",
    ]
    sc = watch["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["name"]: m["mountPath"] for m in watch["volumeMounts"]}
    assert mounts == {"watch": "/run/halb"}
    assert {"name": "watch", "mountPath": "/run/halb"} in cs["keepalived"]["volumeMounts"]


def test_no_sidecar_without_watch() -> None:
    run = run_program(with_overrides(stack_raw("lab"), vrrp={"check": {"watch": False}}), "lab")
    names = [c["name"] for c in pod_spec(daemonset(run, "keepalived"))["containers"]]
    assert names == ["keepalived"]


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_privileged_and_every_container_bounded(stack: str) -> None:
    for name, c in containers(rendered(stack)):
        sc = c.get("securityContext", {})
        assert sc.get("privileged") is not True, name
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], name
        assert "ALL" in sc["capabilities"]["drop"], name
    for r in rendered(stack).of_type(DS) + rendered(stack).of_type(DEPLOY):
        assert "hostPID" not in pod_spec(r), r.name


@pytest.mark.parametrize("stack", STACKS)
def test_haproxy_binds_http_as_least_privilege(stack: str) -> None:
    (c,) = pod_spec(daemonset(rendered(stack), "haproxy"))["containers"]
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["http"]["hostPort"] == settings_of(stack).load_balancer.http_port
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("stack", STACKS)
def test_app_deployments_replicas_affinity_spread(stack: str) -> None:
    s, run = settings_of(stack), rendered(stack)
    deployments = {r.inputs["metadata"]["name"]: r for r in run.of_type(DEPLOY)}
    assert set(deployments) == {svc.name for svc in s.services}
    for svc in s.services:
        d = deployments[svc.name].inputs
        assert d["spec"]["replicas"] == svc.replicas
        assert d["metadata"]["namespace"] == s.apps_namespace
        spec = d["spec"]["template"]["spec"]
        assert role_terms(spec)[0]["matchExpressions"][0]["values"] == ["apps"]
        (pref,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert pref["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert pref["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == svc.name
        (c,) = spec["containers"]
        assert c["image"] == svc.image
        assert c["readinessProbe"]["httpGet"]["path"] == svc.health_path
        assert c["livenessProbe"]["httpGet"]["port"] == "http"
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rancher-ha-lb"


@pytest.mark.parametrize("stack", STACKS)
def test_headless_services_and_pdbs(stack: str) -> None:
    s, run = settings_of(stack), rendered(stack)
    services = {r.inputs["metadata"]["name"]: r.inputs for r in run.of_type("kubernetes:core/v1:Service")}
    pdbs = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in run.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    }
    for svc in s.services:
        assert services[svc.name]["spec"]["clusterIP"] == "None"
        assert services[svc.name]["spec"]["ports"][0]["port"] == svc.port
        assert pdbs[svc.name]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("stack", STACKS)
def test_every_host_labelled_with_its_role(stack: str) -> None:
    s, run = settings_of(stack), rendered(stack)
    labelled = {
        r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"]["role"]
        for r in run.of_type("kubernetes:core/v1:NodePatch")
    }
    assert labelled == {n: h.role.value for n, h in s.hosts.items()}


def test_namespaces_pod_security() -> None:
    run = rendered("prod")
    ns = {r.inputs["name"]: r.inputs["labels"] for r in run.of_type("rancher2:index/namespace:Namespace")}
    assert ns["web"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["web-edge"]["pod-security.kubernetes.io/enforce"] == "privileged"
    project = run.of_type("rancher2:index/project:Project")[0]
    for r in run.of_type("rancher2:index/namespace:Namespace"):
        assert r.inputs["projectId"].endswith(project.name), r.name


def test_workloads_wait_for_namespace_config_and_image() -> None:
    run = rendered("prod")
    edge_ns = run.named("cluster-edge").urn
    keepalived = daemonset(run, "keepalived")
    assert edge_ns in keepalived.dependencies
    assert run.named("keepalived-config").urn in keepalived.dependencies
    assert run.named("keepalived-image-build").urn in keepalived.dependencies
    assert run.named("lb-config").urn in daemonset(run, "haproxy").dependencies
    assert run.named("cluster-apps").urn in run.named("app-shop-deployment").dependencies


def test_k8s_resources_use_the_clusters_provider_and_parents() -> None:
    run = rendered("prod")
    k8s_provider = run.named("cluster-k8s").urn
    for r in run.resources:
        if r.type.startswith(K8S_TYPES):
            assert r.provider is not None and r.provider.startswith(k8s_provider), r.name
            parent = run.by_urn(r.parent or "")
            assert parent.type.startswith("rancher-ha-lb:index:"), r.name
            assert r.name.startswith(parent.name + "-"), r.name


def test_built_image_is_pinned_by_digest() -> None:
    run = rendered("prod")
    (image,) = run.of_type("docker:index/image:Image")
    assert image.inputs["build"]["context"].endswith("images/keepalived")
    assert image.inputs["imageName"] == "registry.example.com/edge/keepalived:2.2.7"
    c = by_name(pod_spec(daemonset(run, "keepalived"))["containers"])["keepalived"]
    assert c["image"] == f"registry.example.com/edge/keepalived@{FAKE_DIGEST}"


def test_existing_image_is_used_as_is_without_build() -> None:
    run = rendered("lab")
    assert run.of_type("docker:index/image:Image") == []
    c = by_name(pod_spec(daemonset(run, "keepalived"))["containers"])["keepalived"]
    assert c["image"] == settings_of("lab").keepalived.image


def test_config_change_rolls_the_pods() -> None:
    base = rendered("lab")
    changed = run_program(with_overrides(stack_raw("lab"), vrrp={"advertInterval": 0.1}), "lab")

    def sums(run: Run) -> dict[str, str]:
        return {
            n: daemonset(run, n).inputs["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for n in ("haproxy", "keepalived")
        }

    assert sums(base)["keepalived"] != sums(changed)["keepalived"]
    assert sums(base)["haproxy"] == sums(changed)["haproxy"]


def test_secrets_stay_secret_end_to_end() -> None:
    raw = with_overrides(
        stack_raw("prod"),
        secret=True,
        vrrp={"version": 2, "advertInterval": 1},
        vrrpAuthPass="pw-12345",
        registryPassword="registry-pw",
        **{"rancher2:tokenKey": "token-abc"},
    )
    run = run_program(raw, "prod")
    assert "tokenKey" in run.named("cluster-rancher").secret_paths
    secret = run.named("keepalived-config")
    assert "stringData" in secret.secret_paths
    assert "auth_pass pw-12345" in secret.inputs["stringData"]["lb-1.conf"]
    (registry,) = run.of_type("rancher2:index/registry:Registry")
    assert any(p.startswith("registries") for p in registry.secret_paths)
    (image,) = run.of_type("docker:index/image:Image")
    assert any(p.startswith("registry") for p in image.secret_paths)
    # Nowhere else in plain: not in a pod template, not in an export.
    for r in run.resources:
        if r.name != "keepalived-config":
            assert "pw-12345" not in str(r.inputs), r.name
        if "registry-pw" in str(r.inputs):
            assert r.secret_paths, r.name
    assert "pw-12345" not in str(run.exports)
    assert {"registrationCommands"} <= run.secret_exports
    assert pod_spec(daemonset(run, "keepalived"))["imagePullSecrets"] == [{"name": registry.inputs["name"]}]


def test_exports() -> None:
    run = rendered("prod")
    assert run.exports["vip"] == "10.10.10.2"
    assert run.exports["appsNamespace"] == "web" and run.exports["edgeNamespace"] == "web-edge"
    assert run.exports["loadBalancerNodes"] == ["lb-1", "lb-2"]
    assert run.exports["appsNodes"] == ["app-1", "app-2"]
    assert run.exports["services"] == ["shop", "api"]
    cmds = run.exports["registrationCommands"]
    assert cmds["load-balancer"].endswith(" --label role=load-balancer")
    assert cmds["apps"].endswith(" --label role=apps")


# --- the engine's config, as `pulumi up` hands it over -----------------------------------------


def test_a_misspelled_namespace_stops_the_program(caplog: pytest.LogCaptureFixture) -> None:
    lab = stack_raw("lab")
    raw = RawConfig(
        {**lab.values, "rancher_ha_lb:project": "shop", "kubernetes:context": "x"}, lab.secret_keys
    )
    with pytest.raises(pulumi.RunError):
        run_program(raw, "lab")
    assert caplog.messages[0] == (
        "rancher_ha_lb:project: unknown namespace 'rancher_ha_lb'; did you mean rancher-ha-lb:project?"
    )


def test_a_secret_where_it_would_be_plain_text_stops_the_program(caplog: pytest.LogCaptureFixture) -> None:
    lab = stack_raw("lab")
    raw = RawConfig(lab.values, lab.secret_keys | {"rancher-ha-lb:hosts"})
    with pytest.raises(pulumi.RunError):
        run_program(raw, "lab")
    assert caplog.messages[0].startswith(
        "rancher-ha-lb:hosts: holds a secret, but this setting reaches the cluster in plain text; only"
    )
