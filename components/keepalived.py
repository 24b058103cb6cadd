"""keepalived and its haproxy-watch sidecar in the edge pod.

`render_all` is the Secret's data (one keepalived.conf per load-balancer
node, it may carry the VRRPv2 auth_pass, and that node's nftables table); the entrypoint picks its node's
file by NODE_NAME. `components/edge.py` puts the containers into the edge
DaemonSet.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.edge_firewall import render_edge_nft, traffic_ports
from components.edge_pod import (
    DRAIN_FILE,
    HALB_KEEPALIVED,
    HANDOFF_DONE_FILE,
    HANDOFF_KEY_ENV,
    HANDOFF_SECRET,
    HANDOFF_SECRET_KEY,
    HANDOFF_STARTED_FILE,
    HAPROXY_DOWN_FILE,
    HOST_IP,
    KEEPALIVED,
    KEEPALIVED_CONFIG_DIR,
    KEEPALIVED_CONFIG_DIR_ENV,
    KEEPALIVED_CONFIG_VOLUME,
    KEEPALIVED_INTERFACE,
    KEEPALIVED_RUN_DIR,
    KEEPALIVED_RUN_VOLUME,
    KEEPALIVED_VIP,
    NODE_NAME,
    SHARED_DIR,
    SHARED_VOLUME,
    STEER,
    STEER_ENV,
    STEER_STATE_FILE,
    TOLD_FILE,
    WATCH,
    WATCH_BIN,
)
from components.k8s import field_env, host_ip_env, resources, root_with, unprivileged
from components.keepalived_conf import render_keepalived_conf
from components.load_balancer import drain_timeout_s
from components.settings import Settings

# What VRRP needs and nothing more (tests/test_lab_pods.py takes each one away
# in the lab and shows what breaks):
#   NET_ADMIN  add/remove the VIP on the interface
#   NET_RAW    the raw socket for IP protocol 112 (VRRP) and the packet socket for
#              gratuitous ARP
#   SETGID     keepalived calls setgroups() before every vrrp_script run; without
#              it the health check never runs and is reported as passed
#   SYS_NICE   SCHED_RR for the VRRP process (vrrp_rt_priority): adverts on time
#              while HAProxy saturates the host's CPU; without it keepalived runs
#              at normal priority and an overloaded MASTER loses the VIP
# NET_ADMIN also covers the edge table (components/edge_firewall.py) and the
# handoff (halb-keepalived): the VIP parked on lo, the nftables rules that keep
# it unannounced there and steer a peer's flows.
# Not NET_BROADCAST, which the seed asked for: Linux checks it nowhere a VRRP
# speaker goes (multicast adverts and GARP work without it; a test shows so).
# No answer this long and haproxy-watch calls HAProxy hung (down); a slower but
# answered /healthz is busy, never down. The poll's default fall matches it.
WATCH_HUNG_S = 2.0
CAPABILITIES = ("NET_ADMIN", "NET_RAW", "SETGID", "SYS_NICE")
# The steer container (BGP mode): NET_ADMIN for its nftables table (the `dup to`
# rules), nothing else; its UDP port is above 1024 and it reads the edge table's
# counters with the same capability.
STEER_CAPABILITIES = ("NET_ADMIN",)


def render_all(s: Settings, auth_pass: str | None) -> dict[str, str]:
    """Secret data: `<node>.conf` and `<node>.nft` (its firewall table) for every load-balancer node."""
    data: dict[str, str] = {}
    for node in s.lb_nodes:
        data[f"{node}.conf"] = render_keepalived_conf(s, node, auth_pass)
        data[f"{node}.nft"] = render_edge_nft(s, node)
    return data


def handoff_command(s: Settings, pod_stops: bool = True) -> list[str]:
    """The preStop (and, as `pod_stops=False`, `lab handoff`): hand the VIP over
    without losing a connection; a stopping pod then removes its nftables table."""
    return [
        HALB_KEEPALIVED, "handoff", "--vip", str(s.vip.address), "--interface", s.vip.interface,
        "--drain-file", DRAIN_FILE, "--started-file", HANDOFF_STARTED_FILE, "--done-file", HANDOFF_DONE_FILE,
        "--drain-seconds", f"{s.vrrp.handoff.drain_seconds:g}",
        *(["--release-firewall"] if pod_stops else []),
    ]  # fmt: skip


def steer_env(s: Settings) -> list[k8s.core.v1.EnvVarArgsDict]:
    """The steering listener's fields, a variable each (`$(HOST_IP)`: the kubelet expands it)."""
    values = {
        "listen": f"$({HOST_IP})",
        "port": str(s.vrrp.handoff.port),
        "peers": ",".join(str(s.address(n)) for n in s.lb_nodes),
        "vip": str(s.vip.ip),
        # Every traffic port: a handoff keeps HTTPS and TCP connections as it keeps HTTP's.
        "ports": ",".join(str(p) for p in traffic_ports(s)),
        "state_file": STEER_STATE_FILE,
    }
    return [{"name": STEER_ENV[field], "value": value} for field, value in values.items()]


def handoff_key_env() -> k8s.core.v1.EnvVarArgsDict:
    """The handoff messages' HMAC key, from the Secret the Edge mints (never a literal)."""
    return {
        "name": HANDOFF_KEY_ENV,
        "value_from": {"secret_key_ref": {"name": HANDOFF_SECRET, "key": HANDOFF_SECRET_KEY}},
    }


def steer_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """BGP mode's steer listener, on its own: when a peer withdraws, it steers that peer's
    mid-stream flows back to it for the drain; when this host drains, it tells the peers
    first (halb-bgp waits for TOLD_FILE before withdrawing)."""
    command = [
        HALB_KEEPALIVED, "steer", "--listen", f"$({HOST_IP})", "--port", str(s.vrrp.handoff.port),
        "--peers", ",".join(str(s.address(n)) for n in s.lb_nodes), "--vip", str(s.vip.ip),
        "--ports", ",".join(str(p) for p in traffic_ports(s)), "--interface", s.vip.interface,
        "--state-file", STEER_STATE_FILE, "--drain-file", DRAIN_FILE, "--told-file", TOLD_FILE,
        "--drain-seconds", f"{s.vrrp.handoff.drain_seconds:g}",
    ]  # fmt: skip
    hold = [
        HALB_KEEPALIVED,
        "wait-done",
        "--done-file",
        HANDOFF_DONE_FILE,
        "--timeout",
        str(drain_timeout_s(s)),
    ]
    return {
        "name": STEER,
        "image": image,
        "command": command,
        "env": [host_ip_env(HOST_IP), handoff_key_env()],
        # The kubelet stops every container at once: steer stays until the frr container's
        # preStop has drained, or it would be gone before it told the peers.
        "lifecycle": {"pre_stop": {"exec_": {"command": hold}}},
        "resources": resources(s.keepalived.resources),
        "security_context": root_with(STEER_CAPABILITIES),
        "volume_mounts": [{"name": SHARED_VOLUME, "mount_path": SHARED_DIR}],
    }


def keepalived_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    return {
        "name": KEEPALIVED,
        "image": image,
        "env": [
            field_env(NODE_NAME, "spec.nodeName"),
            {"name": KEEPALIVED_VIP, "value": str(s.vip.address)},
            {"name": KEEPALIVED_INTERFACE, "value": s.vip.interface},
            {"name": KEEPALIVED_CONFIG_DIR_ENV, "value": KEEPALIVED_CONFIG_DIR},
            host_ip_env(HOST_IP),
            # The steering listener: this node, its port, every LB host, the VIP, the traffic ports.
            *steer_env(s),
            handoff_key_env(),
        ],
        "lifecycle": {"pre_stop": {"exec_": {"command": handoff_command(s)}}},
        "resources": resources(s.keepalived.resources),
        "security_context": root_with(CAPABILITIES),
        "volume_mounts": [
            {"name": KEEPALIVED_CONFIG_VOLUME, "mount_path": KEEPALIVED_CONFIG_DIR, "read_only": True},
            # pid files and keepalived's runtime directory.
            {"name": KEEPALIVED_RUN_VOLUME, "mount_path": KEEPALIVED_RUN_DIR},
            {"name": SHARED_VOLUME, "mount_path": SHARED_DIR},
        ],
    }


def watch_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """The haproxy-watch sidecar. It needs no privilege: it talks HTTP on the
    node's loopback (shared host network) and writes one file keepalived tracks."""
    return {
        "name": WATCH,
        "image": image,
        "command": [
            WATCH_BIN,
            "--port",
            str(s.load_balancer.stats_port),
            "--file",
            HAPROXY_DOWN_FILE,
            "--timeout",
            f"{WATCH_HUNG_S:g}",
        ],
        "resources": resources(s.keepalived.resources),
        "security_context": unprivileged(),
        "volume_mounts": [{"name": SHARED_VOLUME, "mount_path": SHARED_DIR}],
    }
