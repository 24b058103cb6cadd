"""frr.conf for one load-balancer host of a `bgp` stack (bgpd and bfdd, FRR 8.4).

Each host peers with every upstream router, BFD on each session. The VIP /32
is not announced by this file: the edge pod's announcer adds `network VIP/32`
while HAProxy is healthy and removes it before a drain (the same check and
semantics as keepalived's), so a host that has just started announces
nothing. Out, only the VIP (prefix-list), tagged with the stack's
communities; in, nothing: an edge host takes no routes from the routers.
"""

from __future__ import annotations

from collections.abc import Mapping

from components.settings import Settings

BFD_PROFILE = "halb"
VIP_PREFIX_LIST = "halb-vip"
OUT_MAP = "halb-vip-out"
IN_MAP = "halb-deny-in"


def vip_prefix(s: Settings) -> str:
    return f"{s.vip.ip}/32"


def render_frr_conf(s: Settings, node: str, passwords: Mapping[str, str]) -> str:
    """frr.conf for `node`; `passwords` holds exactly the peers' passwords (by address)."""
    bgp = s.bgp
    if bgp is None:
        raise ValueError("render_frr_conf needs a stack with bgp set")
    if dict(passwords) != bgp.passwords:
        raise ValueError("passwords must be exactly the stack's bgp peers' passwords")
    host = s.hosts[node]
    if host.address is None:
        raise ValueError(f"{node} has no address")
    lines = [
        f"! rancher-ha-lb: FRR for {node}; checked with `vtysh -C`",
        "frr defaults datacenter",
        f"hostname {node}",
        "log stdout informational",
        "!",
        f"ip prefix-list {VIP_PREFIX_LIST} seq 5 permit {vip_prefix(s)}",
        "!",
        f"route-map {OUT_MAP} permit 10",
        f" match ip address prefix-list {VIP_PREFIX_LIST}",
    ]
    if bgp.communities:
        lines.append(f" set community {' '.join(bgp.communities)}")
    lines += [
        "exit",
        "!",
        f"route-map {IN_MAP} deny 10",
        "exit",
        "!",
        "bfd",
        f" profile {BFD_PROFILE}",
        f"  transmit-interval {bgp.bfd.interval}",
        f"  receive-interval {bgp.bfd.interval}",
        f"  detect-multiplier {bgp.bfd.multiplier}",
        " exit",
        "exit",
        "!",
        f"router bgp {bgp.asn}",
        f" bgp router-id {host.address}",
        " no bgp default ipv4-unicast",
    ]
    for peer in bgp.peers:
        addr = str(peer.address)
        lines.append(f" neighbor {addr} remote-as {peer.asn}")
        if addr in passwords:
            lines.append(f" neighbor {addr} password {passwords[addr]}")
        lines += [
            f" neighbor {addr} update-source {host.address}",
            # Both lines, as bgpd's running config shows them: frr-reload.py
            # diffs against it, and a missing `bfd` would be a `no ... bfd`
            # (the session reset on every config change).
            f" neighbor {addr} bfd",
            f" neighbor {addr} bfd profile {BFD_PROFILE}",
        ]
    lines.append(" address-family ipv4 unicast")
    for peer in bgp.peers:
        addr = str(peer.address)
        lines += [
            f"  neighbor {addr} activate",
            f"  neighbor {addr} route-map {IN_MAP} in",
            f"  neighbor {addr} route-map {OUT_MAP} out",
        ]
    lines += [" exit-address-family", "exit", "!"]
    return "\n".join(lines) + "\n"
