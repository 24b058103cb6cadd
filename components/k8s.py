"""Small pure builders for Kubernetes fields shared by the components."""

from __future__ import annotations

import pulumi_kubernetes as k8s

from components.settings import Resources, Role, Toleration

PART_OF = "rancher-ha-lb"
ROLE_LABEL = "role"
# The label every node carries with its own name (pod anti-affinity spreads by it).
HOSTNAME_LABEL = "kubernetes.io/hostname"


def labels(name: str, component: str, version: str | None = None) -> dict[str, str]:
    """The recommended app.kubernetes.io labels."""
    out = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if version:
        out["app.kubernetes.io/version"] = version[:63]
    return out


def selector(name: str) -> dict[str, str]:
    """The immutable subset of `labels` a workload selects its pods by."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def image_tag(image: str) -> str | None:
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        return None
    return tail.split(":", 1)[1] if ":" in tail else None


def required_role(role: Role) -> k8s.core.v1.AffinityArgsDict:
    """Node affinity: schedule only on hosts labelled role=<role> (the seed's 'must')."""
    return {
        "node_affinity": {
            "required_during_scheduling_ignored_during_execution": {
                "node_selector_terms": [
                    {"match_expressions": [{"key": ROLE_LABEL, "operator": "In", "values": [role.value]}]}
                ]
            }
        }
    }


def resources(r: Resources) -> k8s.core.v1.ResourceRequirementsArgsDict:
    limits: dict[str, str] = {"memory": r.memory_limit}
    if r.cpu_limit:
        limits["cpu"] = r.cpu_limit
    return {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits}


# The sidecars' user: no capability, no file of anyone else's.
NOBODY = 65534


def unprivileged() -> k8s.core.v1.SecurityContextArgsDict:
    """A sidecar's security context: uid/gid 65534, nothing added, read-only root."""
    return {
        "run_as_user": NOBODY,
        "run_as_group": NOBODY,
        "run_as_non_root": True,
        "privileged": False,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def root_with(capabilities: tuple[str, ...]) -> k8s.core.v1.SecurityContextArgsDict:
    """uid 0 with only `capabilities`: in Kubernetes they are effective for
    uid 0 alone (no ambient capabilities); everything else is dropped."""
    return {
        "run_as_user": 0,
        "privileged": False,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"], "add": list(capabilities)},
    }


def field_env(name: str, field_path: str) -> k8s.core.v1.EnvVarArgsDict:
    """An env var from the downward API."""
    return {"name": name, "value_from": {"field_ref": {"field_path": field_path}}}


def host_ip_env(name: str) -> k8s.core.v1.EnvVarArgsDict:
    """The node's own address (host networking: the pod's address too)."""
    return field_env(name, "status.hostIP")


def tolerations(items: tuple[Toleration, ...]) -> list[k8s.core.v1.TolerationArgsDict]:
    out: list[k8s.core.v1.TolerationArgsDict] = []
    for t in items:
        tol: k8s.core.v1.TolerationArgsDict = {"operator": t.operator}
        if t.key is not None:
            tol["key"] = t.key
        if t.value is not None:
            tol["value"] = t.value
        if t.effect is not None:
            tol["effect"] = t.effect
        out.append(tol)
    return out


def one_node_at_a_time(
    name: str,
    meta_labels: dict[str, str],
    pod_spec: k8s.core.v1.PodSpecArgsDict,
) -> k8s.apps.v1.DaemonSetSpecArgsDict:
    """DaemonSet spec for the edge tier: one node at a time (the other keeps the
    VIP and serves). No config checksum in the template: a config change
    reaches the running pods in place (the kubelet updates mounted volumes) and
    is reloaded there; only a change of the pod itself (image, ports, security)
    replaces pods, one node at a time, each handing the VIP over first."""
    return {
        "selector": {"match_labels": selector(name)},
        "update_strategy": {
            "type": "RollingUpdate",
            "rolling_update": {"max_unavailable": 1, "max_surge": 0},
        },
        "template": {
            "metadata": {"labels": meta_labels},
            "spec": pod_spec,
        },
    }


def edge_pod_spec(
    containers: list[k8s.core.v1.ContainerArgsDict],
    volumes: list[k8s.core.v1.VolumeArgsDict],
    grace_s: int,
    tolerate: tuple[Toleration, ...] = (),
) -> k8s.core.v1.PodSpecArgsDict:
    """What the edge pod needs: load-balancer hosts only, the host's network."""
    spec: k8s.core.v1.PodSpecArgsDict = {
        "affinity": required_role(Role.LOAD_BALANCER),
        "host_network": True,
        # Host networking would otherwise give the node's resolv.conf, and
        # the apps' headless Services would not resolve.
        "dns_policy": "ClusterFirstWithHostNet",
        "automount_service_account_token": False,
        "priority_class_name": "system-node-critical",
        "termination_grace_period_seconds": grace_s,
        "security_context": {"seccomp_profile": {"type": "RuntimeDefault"}},
        "containers": containers,
        "volumes": volumes,
    }
    if tolerate:
        spec["tolerations"] = tolerations(tolerate)
    return spec
