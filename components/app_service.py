"""AppService: one business service on the `role=apps` hosts.

Creates: a Deployment (required node affinity role=apps, preferred spread
over hosts: the seed's "should not have service X"), a headless Service so
HAProxy resolves every pod, a PodDisruptionBudget (maxUnavailable 1), and,
when the service has secret env values, a Secret the pod reads them from.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import HOSTNAME_LABEL, image_tag, labels, required_role, resources, selector
from components.settings import Role, Service


@dataclass(frozen=True)
class AppServiceArgs:
    service: Service
    namespace: pulumi.Input[str]
    # The stack's registry as a pull secret in the apps namespace (EdgeImages makes it).
    pull_secret: pulumi.Input[str] | None = None


def restricted_security_context(svc: Service) -> k8s.core.v1.SecurityContextArgsDict:
    """What Pod Security `restricted` demands of every container, with the
    service's overrides: a numeric user for images whose USER is a name (or
    root), a writable root filesystem for images that write outside /tmp."""
    sc = svc.security_context
    out: k8s.core.v1.SecurityContextArgsDict = {
        "allow_privilege_escalation": False,
        "run_as_non_root": True,
        "read_only_root_filesystem": sc.read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }
    if sc.run_as_user is not None:
        out["run_as_user"] = sc.run_as_user
    if sc.run_as_group is not None:
        out["run_as_group"] = sc.run_as_group
    return out


# The kubelet probes every STARTUP_PERIOD_S until the startup probe passes
# (at most healthCheck.startupSeconds), and only then liveness and readiness.
STARTUP_PERIOD_S = 5


def probes(svc: Service) -> dict[str, k8s.core.v1.ProbeArgsDict]:
    """Readiness on HAProxy's check path; liveness and startup on their own
    paths (default: the same), so a slow dependency makes a pod unready,
    not a restart loop, and a slow start is not killed."""
    hc = svc.health_check

    def get(path: str) -> k8s.core.v1.ProbeArgsDict:
        if not svc.http:  # TCP-only (a database, a broker): a connect, as HAProxy checks it
            return {"tcp_socket": {"port": port_name(svc)}}
        return {"http_get": {"path": path, "port": port_name(svc)}}

    ready = svc.ready_path
    return {
        "startup_probe": {
            **get(hc.startup_path or ready),
            "period_seconds": STARTUP_PERIOD_S,
            "failure_threshold": max(1, hc.startup_seconds // STARTUP_PERIOD_S),
        },
        "readiness_probe": {**get(ready), "period_seconds": 5, "failure_threshold": 2},
        "liveness_probe": {**get(hc.liveness_path or ready), "period_seconds": 10, "failure_threshold": 3},
    }


def port_name(svc: Service) -> str:
    return "http" if svc.http else "tcp"


class AppService(pulumi.ComponentResource):
    """Deployment + headless Service + PDB for one service."""

    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: AppServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:AppService", name, None, opts)
        svc = args.service
        meta_labels = labels(svc.name, "app", image_tag(svc.image))
        match = selector(svc.name)
        child = pulumi.ResourceOptions(parent=self)
        env = self._env(name, svc, args.namespace, meta_labels, child)
        spec: k8s.apps.v1.DeploymentSpecArgsDict = {
            "replicas": svc.replicas,
            "selector": {"match_labels": match},
            "strategy": {
                "type": "RollingUpdate",
                "rolling_update": {"max_unavailable": 0, "max_surge": 1},
            },
            "template": {
                "metadata": {"labels": meta_labels},
                "spec": {
                    "affinity": {
                        **required_role(Role.APPS),
                        "pod_anti_affinity": {
                            # Preferred, not required: with fewer apps hosts
                            # than replicas the service still runs.
                            "preferred_during_scheduling_ignored_during_execution": [
                                {
                                    "weight": 100,
                                    "pod_affinity_term": {
                                        "topology_key": HOSTNAME_LABEL,
                                        "label_selector": {"match_labels": match},
                                    },
                                }
                            ]
                        },
                    },
                    "automount_service_account_token": False,
                    "security_context": {
                        "run_as_non_root": True,
                        "seccomp_profile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": svc.name,
                            "image": svc.image,
                            "ports": [{"name": port_name(svc), "container_port": svc.port}],
                            "env": env,
                            **probes(svc),  # type: ignore[typeddict-item]
                            "resources": resources(svc.resources),
                            "security_context": restricted_security_context(svc),
                            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                        }
                    ],
                    # Writable /tmp, bounded: past the limit the kubelet evicts the pod.
                    "volumes": [{"name": "tmp", "empty_dir": {"size_limit": svc.tmp_size_limit}}],
                    **(
                        {"image_pull_secrets": [{"name": args.pull_secret}]}
                        if args.pull_secret is not None
                        else {}
                    ),
                },
            },
        }
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"name": svc.name, "namespace": args.namespace, "labels": meta_labels},
            spec=spec,
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": svc.name, "namespace": args.namespace, "labels": meta_labels},
            spec={
                # Headless: DNS answers with every ready pod, so HAProxy health
                # checks and balances pods itself, not a kube-proxy VIP.
                "cluster_ip": "None",
                "selector": match,
                "ports": [{"name": port_name(svc), "port": svc.port, "target_port": port_name(svc)}],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": svc.name, "namespace": args.namespace, "labels": meta_labels},
            # One pod at a time whatever the replica count, and a pod that is
            # not ready never holds a drain (IfHealthyBudget would keep two
            # crash-looping replicas from ever being evicted).
            spec={
                "max_unavailable": 1,
                "unhealthy_pod_eviction_policy": "AlwaysAllow",
                "selector": {"match_labels": match},
            },
            opts=child,
        )
        self.service_name = service.metadata.apply(lambda m: m.name or svc.name)
        self.register_outputs({"service_name": self.service_name})

    @staticmethod
    def _env(
        name: str,
        svc: Service,
        namespace: pulumi.Input[str],
        meta_labels: dict[str, str],
        child: pulumi.ResourceOptions,
    ) -> list[k8s.core.v1.EnvVarArgsDict]:
        """Plain values as literals; secret ones only through a Secret, never in the Deployment."""
        env: dict[str, k8s.core.v1.EnvVarArgsDict] = {
            k: {"name": k, "value": v} for k, v in svc.plain_env.items()
        }
        secret_env = svc.secret_env
        if secret_env:
            # No metadata.name: Pulumi names it `<name>-env-<random>`, and as a
            # Secret's data is immutable to the kubernetes provider, a changed
            # value is a new Secret with a new name, so the Deployment rolls.
            secret = k8s.core.v1.Secret(
                f"{name}-env",
                metadata={"namespace": namespace, "labels": meta_labels},
                type="Opaque",
                string_data=pulumi.Output.secret(secret_env),
                opts=child,
            )
            for k in secret_env:
                env[k] = {
                    "name": k,
                    "value_from": {"secret_key_ref": {"name": secret.metadata.name, "key": k}},
                }
        return [env[k] for k in sorted(env)]
