"""The lab's plan, derived purely from a stack's Settings.

One network namespace per host, a switch namespace with a bridge, a client
namespace. keepalived and HAProxy get the configs of the same renderers the
Pulumi program uses; the one difference, how HAProxy finds app pods, is
`lab_backends` here versus `dns_backends` in the cluster. The host interface
is named as the stack's `vip.interface`, so keepalived.conf is unchanged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.haproxy_cfg import Backend, StaticBackend, StaticServer, render_haproxy_cfg
from components.keepalived_conf import render_keepalived_conf
from components.settings import Role, Settings

TEST_NETS = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
# The lab never sets a VRRP password: the lab stacks use VRRPv3.
LAB_AUTH_PLACEHOLDER = "labpass"


class LabPlanError(Exception):
    """The stack cannot be run as a lab; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Replica:
    service: str
    node: str
    port: int
    index: int


@dataclass(frozen=True)
class LabNode:
    name: str
    role: Role
    netns: str
    address: ipaddress.IPv4Address
    port: str  # the switch-side veth


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    settings: Settings
    switch_netns: str
    client_netns: str
    client_address: ipaddress.IPv4Address
    nodes: tuple[LabNode, ...]
    replicas: tuple[Replica, ...]

    @property
    def vip(self) -> ipaddress.IPv4Address:
        return self.settings.vip.ip

    @property
    def prefixlen(self) -> int:
        return self.settings.vip.address.network.prefixlen

    @property
    def interface(self) -> str:
        return self.settings.vip.interface

    @property
    def lb_nodes(self) -> list[LabNode]:
        return [n for n in self.nodes if n.role is Role.LOAD_BALANCER]

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def url(self) -> str:
        return f"http://{self.vip}:{self.settings.load_balancer.http_port}/"

    def keepalived_conf(self, node: str) -> str:
        auth = LAB_AUTH_PLACEHOLDER if self.settings.vrrp_auth_pass is not None else None
        return render_keepalived_conf(self.settings, node, auth)

    def haproxy_cfg(self) -> str:
        return render_haproxy_cfg(self.settings, lab_backends(self))

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_netns, self.client_netns, *(n.netns for n in self.nodes)]


def lab_backends(plan: LabPlan) -> dict[str, Backend]:
    """The lab's app replicas, listed: the cluster resolves them by DNS instead."""
    out: dict[str, Backend] = {}
    for svc in plan.settings.services:
        servers = tuple(
            StaticServer(f"{r.node}-{r.index}", str(plan.node(r.node).address), r.port)
            for r in plan.replicas
            if r.service == svc.name
        )
        out[svc.name] = StaticBackend(servers)
    return out


def place_replicas(s: Settings) -> list[Replica]:
    """Replica i on apps host i mod n: spread apart, like the pod anti-affinity."""
    apps = s.app_nodes
    return [
        Replica(svc.name, apps[i % len(apps)], svc.port, i) for svc in s.services for i in range(svc.replicas)
    ]


def _in_test_net(addr: ipaddress.IPv4Address) -> bool:
    return any(addr in net for net in TEST_NETS)


def plan_lab(s: Settings, prefix: str = "halb") -> LabPlan:
    """The lab for `s`, or LabPlanError naming what keeps it from running here."""
    problems: list[str] = []
    net = s.vip.address.network
    if not any(net.subnet_of(t) for t in TEST_NETS):
        problems.append(
            f"rancher-ha-lb:vip.address: {s.vip.address} is outside the lab's TEST-NET ranges "
            f"({', '.join(map(str, TEST_NETS))}); use the lab stack or such addresses"
        )
    used = {s.vip.ip}
    addresses: dict[str, ipaddress.IPv4Address] = {}
    for name, host in s.hosts.items():
        if host.address is not None:
            if not _in_test_net(host.address) or host.address not in net:
                problems.append(
                    f"rancher-ha-lb:hosts.{name}.address: {host.address} must be in the VIP's "
                    f"TEST-NET subnet {net} for the lab"
                )
            addresses[name] = host.address
            used.add(host.address)
    free = (a for a in reversed(list(net.hosts())) if a not in used)
    for name in sorted(s.hosts):
        if name not in addresses:
            addresses[name] = next(free)
            used.add(addresses[name])
    client = next(free)

    replicas = place_replicas(s)
    seen: dict[tuple[str, int], str] = {}
    for r in replicas:
        key = (r.node, r.port)
        if key in seen and seen[key] != r.service:
            problems.append(
                f"rancher-ha-lb:services: {seen[key]} and {r.service} both listen on port {r.port} "
                f"of {r.node}; give them distinct ports for the lab"
            )
        seen[key] = r.service
    if problems:
        raise LabPlanError(problems)

    nodes = tuple(
        LabNode(
            name=name,
            role=s.hosts[name].role,
            netns=f"{prefix}-{name}",
            address=addresses[name],
            port=f"p{i}",
        )
        for i, name in enumerate(sorted(s.hosts))
    )
    return LabPlan(
        prefix=prefix,
        settings=s,
        switch_netns=f"{prefix}-switch",
        client_netns=f"{prefix}-client",
        client_address=client,
        nodes=nodes,
        replicas=tuple(replicas),
    )
