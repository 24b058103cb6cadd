"""GlobalLoadBalancer: HAProxy once on every `role=load-balancer` host.

Creates: a ConfigMap with haproxy.cfg (from the pure renderer, backends found
through DNS of each app's headless Service) and a host-network DaemonSet that
rolls one node at a time when the config's checksum changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.haproxy_cfg import dns_backends, render_haproxy_cfg
from components.k8s import checksum, image_tag, labels, required_role, resources, selector
from components.settings import Role, Settings

NAME = "haproxy"
CONFIG_DIR = "/usr/local/etc/haproxy"
# The official image's user `haproxy` cannot bind :80 here: with host
# networking there is no per-pod ip_unprivileged_port_start, and capabilities
# added for a non-root user are not effective. So uid 0 with every capability
# dropped but NET_BIND_SERVICE, no escalation, read-only root filesystem.
ROOT = 0


@dataclass(frozen=True)
class GlobalLoadBalancerArgs:
    settings: Settings
    namespace: pulumi.Input[str]


class GlobalLoadBalancer(pulumi.ComponentResource):
    """HAProxy DaemonSet + its config."""

    config: str
    daemonset_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: GlobalLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rancher-ha-lb:index:GlobalLoadBalancer", name, None, opts)
        s, lb = args.settings, args.settings.load_balancer
        self.config = render_haproxy_cfg(s, dns_backends(s))
        meta_labels = labels(NAME, "load-balancer", image_tag(lb.image))
        child = pulumi.ResourceOptions(parent=self)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": f"{NAME}-config", "namespace": args.namespace, "labels": meta_labels},
            data={"haproxy.cfg": self.config},
            opts=child,
        )
        health: k8s.core.v1.HTTPGetActionArgsDict = {"path": "/healthz", "port": lb.stats_port}
        spec: k8s.apps.v1.DaemonSetSpecArgsDict = {
            "selector": {"match_labels": selector(NAME)},
            # One node at a time: the other keeps the VIP and serves.
            "update_strategy": {
                "type": "RollingUpdate",
                "rolling_update": {"max_unavailable": 1, "max_surge": 0},
            },
            "template": {
                "metadata": {
                    "labels": meta_labels,
                    "annotations": {"checksum/config": checksum(self.config)},
                },
                "spec": {
                    "affinity": required_role(Role.LOAD_BALANCER),
                    "host_network": True,
                    # Host networking would otherwise give the node's
                    # resolv.conf, and the headless Services would not resolve.
                    "dns_policy": "ClusterFirstWithHostNet",
                    "automount_service_account_token": False,
                    "priority_class_name": "system-node-critical",
                    # Soft stop (SIGUSR1, the image's STOPSIGNAL) drains
                    # connections; hard-stop-after 30s bounds it.
                    "termination_grace_period_seconds": 35,
                    "security_context": {"seccomp_profile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": NAME,
                            "image": lb.image,
                            "args": ["haproxy", "-W", "-db", "-f", f"{CONFIG_DIR}/haproxy.cfg"],
                            "ports": [
                                {"name": "http", "container_port": lb.http_port, "host_port": lb.http_port},
                                {
                                    "name": "stats",
                                    "container_port": lb.stats_port,
                                    "host_port": lb.stats_port,
                                },
                            ],
                            "readiness_probe": {
                                "http_get": health,
                                "period_seconds": 2,
                                "failure_threshold": 1,
                            },
                            "liveness_probe": {
                                "http_get": health,
                                "period_seconds": 10,
                                "failure_threshold": 3,
                            },
                            "resources": resources(lb.resources),
                            "security_context": {
                                "run_as_user": ROOT,
                                "allow_privilege_escalation": False,
                                "privileged": False,
                                "read_only_root_filesystem": True,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                            },
                            "volume_mounts": [
                                {"name": "config", "mount_path": CONFIG_DIR, "read_only": True}
                            ],
                        }
                    ],
                    "volumes": [{"name": "config", "config_map": {"name": config_map.metadata.name}}],
                },
            },
        }
        daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={"name": NAME, "namespace": args.namespace, "labels": meta_labels},
            spec=spec,
            opts=child,
        )
        self.daemonset_name = daemonset.metadata.apply(lambda m: m.name or NAME)
        self.register_outputs({"daemonset_name": self.daemonset_name})
