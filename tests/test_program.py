"""The whole program under recording mocks: real arguments of real resources."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml
from conftest import STACKS, lab_value, rendered, settings_of, stack_raw, with_overrides

from components.settings import RawConfig, SettingsError, parse_settings
from halb.mockcluster import CLUSTER_ID, NODE_COMMAND, PROJECT_OWNER, ApiError, Rancher
from halb.mockrun import FAKE_DIGEST, Recorded, Run, run_program, stack_rancher

DS = "kubernetes:apps/v1:DaemonSet"
DEPLOY = "kubernetes:apps/v1:Deployment"
P = "rancher-ha-lb:"
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


def edge(run: Run) -> dict[str, Any]:
    return pod_spec(daemonset(run, "edge"))


@pytest.mark.parametrize("stack", STACKS)
def test_one_edge_daemonset_only_on_lb_hosts_in_host_network(stack: str) -> None:
    run = rendered(stack)
    # HAProxy and keepalived in one pod (the seed's sidekick): one rollout,
    # one node at a time, never both LB hosts at once.
    assert [r.inputs["metadata"]["name"] for r in run.of_type(DS)] == ["edge"]
    spec = edge(run)
    assert [c["name"] for c in spec["containers"]] == [
        "haproxy",
        "haproxy-reload",
        "keepalived",
        "haproxy-watch",
        "vrrp-exporter",
    ]
    assert role_terms(spec) == [
        {"matchExpressions": [{"key": "role", "operator": "In", "values": ["load-balancer"]}]}
    ]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    strategy = daemonset(run, "edge").inputs["spec"]["updateStrategy"]
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert "tolerations" not in spec


def test_tolerations_reach_the_edge_pod() -> None:
    tol = [{"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"},
           {"operator": "Exists", "effect": "NoExecute"}]  # fmt: skip
    lb = {**lab_value("loadBalancer"), "tolerations": tol}
    run = run_program(with_overrides(stack_raw("lab"), loadBalancer=lb), "lab")
    assert edge(run)["tolerations"] == tol


def test_grace_covers_the_handoff_and_haproxy_drain() -> None:
    # preStop: the VIP leaving by the slowest path (interval x fall + timeout + 1 s),
    # the handoff's drain (2 s), 3 s to spare; then hard-stop-after 30 s; 5 s to exit.
    assert edge(rendered("prod"))["terminationGracePeriodSeconds"] == (1 * 2 + 1 + 1) + 2 + 3 + 30 + 5
    slow = with_overrides(stack_raw("prod"), vrrp={"check": {"interval": 3, "timeout": 2, "fall": 2},
                                                   "handoff": {"drainSeconds": 7.5}})  # fmt: skip
    grace = edge(run_program(slow, "prod"))["terminationGracePeriodSeconds"]
    assert grace == (3 * 2 + 2 + 1) + 8 + 3 + 30 + 5


@pytest.mark.parametrize("stack", STACKS)
def test_keepalived_capabilities_exactly_vrrp_needs(stack: str) -> None:
    spec = edge(rendered(stack))
    container = by_name(spec["containers"])["keepalived"]
    sc = container["securityContext"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW", "SETGID", "SYS_NICE"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["KEEPALIVED_VIP"]["value"] == str(settings_of(stack).vip.address)


@pytest.mark.parametrize("stack", STACKS)
def test_haproxy_watch_sidecar_unprivileged_sharing_the_track_file(stack: str) -> None:
    cs = by_name(edge(rendered(stack))["containers"])
    watch = cs["haproxy-watch"]
    assert watch["image"] == cs["keepalived"]["image"]
    assert watch["command"] == [
        "/usr/local/bin/haproxy-watch",
        "--port",
        str(settings_of(stack).load_balancer.stats_port),
        "--file",
        "/run/halb/haproxy-down",
        "--timeout",
        "2",
    ]
    sc = watch["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["name"]: m["mountPath"] for m in watch["volumeMounts"]}
    assert mounts == {"watch": "/run/halb"}
    assert {"name": "watch", "mountPath": "/run/halb"} in cs["keepalived"]["volumeMounts"]


def test_no_sidecar_without_watch() -> None:
    run = run_program(with_overrides(stack_raw("lab"), vrrp={"check": {"watch": False}}), "lab")
    names = [c["name"] for c in edge(run)["containers"]]
    assert names == ["haproxy", "haproxy-reload", "keepalived", "vrrp-exporter"]


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
    c = by_name(edge(rendered(stack))["containers"])["haproxy"]
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["http"]["hostPort"] == settings_of(stack).load_balancer.http_port
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "stats"}
    # The stats frontend binds this address (and loopback), never the VIP.
    # The sticky-cookie key comes from the minted Secret, never a literal.
    assert c["env"] == [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "HALB_COOKIE_KEY", "valueFrom": {"secretKeyRef": {"name": "edge-cookie-key", "key": "key"}}},
    ]
    reload = by_name(edge(rendered(stack))["containers"])["haproxy-reload"]
    assert reload["env"] == c["env"]  # its `haproxy -c` sees what HAProxy sees


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
        assert pdbs[svc.name]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == svc.name


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
    ds = daemonset(run, "edge")
    for dep in ("cluster-edge", "edge-keepalived-config", "edge-haproxy-config",
                "images-keepalived-build", "images-haproxy-build"):  # fmt: skip
        assert run.named(dep).urn in ds.dependencies, dep
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


def with_everything() -> Run:
    """prod plus what the stacks leave out: a pull secret (registry password) and secret env."""
    services = [
        {**svc, "env": {"TOKEN": "t0k3n"}} for svc in json.loads(stack_raw("prod").values[P + "services"])
    ]
    raw = with_overrides(stack_raw("prod"), secret=True, registryPassword="registry-pw", services=services)
    return run_program(raw, "prod")


@pytest.mark.parametrize("stack", [*STACKS, "prod+registry+env"])
def test_every_resource_sits_under_its_component_and_reaches_the_stacks_cluster(stack: str) -> None:
    """A resource without the explicit provider would go wherever the ambient
    kubeconfig or Rancher login points; one outside its component would not be
    deleted or renamed with it."""
    run = with_everything() if stack == "prod+registry+env" else rendered(stack)
    if stack == "prod+registry+env":
        assert run.of_type("rancher2:index/registry:Registry") and run.named("app-shop-env")
    providers = {"rancher2:": run.named("cluster-rancher").urn, "kubernetes:": run.named("cluster-k8s").urn}
    stack_urn = run.of_type("pulumi:pulumi:Stack")[0].urn
    for r in run.resources + run.reads:
        if r.type == "pulumi:pulumi:Stack":
            continue
        if r.type.startswith("rancher-ha-lb:index:"):
            assert r.parent == stack_urn, r.name
        else:
            parent = run.by_urn(r.parent or "")
            assert parent.type.startswith("rancher-ha-lb:index:") and r.name.startswith(parent.name + "-"), (
                r.name
            )
        for prefix, provider in providers.items():
            if r.type.startswith(prefix):
                assert r.provider is not None and r.provider.startswith(provider + "::"), r.name
        if r.type.startswith("pulumi:providers:"):
            assert run.by_urn(r.parent or "").name == "cluster", r.name


@pytest.mark.parametrize("stack", [*STACKS, "prod+registry+env"])
def test_everything_the_program_makes_in_the_cluster_is_labelled_as_its_own(stack: str) -> None:
    """`-l app.kubernetes.io/part-of=rancher-ha-lb` finds all of it (Rancher's project too)."""
    run = with_everything() if stack == "prod+registry+env" else rendered(stack)
    for r in run.resources:
        if r.type.startswith("kubernetes:") and not r.type.endswith("Patch"):
            labels = r.inputs["metadata"]["labels"]
        elif r.type.startswith(("rancher2:index/project", "rancher2:index/namespace")):
            labels = r.inputs["labels"]
        else:
            continue
        assert labels["app.kubernetes.io/part-of"] == "rancher-ha-lb", r.name


def test_rancher_shows_what_each_namespace_and_the_project_is_for() -> None:
    run = rendered("prod")
    described = {
        r.name: r.inputs["description"] for r in run.resources if r.type.startswith("rancher2:index/")
    }
    assert described == {
        "cluster-project": "rancher-ha-lb: highly available web entry point",
        "cluster-apps": "App services (Pod Security: restricted)",
        "cluster-edge": "Edge tier: HAProxy + keepalived in host networking",
    }


def test_the_kubernetes_provider_applies_server_side_to_the_stacks_cluster() -> None:
    """Server-side apply: NodePatch needs it, and a field another manager owns is a
    conflict rather than silently overwritten (halb.mockcluster models both)."""
    inputs = rendered("prod").named("cluster-k8s").inputs
    assert inputs["enableServerSideApply"] == "true"
    assert inputs["clusterIdentifier"] == CLUSTER_ID


def test_the_namespaces_carry_exactly_their_pod_security_and_ownership_labels() -> None:
    run = rendered("prod")
    common = {
        "app.kubernetes.io/part-of": "rancher-ha-lb",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    assert run.named("cluster-apps").inputs["labels"] == {
        **common, "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted",
    }  # fmt: skip
    assert run.named("cluster-edge").inputs["labels"] == {
        **common, "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/audit": "baseline", "rancher-ha-lb/host-network": "allowed",
    }  # fmt: skip


def test_an_upper_case_hostname_is_refused_with_the_rule() -> None:
    services = json.loads(stack_raw("lab").values[P + "services"])
    services[1]["hostnames"] = ["Shop.example.com"]
    with pytest.raises(SettingsError) as err:
        parse_settings(with_overrides(stack_raw("lab"), services=services))
    assert err.value.problems == [
        f"{P}services[1].hostnames[0]: 'Shop.example.com' is not a lower-case DNS host name "
        "(a wildcard only as the whole first label: *.example.com)"
    ]


def test_pdbs_let_a_drain_evict_a_pod_that_is_not_ready() -> None:
    """AlwaysAllow: a crash-looping pod must not block a node drain."""
    for pdb in rendered("prod").of_type("kubernetes:policy/v1:PodDisruptionBudget"):
        assert pdb.inputs["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", pdb.name


def test_app_deployments_roll_one_new_pod_at_a_time_keeping_every_old_one() -> None:
    for d in rendered("prod").of_type("kubernetes:apps/v1:Deployment"):
        strategy = d.inputs["spec"]["strategy"]
        assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}, (
            d.name
        )


def test_built_images_are_pinned_by_digest() -> None:
    run = rendered("prod")
    images = {r.inputs["imageName"]: r.inputs for r in run.of_type("docker:index/image:Image")}
    assert set(images) == {
        "registry.example.com/edge/haproxy:2.6.12",
        "registry.example.com/edge/keepalived:2.2.7",
    }
    for name, inputs in images.items():
        repo = name.rsplit(":", 1)[0]
        assert inputs["build"]["context"].endswith("images/" + repo.rsplit("/", 1)[1])
        assert inputs["build"]["platform"] == "linux/amd64"
    cs = by_name(edge(run)["containers"])
    assert cs["haproxy"]["image"] == f"registry.example.com/edge/haproxy@{FAKE_DIGEST}"
    assert cs["keepalived"]["image"] == f"registry.example.com/edge/keepalived@{FAKE_DIGEST}"


def test_image_platform_is_a_setting() -> None:
    run = run_program(with_overrides(stack_raw("prod"), imagePlatform="linux/arm64"), "prod")
    assert {r.inputs["build"]["platform"] for r in run.of_type("docker:index/image:Image")} == {"linux/arm64"}


def test_existing_images_are_used_as_is_without_build() -> None:
    run = rendered("lab")
    assert run.of_type("docker:index/image:Image") == []
    cs = by_name(edge(run)["containers"])
    assert cs["keepalived"]["image"] == settings_of("lab").keepalived.image
    assert cs["haproxy"]["image"] == settings_of("lab").load_balancer.image


def test_a_config_change_reaches_the_pods_without_replacing_them() -> None:
    """The configs travel in the ConfigMap and Secret (reloaded in place); the pod
    template, whose change would replace the pods, stays the same."""

    def parts(run: Run) -> tuple[Any, str, dict[str, str]]:
        template = daemonset(run, "edge").inputs["spec"]["template"]
        cfg = run.named("edge-haproxy-config").inputs["data"]["haproxy.cfg"]
        return template, cfg, run.named("edge-keepalived-config").inputs["stringData"]

    base = parts(rendered("lab"))
    assert "annotations" not in base[0]["metadata"]
    for change in (
        {"vrrp": {"advertInterval": 0.1}},
        {
            "services": [
                *lab_value("services"),
                {
                    "name": "news",
                    "image": "ghcr.io/example/news:1",
                    "port": 8082,
                    "hostnames": ["news.lab.invalid"],
                },
            ]
        },
    ):
        changed = parts(run_program(with_overrides(stack_raw("lab"), **change), "lab"))
        assert changed[0] == base[0], change
        assert (changed[1], changed[2]) != (base[1], base[2]), change
    # What does replace the pods: the pod itself (here the HTTP port).
    ported = parts(
        run_program(
            with_overrides(stack_raw("lab"), loadBalancer={**lab_value("loadBalancer"), "httpPort": 8080}),
            "lab",
        )
    )
    assert ported[0] != base[0]


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
    secret = run.named("edge-keepalived-config")
    assert "stringData" in secret.secret_paths
    assert "auth_pass pw-12345" in secret.inputs["stringData"]["lb-1.conf"]
    registry, apps_registry = run.named("images-pull"), run.named("images-apps-pull")
    assert len(run.of_type("rancher2:index/registry:Registry")) == 2
    for r in (registry, apps_registry):
        assert any(p.startswith("registries") for p in r.secret_paths), r.name
    for image in run.of_type("docker:index/image:Image"):
        assert any(p.startswith("registry") for p in image.secret_paths), image.name
    # Nowhere else in plain: not in a pod template, not in an export.
    for r in run.resources:
        if r.name != "edge-keepalived-config":
            assert "pw-12345" not in str(r.inputs), r.name
        if "registry-pw" in str(r.inputs):
            assert r.secret_paths, r.name
    assert "pw-12345" not in str(run.exports)
    assert {"registrationCommands"} <= run.secret_exports
    assert edge(run)["imagePullSecrets"] == [{"name": registry.inputs["name"]}]
    # Every app Deployment pulls with the apps namespace's own copy (a Secret serves one namespace).
    assert apps_registry.inputs["namespaceId"].endswith(":cluster-apps")  # the apps namespace's id
    for d in run.of_type(DEPLOY):
        assert pod_spec(d)["imagePullSecrets"] == [{"name": apps_registry.inputs["name"]}], d.name


def test_exports() -> None:
    run = rendered("prod")
    assert run.exports["vip"] == "10.10.10.2"
    assert run.exports["appsNamespace"] == "web" and run.exports["edgeNamespace"] == "web-edge"
    assert run.exports["loadBalancerNodes"] == ["lb-1", "lb-2"]
    assert run.exports["appsNodes"] == ["app-1", "app-2"]
    assert run.exports["services"] == ["shop", "api"]
    cmds = run.exports["registrationCommands"]
    assert cmds["load-balancer"].endswith(" --worker --label role=load-balancer")
    assert cmds["apps"].endswith(" --worker --label role=apps")


# What a real `pulumi up` meets (issue 11): the mocks answer like Rancher and
# Kubernetes (halb/mockcluster.py); one `Rancher` across runs is one cluster.

PATCH = "kubernetes:core/v1:NodePatch"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def prod_rancher(**nodes: dict[str, str]) -> Rancher:
    """The prod cluster with these hosts registered, with these labels."""
    rancher = Rancher.with_nodes("prod", ())
    for name, labels in nodes.items():
        rancher.register(name.replace("_", "-"), labels)
    return rancher


def prod_without(host: str) -> RawConfig:
    """The prod stack with one host taken out of `hosts`."""
    hosts = settings_of("prod").model_dump(mode="json", by_alias=True, exclude_none=True)["hosts"]
    del hosts[host]
    return with_overrides(stack_raw("prod"), hosts=hosts)


PROD_HOSTS: dict[str, dict[str, str]] = {"lb_1": {}, "lb_2": {}, "app_1": {}, "app_2": {}}


@pytest.mark.parametrize("registered", ["lb-2.example.com", None], ids=["fqdn", "not-yet"])
def test_a_host_not_in_the_cluster_stops_the_run_and_no_ghost_node_is_made(registered: str | None) -> None:
    rancher = prod_rancher(**{k: v for k, v in PROD_HOSTS.items() if k != "lb_2"})
    if registered:
        rancher.register(registered)
    with pytest.raises(ApiError, match="resource 'lb-2' does not exist"):
        run_program(stack_raw("prod"), "prod", rancher)
    assert "lb-2" not in rancher.nodes
    assert not any(n.ghost for n in rancher.nodes.values())


def test_patches_wait_for_the_read_of_their_node() -> None:
    run = rendered("prod")
    reads = {r.name: r for r in run.reads}
    for patch in run.of_type(PATCH):
        node = patch.inputs["metadata"]["name"]
        assert reads[f"{patch.name}-registered"].urn in patch.dependencies, node
        assert "pulumi.com/patchForce" not in patch.inputs["metadata"].get("annotations", {}), node


def test_a_host_registered_with_another_role_is_refused_not_taken_over() -> None:
    rancher = prod_rancher(**{**PROD_HOSTS, "app_2": {"role": "load-balancer"}})
    with pytest.raises(ApiError, match=r'conflict with "kubelet": \.metadata\.labels\.role'):
        run_program(stack_raw("prod"), "prod", rancher)
    assert rancher.nodes["app-2"].labels == {"role": "load-balancer"}
    assert rancher.nodes["app-2"].owners == {"role": {"kubelet"}}


def test_removing_a_host_keeps_the_role_it_registered_with() -> None:
    rancher = prod_rancher(
        lb_1={"role": "load-balancer"},
        lb_2={"role": "load-balancer"},
        app_1={"role": "apps"},
        app_2={"role": "apps"},
    )
    run_program(stack_raw("prod"), "prod", rancher)
    assert rancher.nodes["app-2"].owners["role"] == {"kubelet", "pulumi-kubernetes-hosts-app-2"}
    run_program(prod_without("app-2"), "prod", rancher)
    assert rancher.nodes["app-2"].labels == {"role": "apps"}
    assert rancher.nodes["app-2"].owners == {"role": {"kubelet"}}


def test_removing_a_host_takes_off_the_label_only_we_set() -> None:
    rancher = prod_rancher(**PROD_HOSTS)
    run_program(stack_raw("prod"), "prod", rancher)
    assert rancher.nodes["app-2"].labels == {"role": "apps"}
    run_program(prod_without("app-2"), "prod", rancher)
    assert rancher.nodes["app-2"].labels == {}
    assert rancher.nodes["lb-1"].labels == {"role": "load-balancer"}


def test_a_second_run_changes_no_input_and_mints_no_token() -> None:
    rancher = stack_rancher(stack_raw("prod"))
    first = run_program(stack_raw("prod"), "prod", rancher)
    second = run_program(stack_raw("prod"), "prod", rancher)
    assert {r.urn: r.inputs for r in second.resources} == {r.urn: r.inputs for r in first.resources}
    assert rancher.minted == []


def test_kubeconfig_is_rancher_proxy_to_the_looked_up_cluster_with_the_stacks_token() -> None:
    # Authorized cluster endpoint on and the cluster disconnected: getCluster's
    # kubeconfig is "", which pulumi-kubernetes would read as "use ~/.kube/config".
    rancher = stack_rancher(stack_raw("prod"))
    rancher.kubeconfig_available = False
    raw = with_overrides(stack_raw("prod"), secret=True, **{"rancher2:tokenKey": "token-abc:xyz"})
    run = run_program(raw, "prod", rancher)
    k8s = run.named("cluster-k8s")
    assert "kubeconfig" in k8s.secret_paths
    cfg = yaml.safe_load(k8s.inputs["kubeconfig"])
    assert cfg["clusters"][0]["cluster"]["server"] == f"https://rancher.example.com/k8s/clusters/{CLUSTER_ID}"
    assert cfg["users"][0]["user"] == {"token": "token-abc:xyz"}
    assert cfg["current-context"] == "prod"
    assert k8s.inputs["clusterIdentifier"] == CLUSTER_ID


def test_token_that_is_not_cluster_owner_stops_before_anything_naming_cluster_and_role() -> None:
    rancher = stack_rancher(stack_raw("prod"))
    rancher.access = PROJECT_OWNER
    rancher.kubeconfig_available = False  # getCluster gives kubeConfig ""
    with pytest.raises(pulumi.RunError) as err:
        run_program(stack_raw("prod"), "prod", rancher)
    msg = str(err.value)
    assert "cluster 'prod'" in msg and "Cluster Owner" in msg and "updatepsa" in msg
    assert "admission webhook" not in msg
    assert rancher.created == []
    assert all(n.labels == {} for n in rancher.nodes.values())


def test_no_token_anywhere_stops_naming_the_key(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(pulumi.RunError, match="1 problem"):
        run_program(stack_raw("prod"), "prod", env={})
    assert "rancher2:tokenKey: not set" in caplog.text


def test_token_from_the_environment_reaches_both_providers() -> None:
    run = run_program(stack_raw("prod"), "prod", env={"RANCHER_TOKEN_KEY": "token-env:secret"})
    assert run.named("cluster-rancher").inputs["tokenKey"] == "token-env:secret"
    assert "tokenKey" in run.named("cluster-rancher").secret_paths
    assert "token-env:secret" in run.named("cluster-k8s").inputs["kubeconfig"]


@pytest.mark.parametrize("stack", STACKS)
def test_registration_commands_register_workers_with_their_role(stack: str) -> None:
    cmds = rendered(stack).exports["registrationCommands"]
    # Rancher's system-agent install.sh stops without a role ("You must
    # select at least one role"); the UI adds --worker, so do we.
    assert cmds == {
        role: f"{NODE_COMMAND} --worker --label role={role}" for role in ("load-balancer", "apps")
    }


def test_one_replica_is_refused_with_the_reason() -> None:
    services = [
        {"name": "shop", "image": "x:1", "port": 80, "replicas": 1},
        {"name": "api", "image": "y:1", "port": 81},
    ]
    raw = with_overrides(stack_raw("prod"), services=services)
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    (problem,) = err.value.problems
    assert problem.startswith("rancher-ha-lb:services[0].replicas: 1 is not in 2..1000")
    assert "drain" in problem


@pytest.mark.parametrize("stack", STACKS)
def test_pdbs_let_a_drain_evict_one_pod_at_a_time(stack: str) -> None:
    for pdb in rendered(stack).of_type(PDB):
        assert pdb.inputs["spec"]["maxUnavailable"] == 1, pdb.name
        assert "minAvailable" not in pdb.inputs["spec"], pdb.name


@pytest.mark.parametrize("stack", STACKS)
def test_workloads_wait_for_every_host_label(stack: str) -> None:
    run = rendered(stack)
    patches = {r.urn for r in run.of_type(PATCH)}
    assert len(patches) == len(settings_of(stack).hosts)
    for r in run.of_type(DS) + run.of_type(DEPLOY):
        assert patches <= set(r.dependencies), r.name


def test_removing_a_host_after_its_node_is_gone_recreates_it_as_the_readme_warns() -> None:
    # pulumi-kubernetes relinquishes a deleted Patch's fields with an apply of
    # the bare object, which creates it again: remove hosts from the stack first.
    rancher = prod_rancher(**PROD_HOSTS)
    run_program(stack_raw("prod"), "prod", rancher)
    del rancher.nodes["app-2"]
    run_program(prod_without("app-2"), "prod", rancher)
    assert rancher.nodes["app-2"].ghost and rancher.nodes["app-2"].labels == {}


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


def test_the_images_base_is_pinned_by_digest() -> None:
    """Every build starts from the same bytes (issue 11, item 10); the lab passes
    its debootstrapped stand-in through the same build argument."""
    from components.image import IMAGES

    for name in ("haproxy", "keepalived"):
        text = (IMAGES / name / "Dockerfile").read_text()
        assert "ARG BASE=docker.io/library/debian:bookworm-slim@sha256:" in text, name
        assert len(text.split("@sha256:", 1)[1].split()[0]) == 64, name
        assert "FROM ${BASE}" in text and text.count("FROM ") == 1, name
