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
from components.k8s import checksum, edge_pod_spec, image_tag, labels, one_node_at_a_time, resources
from components.settings import Settings

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
        container: k8s.core.v1.ContainerArgsDict = {
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
            "volume_mounts": [{"name": "config", "mount_path": CONFIG_DIR, "read_only": True}],
        }
        volumes: list[k8s.core.v1.VolumeArgsDict] = [
            {"name": "config", "config_map": {"name": config_map.metadata.name}}
        ]
        # Soft stop (SIGUSR1, the image's STOPSIGNAL) drains connections;
        # hard-stop-after 30s bounds it.
        pod_spec = edge_pod_spec([container], volumes, grace_s=35)
        daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={"name": NAME, "namespace": args.namespace, "labels": meta_labels},
            spec=one_node_at_a_time(NAME, meta_labels, checksum(self.config), pod_spec),
            opts=child,
        )
        self.daemonset_name = daemonset.metadata.apply(lambda m: m.name or NAME)
        self.register_outputs({"daemonset_name": self.daemonset_name})
