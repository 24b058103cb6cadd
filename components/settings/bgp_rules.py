"""Rules across BGP settings: what a `bgp` stack must hold together (called from rules.RULES)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from components.settings.messages import key
from components.settings.models import Settings
from components.values import short_name


def _vip(s: Settings) -> list[str]:
    if s.bgp is None or s.vip.address.network.prefixlen == 32:
        return []
    return [
        f"{key('vip')}.address: {s.vip.address}; with {key('bgp')} the VIP is announced as a /32 "
        f"on each host's lo, write {s.vip.ip}/32"
    ]


def _peers(s: Settings) -> list[str]:
    if s.bgp is None:
        return []
    problems: list[str] = []
    hosts = {h.address: n for n, h in s.hosts.items() if h.address is not None}
    seen: set[ipaddress.IPv4Address] = set()
    for i, peer in enumerate(s.bgp.peers):
        where = f"{key('bgp')}.peers[{i}].address"
        if peer.address in seen:
            problems.append(f"{where}: {peer.address} is listed twice; one entry per router")
        seen.add(peer.address)
        if peer.address == s.vip.ip:
            problems.append(f"{where}: {peer.address} is the VIP itself; a peer is an upstream router")
        elif peer.address in hosts:
            problems.append(
                f"{where}: {peer.address} is the address of host {short_name(hosts[peer.address])}; "
                "a peer is an upstream router, not a cluster node"
            )
    return problems


def _communities(s: Settings) -> list[str]:
    if s.bgp is None:
        return []
    dup = sorted({c for c in s.bgp.communities if s.bgp.communities.count(c) > 1})
    if dup:
        return [f"{key('bgp')}.communities: {', '.join(dup)} listed more than once"]
    return []


def _no_vrrp(s: Settings) -> list[str]:
    if s.bgp is not None and s.vrrp_auth_pass is not None:
        return [
            f"{key('vrrpAuthPass')}: a VRRP password, but with {key('bgp')} no VRRP runs; remove one of them"
        ]
    return []


RULES: tuple[Callable[[Settings], list[str]], ...] = (_vip, _peers, _communities, _no_vrrp)
