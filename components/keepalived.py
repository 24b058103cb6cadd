"""Keepalived: moves the VIP to a healthy load-balancer host.

Creates: a Secret holding one keepalived.conf per load-balancer node (it may
carry the VRRPv2 auth_pass) and a host-network DaemonSet beside HAProxy whose
entrypoint picks its node's file by NODE_NAME.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import checksum, edge_pod_spec, labels, one_node_at_a_time, resources
from components.keepalived_conf import WATCH_DIR, WATCH_FILE, render_keepalived_conf
from components.settings import Settings

NAME = "keepalived"
CONFIG_DIR = "/etc/keepalived/nodes"
# What VRRP needs and nothing more:
#   NET_ADMIN     add/remove the VIP on the interface, join the VRRP multicast group
#   NET_RAW       open the raw socket for IP protocol 112 (VRRP) and send gratuitous ARP
#   NET_BROADCAST send to broadcast/multicast addresses (adverts, GARP)
CAPABILITIES = ("NET_ADMIN", "NET_BROADCAST", "NET_RAW")
WATCH = "haproxy-watch"
NOBODY = 65534
# In checksums only: a hash of the real file would let anyone who can read the
# pod template brute-force an 8-character password offline.
AUTH_PLACEHOLDER = "********"


@dataclass(frozen=True)
class KeepalivedArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    auth_pass: pulumi.Input[str] | None = None
    pull_secret: pulumi.Input[str] | None = None


def render_all(s: Settings, auth_pass: str | None) -> dict[str, str]:
    """Secret data: `<node>.conf` for every load-balancer node."""
    return {f"{node}.conf": render_keepalived_conf(s, node, auth_pass) for node in s.lb_nodes}


class Keepalived(pulumi.ComponentResource):
    """keepalived DaemonSet + per-node configs."""

    vip: str
    nodes: list[str]

    def __init__(self, name: str, args: KeepalivedArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:Keepalived", name, None, opts)
        s = args.settings
        if (args.auth_pass is None) != (s.vrrp_auth_pass is None):
            raise ValueError("auth_pass must be given exactly when settings.vrrp_auth_pass is set")
        if args.auth_pass is None:
            configs: pulumi.Input[dict[str, str]] = render_all(s, None)
        else:
            # apply on a secret stays secret: the password never leaves it in plain.
            configs = pulumi.Output.secret(args.auth_pass).apply(lambda p: render_all(s, p))
        shown = render_all(s, AUTH_PLACEHOLDER if args.auth_pass is not None else None)
        meta_labels = labels(NAME, "vip")
        child = pulumi.ResourceOptions(parent=self)
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata={"name": f"{NAME}-config", "namespace": args.namespace, "labels": meta_labels},
            type="Opaque",
            string_data=configs,
            opts=child,
        )
        containers: list[k8s.core.v1.ContainerArgsDict] = [
            {
                "name": NAME,
                "image": args.image,
                "env": [
                    {"name": "NODE_NAME", "value_from": {"field_ref": {"field_path": "spec.nodeName"}}},
                    {"name": "KEEPALIVED_VIP", "value": str(s.vip.address)},
                    {"name": "KEEPALIVED_INTERFACE", "value": s.vip.interface},
                    {"name": "KEEPALIVED_CONFIG_DIR", "value": CONFIG_DIR},
                ],
                "resources": resources(s.keepalived.resources),
                "security_context": {
                    # Capabilities are only effective for uid 0 in Kubernetes
                    # (no ambient capabilities); everything else is dropped.
                    "run_as_user": 0,
                    "privileged": False,
                    "allow_privilege_escalation": False,
                    "read_only_root_filesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
                },
                "volume_mounts": [
                    {"name": "config", "mount_path": CONFIG_DIR, "read_only": True},
                    # pid files and keepalived's runtime directory.
                    {"name": "run", "mount_path": "/run"},
                    {"name": "watch", "mount_path": WATCH_DIR},
                ],
            }
        ]
        if s.vrrp.check.watch:
            containers.append(self._watcher(s, args.image))
        volumes: list[k8s.core.v1.VolumeArgsDict] = [
            {"name": "config", "secret": {"secret_name": secret.metadata.name, "default_mode": 0o400}},
            {"name": "run", "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
            {"name": "watch", "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
        ]
        # SIGTERM makes keepalived send a priority-0 advert: the peer takes
        # over at once. The grace only has to cover that and the VIP removal.
        pod_spec = edge_pod_spec(containers, volumes, grace_s=10)
        if args.pull_secret is not None:
            pod_spec["image_pull_secrets"] = [{"name": args.pull_secret}]
        k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={"name": NAME, "namespace": args.namespace, "labels": meta_labels},
            spec=one_node_at_a_time(NAME, meta_labels, checksum(*sorted(shown.values())), pod_spec),
            opts=child,
        )
        self.vip = str(s.vip.ip)
        self.nodes = s.lb_nodes
        self.register_outputs({"vip": self.vip, "nodes": self.nodes})

    @staticmethod
    def _watcher(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
        """The haproxy-watch sidecar. It needs no privilege: it talks HTTP on the
        node's loopback (shared host network) and writes one file keepalived tracks."""
        return {
            "name": WATCH,
            "image": image,
            "command": [
                f"/usr/local/bin/{WATCH}",
                "--port",
                str(s.load_balancer.stats_port),
                "--file",
                WATCH_FILE,
            ],
            "resources": resources(s.keepalived.resources),
            "security_context": {
                "run_as_user": NOBODY,
                "run_as_group": NOBODY,
                "run_as_non_root": True,
                "privileged": False,
                "allow_privilege_escalation": False,
                "read_only_root_filesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volume_mounts": [{"name": "watch", "mount_path": WATCH_DIR}],
        }
