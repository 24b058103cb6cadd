"""The lab's network: namespaces, a bridge, links; cutting and mending them.

A switch namespace holds a bridge; every host, the client, the DNS and
Prometheus get a veth pair, one end a bridge port, the other named like the stack's
interface inside their namespace. Nothing is added to the root namespace.
Each namespace is journalled before it is made, with its inode after.
"""

from __future__ import annotations

import os
import re

from halb.lab.base import LabError, in_ns, ip, run
from halb.lab.journal import Journal
from halb.lab.topology import LabPlan


def list_netns() -> list[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def sysctl(ns: str, *settings: str) -> None:
    run(in_ns(ns, "sysctl", "-qw", *settings))


class Network:
    def __init__(self, plan: LabPlan, journal: Journal) -> None:
        self.plan = plan
        self.journal = journal

    def _add_netns(self, ns: str) -> None:
        if ns in list_netns():
            raise LabError(f"network namespace {ns} exists already; it is not this lab's")
        self.journal.record("netns", name=ns)
        ip("netns", "add", ns)
        self.journal.record("netns", name=ns, inode=netns_inode(ns))
        ip("-n", ns, "link", "set", "lo", "up")
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")

    def build(self) -> None:
        p = self.plan
        for ns in p.namespaces:
            self._add_netns(ns)
        sw = p.switch_netns
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        # VRRP multicast must reach every port; no STP delay on a lab switch.
        ip("-n", sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0", "forward_delay", "0")
        ip("-n", sw, "link", "set", "br0", "up")
        hosts = [(n.netns, n.port, n.address, p.interface) for n in p.nodes]
        if p.router_netns and p.router_address:
            hosts.append((p.router_netns, "pR", p.router_address, "eth0"))
        else:
            hosts.append((p.client_netns, "pc", p.client_address, "eth0"))
        hosts.append((p.dns_netns, "pd", p.dns_address, "eth0"))
        if p.prometheus_netns and p.prometheus_address:
            hosts.append((p.prometheus_netns, "pp", p.prometheus_address, "eth0"))
        if p.rogue_netns and p.rogue_address:
            hosts.append((p.rogue_netns, "pr", p.rogue_address, "eth0"))
        for ns, port, addr, ifname in hosts:
            ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
            ip("-n", sw, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/{p.prefixlen}", "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
        if p.router_netns and p.router_client_address:
            self._route_through_router()
        if p.client_other_address is not None:
            ip(
                "-n",
                p.client_netns,
                "addr",
                "add",
                f"{p.client_other_address}/{p.client_prefixlen}",
                "dev",
                "eth0",
            )
        for r in p.replicas:
            # Each replica its own address, as each pod has its own IP.
            ip("-n", p.node(r.node).netns, "addr", "add", f"{r.address}/{p.prefixlen}", "dev", p.interface)

    def _route_through_router(self) -> None:
        """bgp: the client behind the router on a link of its own; the router forwards
        (in its namespace only) and spreads flows over its ECMP next hops by the
        L4 hash; the load-balancer hosts answer the client through it."""
        p = self.plan
        assert p.router_netns and p.router_client_address and p.router_address
        ip("-n", p.router_netns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
           p.client_netns)  # fmt: skip
        ip(
            "-n",
            p.router_netns,
            "addr",
            "add",
            f"{p.router_client_address}/{p.client_prefixlen}",
            "dev",
            "eth1",
        )
        ip("-n", p.router_netns, "link", "set", "eth1", "up")
        ip("-n", p.client_netns, "addr", "add", f"{p.client_address}/{p.client_prefixlen}", "dev", "eth0")
        ip("-n", p.client_netns, "link", "set", "eth0", "up")
        ip("-n", p.client_netns, "route", "add", "default", "via", str(p.router_client_address))
        sysctl(p.router_netns, "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
        for n in p.lb_nodes:
            ip("-n", n.netns, "route", "add", str(p.client_network), "via", str(p.router_address))

    def set_link(self, node: str, state: str) -> None:
        """The switch-side port: like pulling the cable, the host sees no carrier."""
        ip("-n", self.plan.switch_netns, "link", "set", self.plan.node(node).port, state)

    def link_is_up(self, node: str) -> bool:
        out = ip("-n", self.plan.switch_netns, "-o", "link", "show", self.plan.node(node).port).stdout
        flags = out.split("<", 1)[-1].split(">", 1)[0].split(",")
        return "UP" in flags

    def isolate(self, cut: bool) -> None:
        """Cut (or restore) every path between load-balancer hosts, and only those.

        Isolated bridge ports cannot reach each other but still reach every
        other port: VRRP stops while clients and apps still reach both hosts.
        """
        flag = "on" if cut else "off"
        for n in self.plan.lb_nodes:
            ip(
                "-n",
                self.plan.switch_netns,
                "link",
                "set",
                "dev",
                n.port,
                "type",
                "bridge_slave",
                "isolated",
                flag,
            )

    def partitioned(self) -> bool:
        port = self.plan.lb_nodes[0].port
        out = ip("-n", self.plan.switch_netns, "-d", "link", "show", port).stdout
        return "isolated on" in out

    def holds_vip(self, node: str) -> bool:
        n = self.plan.node(node)
        out = ip("-n", n.netns, "-4", "-o", "addr", "show", "dev", self.plan.interface, check=False).stdout
        return f" {self.plan.vip}/" in out

    def remove_vip(self, node: str) -> None:
        """What a reboot does to an address keepalived left behind."""
        vip = f"{self.plan.vip}/{self.plan.prefixlen}"
        ip("-n", self.plan.node(node).netns, "addr", "del", vip, "dev", self.plan.interface, check=False)

    def mac(self, node: str) -> str:
        out = ip("-n", self.plan.node(node).netns, "-o", "link", "show", self.plan.interface).stdout
        m = re.search(r"link/ether ([0-9a-f:]+)", out)
        return m.group(1) if m else ""

    def client_mac(self) -> str:
        out = ip("-n", self.plan.client_netns, "neigh", "show", str(self.plan.vip), check=False).stdout
        m = re.search(r"lladdr ([0-9a-f:]+)", out)
        return m.group(1) if m else ""
