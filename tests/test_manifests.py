"""What the cluster gets, checked in-process for every stack and the settings that branch.

`halb render`'s own tests run it as a subprocess, as a user would; these
check the same manifests inside the test process, so every field a
component writes is pinned by strict schema validation (an unknown or
misspelt key fails) and by the meaning checks below, also under `make mutate`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from conftest import STACKS, cached, lab_value, rendered, settings_of, stack_raw, with_overrides
from k8s_schema import validate

from components.edge_firewall import render_edge_nft
from components.haproxy_cfg import dns_backends, render_haproxy_cfg
from components.keepalived_conf import render_keepalived_conf
from components.settings import RawConfig
from halb.mockcluster import CLUSTER_ID
from halb.mockrun import Run, run_program
from halb.render import manifests, render_files

# Settings that take the other branch of some component, each with the stack it changes.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "no-watch": ("lab", {"vrrp": {"check": {"watch": False}}}),
    "multicast-v2": ("lab", {"vrrp": {"version": 2, "advertInterval": 1, "unicast": False}}),
    "tolerations": (
        "lab",
        {
            "loadBalancer": {
                **lab_value("loadBalancer"),
                "tolerations": [
                    {"key": "dedicated", "value": "lb", "effect": "NoSchedule"},
                    {"operator": "Exists", "effect": "NoExecute"},
                    {"key": "only-key", "operator": "Exists"},
                ],
            }
        },
    ),
    "limits-and-env": (
        "lab",
        {
            "services": [
                {
                    **lab_value("services")[0],
                    "env": {"B": "2", "A": "1"},
                    "resources": {"cpu": "1", "memory": "1Gi", "cpuLimit": "2", "memoryLimit": "2Gi"},
                },
                lab_value("services")[1],
            ]
        },
    ),
    "monitoring-labels": ("prod", {"monitoring": {"enabled": True, "labels": {"release": "kps"}}}),
    # BGP instead of VRRP: FRR in the edge pod, its own Secret (issue 23).
    "bgp": (
        "lab",
        {
            "vip": {"address": "203.0.113.10/32", "interface": "eth0", "routerId": 51},
            "monitoring": {"enabled": False},
        },
    ),
}
BGP_PASSWORD = "bgp-md5~key"
SECRETS = {"rancher2:tokenKey": "token-variant:abc", "vrrpAuthPass": "pw~1", "registryPassword": "rpw"}


def variant_raw(name: str) -> RawConfig:
    stack, changes = VARIANTS[name]
    raw = with_overrides(stack_raw(stack), **changes)
    if name == "multicast-v2":
        raw = with_overrides(raw, secret=True, vrrpAuthPass=SECRETS["vrrpAuthPass"])
    if name == "monitoring-labels":
        raw = with_overrides(raw, secret=True, registryPassword=SECRETS["registryPassword"])
    if name == "bgp":
        peers = [{"address": "192.0.2.1", "asn": 65000, "password": BGP_PASSWORD},
                 {"address": "192.0.2.2", "asn": 65000}]  # fmt: skip
        bgp = {"asn": 65001, "peers": peers, "communities": ["65000:80"]}
        raw = with_overrides(raw, secret=True, bgp=bgp)
    return raw


@cached
def variant(name: str) -> Run:
    return run_program(variant_raw(name), VARIANTS[name][0])


def docs_of(run: Run) -> list[dict[str, Any]]:
    return manifests(run)


def doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


ALL = [*STACKS, *VARIANTS]


def run_of(name: str) -> Run:
    return rendered(name) if name in STACKS else variant(name)


@pytest.mark.parametrize("name", ALL)
def test_every_manifest_passes_strict_schema_validation(name: str) -> None:
    docs = docs_of(run_of(name))
    assert docs
    for d in docs:
        validate(d)


@pytest.mark.parametrize("name", ALL)
def test_every_object_is_named_namespaced_and_labelled(name: str) -> None:
    for d in docs_of(run_of(name)):
        meta = d["metadata"]
        assert meta["name"], d
        if d["kind"] not in ("Namespace", "Node"):
            assert meta.get("namespace"), (d["kind"], meta["name"])
        if d["kind"] in ("Deployment", "DaemonSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"):
            labels = meta["labels"]
            assert labels["app.kubernetes.io/part-of"] == "rancher-ha-lb", meta["name"]
            assert labels["app.kubernetes.io/managed-by"] == "pulumi", meta["name"]
            assert labels["app.kubernetes.io/name"] and labels["app.kubernetes.io/component"], meta["name"]


def pod_template(d: dict[str, Any]) -> dict[str, Any]:
    tpl: dict[str, Any] = d["spec"]["template"]
    return tpl


@pytest.mark.parametrize("name", ALL)
def test_workloads_select_their_own_pods_by_the_immutable_labels(name: str) -> None:
    for d in docs_of(run_of(name)):
        if d["kind"] not in ("Deployment", "DaemonSet"):
            continue
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector == {
            "app.kubernetes.io/name": d["metadata"]["name"],
            "app.kubernetes.io/part-of": "rancher-ha-lb",
        }
        assert selector.items() <= pod_template(d)["metadata"]["labels"].items()
        # No version in the selector: an image bump must not orphan the old pods.
        assert "app.kubernetes.io/version" not in selector


def test_app_version_label_is_the_image_tag() -> None:
    docs = docs_of(rendered("prod"))
    assert doc(docs, "Deployment", "shop")["metadata"]["labels"]["app.kubernetes.io/version"] == "1.4.2"
    assert doc(docs, "Deployment", "api")["metadata"]["labels"]["app.kubernetes.io/version"] == "3.1.0"
    assert doc(docs, "Deployment", "shop")["metadata"]["labels"]["app.kubernetes.io/component"] == "app"
    from components.k8s import image_tag

    assert image_tag("reg:5000/a/b:1.2") == "1.2"
    assert image_tag("reg:5000/a/b") is None
    assert image_tag("b@sha256:0") is None and image_tag("b:1@sha256:0") is None
    assert image_tag("b") is None


@pytest.mark.parametrize("name", ALL)
def test_edge_daemonset_rolls_one_node_at_a_time_on_a_config_change(name: str) -> None:
    run = run_of(name)
    docs = docs_of(run)
    ds = doc(docs, "DaemonSet", "edge")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    spec = pod_template(ds)["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod_template(ds)["metadata"]["labels"] == ds["metadata"]["labels"]
    assert ds["metadata"]["labels"]["app.kubernetes.io/component"] == "load-balancer"


def mounted_configs(docs: list[dict[str, Any]]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """haproxy.cfg and the keepalived confs as the edge pod mounts them: through
    its volumes, by the names those give, at the paths its containers read."""
    ds = doc(docs, "DaemonSet", "edge")
    spec = pod_template(ds)["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    cs = {c["name"]: c for c in spec["containers"]}
    (hap_mount,) = [m for m in cs["haproxy"]["volumeMounts"] if "configMap" in volumes[m["name"]]]
    cfg_path = cs["haproxy"]["args"][cs["haproxy"]["args"].index("-f") + 1]
    assert cfg_path.rsplit("/", 1)[0] == hap_mount["mountPath"] and hap_mount["readOnly"] is True
    cm = doc(docs, "ConfigMap", volumes[hap_mount["name"]]["configMap"]["name"])
    if "keepalived" in cs:
        (ka_mount,) = [m for m in cs["keepalived"]["volumeMounts"] if "secret" in volumes[m["name"]]]
        env = {e["name"]: e.get("value") for e in cs["keepalived"]["env"]}
        assert env["KEEPALIVED_CONFIG_DIR"] == ka_mount["mountPath"] and ka_mount["readOnly"] is True
    else:  # bgp: FRR's frr.conf and table, named by halb-bgp's flags
        assert "vrrp-exporter" not in cs
        (ka_mount,) = [m for m in cs["frr"]["volumeMounts"] if "secret" in volumes[m["name"]]]
        args = cs["frr"]["args"]
        for flag, suffix in (("--config", ".conf"), ("--firewall", ".nft")):
            assert args[args.index(flag) + 1] == f"{ka_mount['mountPath']}/$(NODE_NAME){suffix}"
        assert ka_mount["readOnly"] is True
    secret_volume = volumes[ka_mount["name"]]["secret"]
    assert secret_volume["defaultMode"] == 0o400
    secret = doc(docs, "Secret", secret_volume["secretName"])
    return cm["data"][cfg_path.rsplit("/", 1)[1]], secret["stringData"], ds


@pytest.mark.parametrize("name", ALL)
def test_the_configs_reach_the_pod_only_through_its_volumes(name: str) -> None:
    """No checksum (or any trace) of the configs in the pod template: a config
    change is a volume update the pod reloads, never a pod replacement."""
    cfg, confs, ds = mounted_configs(docs_of(run_of(name)))
    template = pod_template(ds)
    assert "annotations" not in template["metadata"]
    text = json.dumps(template)
    assert cfg[:200] not in text and all(c[:200] not in text for c in confs.values())


def test_with_auth_the_password_is_in_the_secret_alone() -> None:
    cfg, confs, ds = mounted_configs(docs_of(variant("multicast-v2")))
    password = SECRETS["vrrpAuthPass"]
    assert all(f"auth_pass {password}\n" in c for k, c in confs.items() if k.endswith(".conf"))
    assert not any(password in c for k, c in confs.items() if k.endswith(".nft"))  # keepalived's alone
    assert password not in json.dumps(ds) and password not in cfg


def test_with_bgp_the_peer_password_is_in_frrs_secret_alone() -> None:
    cfg, confs, ds = mounted_configs(docs_of(variant("bgp")))
    assert sorted(confs) == ["lb-1.conf", "lb-1.nft", "lb-2.conf", "lb-2.nft"]
    for k, c in confs.items():
        if k.endswith(".conf"):
            assert f" neighbor 192.0.2.1 password {BGP_PASSWORD}\n" in c
            assert " neighbor 192.0.2.2 password" not in c
        else:
            assert BGP_PASSWORD not in c
    assert BGP_PASSWORD not in json.dumps(ds) and BGP_PASSWORD not in cfg
    # ... and a Pulumi secret in what the program registers.
    (secret,) = [r for r in variant("bgp").resources if r.name == "edge-frr-config"]
    assert secret.secret_paths, "the frr-config Secret's data must be marked secret"


def template_and_configs(raw: RawConfig, stack: str) -> tuple[Any, str, dict[str, str]]:
    cfg, confs, ds = mounted_configs(docs_of(run_program(raw, stack)))
    return pod_template(ds), cfg, confs


def test_a_new_vrrp_auth_pass_reaches_the_pods_in_place() -> None:
    def with_password(password: str) -> tuple[Any, str, dict[str, str]]:
        return template_and_configs(
            with_overrides(variant_raw("multicast-v2"), secret=True, vrrpAuthPass=password), "lab"
        )

    first, second = with_password("first1"), with_password("second2")
    assert first[0] == second[0]  # the same pods ...
    assert first[2] != second[2]  # ... reload a new Secret


def test_config_changes_leave_the_pod_template_and_an_app_change_leaves_the_configs() -> None:
    base = template_and_configs(stack_raw("lab"), "lab")
    vrrp = template_and_configs(with_overrides(stack_raw("lab"), vrrp={"garpRefresh": 30}), "lab")
    haproxy = template_and_configs(
        with_overrides(stack_raw("lab"), loadBalancer={**lab_value("loadBalancer"), "maxConn": 1000}), "lab"
    )
    assert base[0] == vrrp[0] == haproxy[0]
    assert vrrp[2] != base[2] and vrrp[1] == base[1] and haproxy[1] != base[1] and haproxy[2] == base[2]
    services = lab_value("services")
    image_only = [{**services[0], "image": "ghcr.io/example/shop:9.9.9"}, services[1]]
    assert template_and_configs(with_overrides(stack_raw("lab"), services=image_only), "lab") == base


@pytest.mark.parametrize("stack", STACKS)
def test_the_pod_mounts_the_clusters_configs(stack: str) -> None:
    """The mounted files are the renderers' output for the cluster (DNS
    discovery), and `halb render` writes exactly those."""
    s = settings_of(stack)
    cfg, confs, _ = mounted_configs(docs_of(rendered(stack)))
    assert cfg == render_haproxy_cfg(s, dns_backends(s))
    assert confs == {
        **{f"{n}.conf": render_keepalived_conf(s, n) for n in s.lb_nodes},
        **{f"{n}.nft": render_edge_nft(s, n) for n in s.lb_nodes},
    }
    files = render_files(stack_raw(stack), stack)
    assert files["haproxy/haproxy.cfg"] == cfg
    assert {k: v for k, v in files.items() if k.startswith("keepalived/")} == {
        f"keepalived/{n}": c for n, c in confs.items()
    }


@pytest.mark.parametrize("stack", STACKS)
def test_namespaces_belong_to_the_project_rancher_made(stack: str) -> None:
    run = rendered(stack)
    s = settings_of(stack)
    (project,) = run.of_type("rancher2:index/project:Project")
    assert project.inputs["name"] == s.project_name
    assert project.inputs["clusterId"] == CLUSTER_ID
    # Rancher's ids are <cluster>:<project> (the mocks mint them so).
    project_id = f"{CLUSTER_ID}:{project.name}"
    docs = docs_of(run)
    for ns in (s.apps_namespace, s.edge_namespace):
        manifest = doc(docs, "Namespace", ns)
        assert manifest["metadata"]["annotations"] == {"field.cattle.io/projectId": project_id}
    namespaces = run.of_type("rancher2:index/namespace:Namespace")
    assert {r.inputs["name"]: r.inputs["projectId"] for r in namespaces} == {
        s.apps_namespace: project_id,
        s.edge_namespace: project_id,
    }


@pytest.mark.parametrize("stack", STACKS)
def test_the_app_namespace_is_restricted_and_only_the_edge_privileged(stack: str) -> None:
    s = settings_of(stack)
    docs = docs_of(rendered(stack))
    psa = "pod-security.kubernetes.io/"
    apps = doc(docs, "Namespace", s.apps_namespace)["metadata"]["labels"]
    edge = doc(docs, "Namespace", s.edge_namespace)["metadata"]["labels"]
    assert {k: v for k, v in apps.items() if k.startswith(psa)} == {
        psa + "enforce": "restricted", psa + "enforce-version": "latest",
        psa + "warn": "restricted", psa + "audit": "restricted",
    }  # fmt: skip
    assert {k: v for k, v in edge.items() if k.startswith(psa)} == {
        psa + "enforce": "privileged", psa + "enforce-version": "latest", psa + "audit": "baseline",
    }  # fmt: skip
    assert apps["app.kubernetes.io/part-of"] == edge["app.kubernetes.io/part-of"] == "rancher-ha-lb"


def test_a_pull_secret_only_with_a_registry_password() -> None:
    """README: without `registryPassword` nodes pull with their own credentials."""
    prod = rendered("prod")  # registry set, no password
    assert prod.of_type("rancher2:index/registry:Registry") == []
    assert "imagePullSecrets" not in pod_template(doc(docs_of(prod), "DaemonSet", "edge"))["spec"]
    with_password = variant("monitoring-labels")  # prod + registryPassword
    registry, apps_registry = with_password.named("images-pull"), with_password.named("images-apps-pull")
    assert len(with_password.of_type("rancher2:index/registry:Registry")) == 2
    assert registry.inputs["namespaceId"] == f"{CLUSTER_ID}:cluster-edge"
    assert apps_registry.inputs["namespaceId"] == f"{CLUSTER_ID}:cluster-apps"
    assert registry.inputs["projectId"] == f"{CLUSTER_ID}:cluster-project"
    spec = pod_template(doc(docs_of(with_password), "DaemonSet", "edge"))["spec"]
    assert spec["imagePullSecrets"] == [{"name": registry.inputs["name"]}]


@pytest.mark.parametrize(("insecure", "ca"), [(True, None), (False, "-----BEGIN CERTIFICATE-----\nMIIB\n")])
def test_insecure_and_ca_certs_reach_both_providers(insecure: bool, ca: str | None) -> None:
    changes: dict[str, Any] = {"rancher2:insecure": "true" if insecure else "false"}
    if ca is not None:
        changes["rancher2:caCerts"] = ca
    run = run_program(with_overrides(stack_raw("prod"), **changes), "prod")
    rancher = run.named("cluster-rancher").inputs
    assert rancher["insecure"] == str(insecure).lower()  # a provider's inputs go as strings
    assert rancher.get("caCerts") == ca
    cluster = yaml.safe_load(run.named("cluster-k8s").inputs["kubeconfig"])["clusters"][0]["cluster"]
    assert cluster.get("insecure-skip-tls-verify", False) is insecure
    if ca is None:
        assert "certificate-authority-data" not in cluster
    else:
        assert base64.b64decode(cluster["certificate-authority-data"]).decode() == ca


@pytest.mark.parametrize("stack", STACKS)
def test_edge_volumes_are_the_secret_the_configmap_and_two_memory_dirs(stack: str) -> None:
    """keepalived's runtime and the watch file live in RAM (tmpfs, 1777: see the lab's
    test of the sticky bit), bounded; the configs come from their objects, read-only."""
    docs = docs_of(rendered(stack))
    spec = pod_template(doc(docs, "DaemonSet", "edge"))["spec"]
    assert spec["volumes"] == [
        {"name": "haproxy-config", "configMap": {"name": "haproxy-config"}},
        {"name": "keepalived-config", "secret": {"secretName": "keepalived-config", "defaultMode": 0o400}},
        {"name": "keepalived-run", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
        {"name": "haproxy-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "watch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    assert doc(docs, "Secret", "keepalived-config")["type"] == "Opaque"


def test_haproxys_probes_drop_readiness_at_the_first_503_and_restart_after_30_s() -> None:
    spec = pod_template(doc(docs_of(rendered("lab")), "DaemonSet", "edge"))["spec"]
    (haproxy,) = [c for c in spec["containers"] if c["name"] == "haproxy"]
    health = {"path": "/healthz", "port": "stats"}
    assert haproxy["readinessProbe"] == {"httpGet": health, "periodSeconds": 2, "failureThreshold": 1}
    assert haproxy["livenessProbe"] == {"httpGet": health, "periodSeconds": 10, "failureThreshold": 3}


def test_a_long_image_tag_is_cut_to_a_valid_label_value() -> None:
    tag = "1." + "x" * 70
    services = lab_value("services")
    raw = with_overrides(
        stack_raw("lab"), services=[{**services[0], "image": f"reg:5000/a/shop:{tag}"}, services[1]]
    )
    deployment = doc(docs_of(run_program(raw, "lab")), "Deployment", "shop")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == tag[:63]
    validate(deployment)
