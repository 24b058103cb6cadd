"""The lab's plan, derived purely from a stack's Settings.

One network namespace per host of the stack, a switch namespace with a
bridge, a client namespace, a cluster-DNS namespace and, when the stack
enables monitoring, a Prometheus namespace (halb/lab/prometheus.py). Load-balancer hosts
run the edge pod from the rendered manifests; apps hosts run the stand-in app,
one replica per address (as pods have their own IPs), placed like the
Deployment's anti-affinity spreads them. The DNS stand-in answers each
service's headless name with its replicas' addresses, so HAProxy runs the
cluster's haproxy.cfg unchanged. Namespace names carry the lab's random id,
so the lab can never take a namespace it did not make for its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.haproxy_cfg import service_fqdn
from components.k8s import HOSTNAME_LABEL, ROLE_LABEL
from components.problems import InputError
from components.settings import Role, Settings

TEST_NETS = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
# Linux names a network namespace by a file in /run/netns: at most 255 bytes.
MAX_NETNS = 255
PROMETHEUS_PORT = 9090
# With bgp, the client's own TEST-NET behind the router: /24, the router .1, the client .2 and .3.
CLIENT_PREFIXLEN = 24


class LabPlanError(InputError):
    """The stack cannot be run as a lab; one line per problem, each naming its key."""


@dataclass(frozen=True)
class Replica:
    service: str
    node: str
    port: int
    index: int
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class LabNode:
    name: str
    role: Role
    netns: str
    address: ipaddress.IPv4Address
    port: str  # the switch-side veth

    @property
    def labels(self) -> dict[str, str]:
        """The node's labels as the program's HostLabels leave them."""
        return {ROLE_LABEL: self.role.value, HOSTNAME_LABEL: self.name}


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    lab_id: str
    settings: Settings
    switch_netns: str
    client_netns: str
    client_address: ipaddress.IPv4Address
    dns_netns: str
    dns_address: ipaddress.IPv4Address
    nodes: tuple[LabNode, ...]
    replicas: tuple[Replica, ...]
    # Only when the stack's monitoring is enabled, as the cluster's Prometheus
    # scrapes the tier only then.
    prometheus_netns: str | None = None
    prometheus_address: ipaddress.IPv4Address | None = None
    # A second source in the client namespace (`curl --interface`): a stack's
    # allowFrom can admit one client address and refuse the other.
    client_other_address: ipaddress.IPv4Address | None = None
    # A host on the load-balancer segment that is not a peer: the hostile
    # drills (`lab fault rogue-vrrp`, `forged-handoff`) send from it.
    rogue_netns: str | None = None
    rogue_address: ipaddress.IPv4Address | None = None
    # With bgp: the upstream router (FRR, halb/lab/router.py) between the
    # client and the hosts. Its address on the hosts' segment is the stack's
    # one peer; the client sits behind it on a TEST-NET of its own, so every
    # request to the VIP takes the router's ECMP routes.
    router_netns: str | None = None
    router_address: ipaddress.IPv4Address | None = None
    router_client_address: ipaddress.IPv4Address | None = None
    # The hosts' segment (VRRP: the VIP's subnet; BGP: the peer's /24).
    segment: ipaddress.IPv4Network | None = None

    @property
    def vip(self) -> ipaddress.IPv4Address:
        return self.settings.vip.ip

    @property
    def bgp(self) -> bool:
        return self.router_netns is not None

    @property
    def prefixlen(self) -> int:
        """The hosts' segment's (with VRRP, the VIP's too)."""
        net = self.segment or self.settings.vip.address.network
        return net.prefixlen

    @property
    def client_prefixlen(self) -> int:
        return CLIENT_PREFIXLEN if self.bgp else self.prefixlen

    @property
    def client_network(self) -> ipaddress.IPv4Network | None:
        """bgp: the client's own net behind the router (None: the client is on the segment)."""
        if self.router_client_address is None:
            return None
        return ipaddress.IPv4Network(f"{self.router_client_address}/{CLIENT_PREFIXLEN}", strict=False)

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

    @property
    def prometheus_url(self) -> str | None:
        """Prometheus's web UI and API, as the client namespace reaches it."""
        if self.prometheus_address is None:
            return None
        return f"http://{self.prometheus_address}:{PROMETHEUS_PORT}"

    @property
    def namespaces(self) -> list[str]:
        prom = [self.prometheus_netns] if self.prometheus_netns else []
        rogue = [self.rogue_netns] if self.rogue_netns else []
        router = [self.router_netns] if self.router_netns else []
        return [
            self.switch_netns,
            self.client_netns,
            self.dns_netns,
            *prom,
            *rogue,
            *router,
            *(n.netns for n in self.nodes),
        ]

    def dns_records(self) -> dict[str, list[str]]:
        """What the cluster DNS answers: each headless Service -> its pods' addresses."""
        s = self.settings
        return {
            service_fqdn(s, svc): [str(r.address) for r in self.replicas if r.service == svc.name]
            for svc in s.services
        }

    def search_domains(self, namespace: str) -> list[str]:
        """The kubelet's ClusterFirst search path for a pod in `namespace`."""
        domain = self.settings.cluster_domain
        return [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]


def app_command(s: Settings, r: Replica, python: str) -> list[str]:
    """The Python stand-in for replica `r`, speaking what the service's edge
    config expects: a TCP echo for a TCP-only service, PROXY v2 first where
    the edge sends it (`proxyProtocol`)."""
    svc = next(x for x in s.services if x.name == r.service)
    cmd = [python, "-m", "halb.lab.app", "--node", r.node, "--service", r.service,
           "--replica", str(r.index), "--address", str(r.address), "--port", str(r.port)]  # fmt: skip
    if not svc.http:
        cmd.append("--tcp-echo")
    if svc.proxy_protocol:
        cmd.append("--proxy-protocol")
    return cmd


def place_replicas(s: Settings) -> list[tuple[str, str, int, int]]:
    """(service, node, port, index): replica i on apps host i mod n, spread apart
    as the pod anti-affinity prefers."""
    apps = s.app_nodes
    return [(svc.name, apps[i % len(apps)], svc.port, i) for svc in s.services for i in range(svc.replicas)]


def _in_test_net(addr: ipaddress.IPv4Address) -> bool:
    return any(addr in net for net in TEST_NETS)


def netns_name(prefix: str, lab_id: str, host: str) -> str:
    return f"{prefix}-{lab_id}-{host}"


def plan_lab(s: Settings, prefix: str = "halb", lab_id: str = "0") -> LabPlan:
    """The lab for `s`, or LabPlanError naming what keeps it from running here."""
    problems: list[str] = []
    if not any(s.vip.address.network.subnet_of(t) for t in TEST_NETS):
        problems.append(
            f"rancher-ha-lb:vip.address: {s.vip.address} is outside the lab's TEST-NET ranges "
            f"({', '.join(map(str, TEST_NETS))}); the lab only uses documentation addresses"
        )
    net, router, client_net = _segment(s, problems)
    used = {s.vip.ip, net.network_address, net.broadcast_address, *([router] if router else [])}
    addresses: dict[str, ipaddress.IPv4Address] = {}
    # Load-balancer hosts first: an apps host on one of their addresses is the one to blame.
    for name, host in sorted(s.hosts.items(), key=lambda kv: (kv[1].role is not Role.LOAD_BALANCER, kv[0])):
        if host.address is None:
            continue
        if not _in_test_net(host.address) or host.address not in net:
            problems.append(
                f"rancher-ha-lb:hosts.{name}.address: {host.address} must be in "
                f"{'the VIP' if s.bgp is None else 'the bgp peer'}'s subnet {net}, itself a TEST-NET range, "
                "for the lab"
            )
        elif host.address in used:
            owner = next((n for n, a in addresses.items() if a == host.address), "the VIP")
            problems.append(
                f"rancher-ha-lb:hosts.{name}.address: {host.address} is also {owner}'s; "
                "every lab host needs its own address"
            )
        addresses[name] = host.address
        used.add(host.address)
    for name in sorted(s.hosts):
        if len(netns_name(prefix, lab_id, name)) > MAX_NETNS:
            problems.append(f"rancher-ha-lb:hosts.{name}: too long a name for a lab network namespace")
    placed = place_replicas(s)
    prom = s.monitoring.enabled
    need = sum(1 for n in s.hosts if n not in addresses) + len(placed) + 4 + prom  # + 2 client, DNS, rogue
    free = [a for a in reversed(list(net.hosts())) if a not in used]
    if len(free) < need:
        problems.append(
            f"rancher-ha-lb:vip.address: the lab needs {need} free addresses in {net} "
            f"(hosts without one, {len(placed)} app replicas, two client addresses, DNS, a rogue host"
            f"{', Prometheus' if prom else ''}); it has {len(free)}"
        )
    if problems:
        raise LabPlanError(problems)
    pool = iter(free)
    for name in sorted(s.hosts):
        if name not in addresses:
            addresses[name] = next(pool)
    client, dns = next(pool), next(pool)
    prometheus = next(pool) if prom else None
    replicas = tuple(Replica(svc, node, port, i, next(pool)) for svc, node, port, i in placed)
    client_other = next(pool)  # late: the addresses before it stay where they were
    rogue = next(pool)  # after it, for the same reason
    if client_net is not None:  # bgp: the client behind the router, on its own net
        router_client, client, client_other = (client_net.network_address + i for i in (1, 2, 3))
    nodes = tuple(
        LabNode(
            name=name,
            role=s.hosts[name].role,
            netns=netns_name(prefix, lab_id, name),
            address=addresses[name],
            port=f"p{i}",
        )
        for i, name in enumerate(sorted(s.hosts))
    )
    return LabPlan(
        prefix=prefix,
        lab_id=lab_id,
        settings=s,
        switch_netns=f"{prefix}-{lab_id}~switch",
        client_netns=f"{prefix}-{lab_id}~client",
        client_address=client,
        dns_netns=f"{prefix}-{lab_id}~dns",
        dns_address=dns,
        nodes=nodes,
        replicas=replicas,
        prometheus_netns=f"{prefix}-{lab_id}~prom" if prom else None,
        prometheus_address=prometheus,
        client_other_address=client_other,
        rogue_netns=f"{prefix}-{lab_id}~rogue",
        rogue_address=rogue,
        router_netns=f"{prefix}-{lab_id}~router" if router else None,
        router_address=router,
        router_client_address=router_client if client_net is not None else None,
        segment=net,
    )


def _segment(
    s: Settings, problems: list[str]
) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None, ipaddress.IPv4Network | None]:
    """The hosts' segment; with bgp also the router's address on it and the client's net.

    VRRP: the VIP's subnet. BGP: the /24 of the one peer (the lab's router),
    the VIP a /32 outside it, the client on the TEST-NET neither uses."""
    if s.bgp is None:
        return s.vip.address.network, None, None
    peers = s.bgp.peers
    if len(peers) != 1:
        problems.append(
            f"rancher-ha-lb:bgp.peers: the lab runs one upstream router; give exactly one peer "
            f"(have {len(peers)})"
        )
    router = peers[0].address
    net = ipaddress.IPv4Network(f"{router}/24", strict=False)
    if not _in_test_net(router):
        problems.append(
            f"rancher-ha-lb:bgp.peers[0].address: {router} is outside the lab's TEST-NET ranges; "
            "the lab's router takes it on the hosts' segment"
        )
    if s.vip.ip in net:
        problems.append(
            f"rancher-ha-lb:vip.address: {s.vip.address} is on the hosts' segment {net}; with bgp the "
            "lab routes the VIP, so give it another TEST-NET range"
        )
    free = [t for t in TEST_NETS if not t.overlaps(net) and s.vip.ip not in t]
    return net, router, (free[0] if free else None)
