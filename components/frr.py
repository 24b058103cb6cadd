"""FRR in the edge pod of a `bgp` stack: the container, its Secret, its preStop.

In BGP mode every load-balancer host serves at once: its `frr` container
(images/frr: zebra, bgpd, bfdd, and halb-bgp, the announcer, as PID 1)
announces the VIP /32 to the stack's routers while this host's HAProxy is
healthy and not draining (the same check, `vrrp.check`, and the same drain
as keepalived's), and withdraws it first when the pod goes. `render_all` is
the Secret's data: each host's frr.conf (with the peers' passwords) and its
nftables table; `components/edge.py` puts the container into the DaemonSet
in place of keepalived and the VRRP exporter.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.edge_firewall import render_edge_nft
from components.edge_pod import (
    BGP_METRICS_PORT_NAME,
    BGP_STATE_FILE,
    DRAIN_FILE,
    FRR,
    FRR_CONFIG_DIR,
    FRR_CONFIG_VOLUME,
    FRR_ETC_DIR,
    FRR_ETC_VOLUME,
    FRR_RUN_DIR,
    FRR_RUN_VOLUME,
    HALB_BGP,
    HANDOFF_DONE_FILE,
    HANDOFF_STARTED_FILE,
    HAPROXY_DOWN_FILE,
    HOST_IP,
    NODE_NAME,
    SHARED_DIR,
    SHARED_VOLUME,
    STEER_STATE_FILE,
    TOLD_FILE,
)
from components.frr_conf import render_frr_conf
from components.k8s import field_env, host_ip_env, resources, root_with
from components.keepalived_conf import health_url
from components.settings import Settings

# FRR 8.4's privilege code (lib/privs.c, zprivs_caps_init) sets each daemon's
# permitted capabilities to its fixed list and exits when one is missing
# ("privs_init: initial cap_set_proc failed"): zebra wants NET_ADMIN, NET_RAW
# and SYS_ADMIN, bgpd those and NET_BIND_SERVICE, bfdd NET_BIND_SERVICE,
# NET_RAW and SYS_ADMIN. So all four, each shown necessary by a lab test that
# takes it away. What they are used for here:
#   NET_ADMIN         the VIP on lo, the nftables tables (the edge's, the ARP
#                     rule), TCP MD5 keys on bgpd's sockets
#   NET_BIND_SERVICE  bgpd listens on 179
#   NET_RAW           bfdd's and zebra's raw sockets
#   SYS_ADMIN         FRR's network-namespace (VRF) switching, unused here:
#                     FRR refuses to start without it (MetalLB's FRR pod adds it too)
# No SETUID/SETGID: the daemons stay uid 0 (-u root), so vtysh, which has no
# CAP_DAC_OVERRIDE either, reaches their sockets.
CAPABILITIES = ("NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN")


def render_all(s: Settings, passwords: Mapping[str, str]) -> dict[str, str]:
    """Secret data: `<node>.conf` (frr.conf) and `<node>.nft` (its firewall table) for every LB host."""
    data: dict[str, str] = {}
    for node in s.lb_nodes:
        data[f"{node}.conf"] = render_frr_conf(s, node, passwords)
        data[f"{node}.nft"] = render_edge_nft(s, node)
    return data


def withdraw_command(s: Settings) -> list[str]:
    """The preStop (and `lab handoff` in BGP mode): withdraw the VIP, then drain."""
    return [
        HALB_BGP, "withdraw", "--drain-file", DRAIN_FILE, "--state-file", BGP_STATE_FILE,
        "--started-file", HANDOFF_STARTED_FILE, "--done-file", HANDOFF_DONE_FILE,
        "--drain-seconds", f"{s.vrrp.handoff.drain_seconds:g}",
    ]  # fmt: skip


def run_args(s: Settings) -> list[str]:
    """halb-bgp run's flags (the image's entrypoint); `$(VAR)`: the kubelet expands it."""
    assert s.bgp is not None
    chk = s.vrrp.check
    args = [
        "--vip", str(s.vip.ip), "--asn", str(s.bgp.asn),
        "--config", f"{FRR_CONFIG_DIR}/$({NODE_NAME}).conf",
        "--firewall", f"{FRR_CONFIG_DIR}/$({NODE_NAME}).nft",
        "--listen", f"$({HOST_IP})", "--bfd",
        "--health-url", health_url(s),
        "--interval", f"{chk.interval:g}", "--timeout", f"{chk.timeout:g}",
        "--fall", str(chk.fall), "--rise", str(chk.rise),
        "--drain-file", DRAIN_FILE, "--state-file", BGP_STATE_FILE,
        # /metrics on the host's address and loopback, never the VIP (on lo: 0.0.0.0 would answer there).
        "--metrics-listen", f"$({HOST_IP})", "--metrics-listen", "127.0.0.1",
        "--metrics-port", str(s.vrrp.metrics_port),
        # A drain withdraws once the steer container told the peers to steer back here;
        # its counts are served on /metrics.
        "--told-file", TOLD_FILE, "--steer-state-file", STEER_STATE_FILE,
    ]  # fmt: skip
    if chk.watch:
        args += ["--down-file", HAPROXY_DOWN_FILE]
    return args


def frr_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    port = s.vrrp.metrics_port
    metrics_port: k8s.core.v1.ContainerPortArgsDict = {
        "name": BGP_METRICS_PORT_NAME, "container_port": port, "host_port": port, "protocol": "TCP",
    }  # fmt: skip
    return {
        "name": FRR,
        "image": image,
        "args": run_args(s),
        "env": [field_env(NODE_NAME, "spec.nodeName"), host_ip_env(HOST_IP)],
        "ports": [metrics_port],
        "lifecycle": {"pre_stop": {"exec_": {"command": withdraw_command(s)}}},
        "resources": resources(s.frr.resources),
        "security_context": root_with(CAPABILITIES),
        "volume_mounts": [
            {"name": FRR_CONFIG_VOLUME, "mount_path": FRR_CONFIG_DIR, "read_only": True},
            {"name": FRR_ETC_VOLUME, "mount_path": FRR_ETC_DIR},
            {"name": FRR_RUN_VOLUME, "mount_path": FRR_RUN_DIR},
            {"name": SHARED_VOLUME, "mount_path": SHARED_DIR},
        ],
    }


def frr_volumes(secret_name: pulumi.Input[str]) -> list[k8s.core.v1.VolumeArgsDict]:
    """The configs (0400: only this root reads them, they hold the passwords) and FRR's two emptyDirs."""
    return [
        {"name": FRR_CONFIG_VOLUME, "secret": {"secret_name": secret_name, "default_mode": 0o400}},
        {"name": FRR_ETC_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
        {"name": FRR_RUN_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
    ]
