"""keepalived and its haproxy-watch sidecar in the edge pod.

`render_all` is the Secret's data (one keepalived.conf per load-balancer
node, it may carry the VRRPv2 auth_pass); the entrypoint picks its node's
file by NODE_NAME. `components/edge.py` puts the containers into the edge
DaemonSet.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import host_ip_env, resources, root_with, unprivileged
from components.keepalived_conf import (
    DRAIN_FILE,
    HANDOFF_DONE_FILE,
    HANDOFF_STARTED_FILE,
    WATCH_DIR,
    WATCH_FILE,
    render_keepalived_conf,
)
from components.settings import Settings

NAME = "keepalived"
CONFIG_DIR = "/etc/keepalived/nodes"
CONFIG_VOLUME = "keepalived-config"
RUN_VOLUME = "keepalived-run"
WATCH_VOLUME = "watch"
# What VRRP needs and nothing more (tests/test_lab_pods.py takes each one away
# in the lab and shows what breaks):
#   NET_ADMIN  add/remove the VIP on the interface
#   NET_RAW    the raw socket for IP protocol 112 (VRRP) and the packet socket for
#              gratuitous ARP
#   SETGID     keepalived calls setgroups() before every vrrp_script run; without
#              it the health check never runs and is reported as passed
# NET_ADMIN also covers the handoff (halb-keepalived): the VIP parked on lo, the
# nftables rules that keep it unannounced there and steer a peer's flows.
# Not NET_BROADCAST, which the seed asked for: Linux checks it nowhere a VRRP
# speaker goes (multicast adverts and GARP work without it; a test shows so).
CAPABILITIES = ("NET_ADMIN", "NET_RAW", "SETGID")
WATCH = "haproxy-watch"
HELPER = "/usr/local/bin/halb-keepalived"


def render_all(s: Settings, auth_pass: str | None) -> dict[str, str]:
    """Secret data: `<node>.conf` for every load-balancer node."""
    return {f"{node}.conf": render_keepalived_conf(s, node, auth_pass) for node in s.lb_nodes}


def handoff_command(s: Settings) -> list[str]:
    """The preStop (and `lab handoff`): hand the VIP over without losing a connection."""
    return [
        HELPER, "handoff", "--vip", str(s.vip.address), "--interface", s.vip.interface,
        "--drain-file", DRAIN_FILE, "--started-file", HANDOFF_STARTED_FILE, "--done-file", HANDOFF_DONE_FILE,
        "--drain-seconds", f"{s.vrrp.handoff.drain_seconds:g}",
    ]  # fmt: skip


def keepalived_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    addresses = ",".join(str(s.address(n)) for n in s.lb_nodes)
    steer = f"$(HOST_IP) {s.vrrp.handoff.port} {addresses} {s.vip.ip} {s.load_balancer.http_port}"
    return {
        "name": NAME,
        "image": image,
        "env": [
            {"name": "NODE_NAME", "value_from": {"field_ref": {"field_path": "spec.nodeName"}}},
            {"name": "KEEPALIVED_VIP", "value": str(s.vip.address)},
            {"name": "KEEPALIVED_INTERFACE", "value": s.vip.interface},
            {"name": "KEEPALIVED_CONFIG_DIR", "value": CONFIG_DIR},
            host_ip_env("HOST_IP"),
            # The steering listener: this node, its port, every LB host, the VIP, HTTP.
            {"name": "HALB_STEER", "value": steer},
        ],
        "lifecycle": {"pre_stop": {"exec_": {"command": handoff_command(s)}}},
        "resources": resources(s.keepalived.resources),
        "security_context": root_with(CAPABILITIES),
        "volume_mounts": [
            {"name": CONFIG_VOLUME, "mount_path": CONFIG_DIR, "read_only": True},
            # pid files and keepalived's runtime directory.
            {"name": RUN_VOLUME, "mount_path": "/run/keepalived"},
            {"name": WATCH_VOLUME, "mount_path": WATCH_DIR},
        ],
    }


def watch_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
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
        "security_context": unprivileged(),
        "volume_mounts": [{"name": WATCH_VOLUME, "mount_path": WATCH_DIR}],
    }
