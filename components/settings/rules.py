"""Rules that span fields: the design's invariants, one function per topic.

`problems` runs every rule in a fixed order (the order messages are printed
in); a new rule is a function here and a line in `RULES`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from components.settings import bgp_rules, capacity, service_rules, tls_rules, vrrp_rules
from components.settings.messages import key
from components.settings.models import Resources, Role, Settings
from components.values import (
    VIP_PREFIX,
    duration_seconds,
    is_dns_subdomain,
    quantity,
    short_name,
    show,
)

# Namespaces every cluster already has, or Rancher manages.
_RESERVED_NAMESPACE = re.compile(r"^(default|kube-.*|cattle-.*)$")


def _host_count(s: Settings) -> list[str]:
    problems: list[str] = []
    if len(s.lb_nodes) < 2:
        problems.append(
            f"{key('hosts')}: {len(s.lb_nodes)} load-balancer host(s); at least 2 are needed "
            "for the VIP to fail over"
        )
    if not s.app_nodes:
        problems.append(f"{key('hosts')}: no 'apps' host; at least 1 is needed to run services")
    return problems


def _node_names(s: Settings) -> list[str]:
    problems: list[str] = []
    for node in s.hosts:
        where = f"{key('hosts')}.{short_name(node)}"
        # An LB host's config is the Secret key `<node>.conf`: at most 253 characters.
        limit = 248 if s.hosts[node].role == Role.LOAD_BALANCER else 253
        if len(node) > limit:
            who = "a load-balancer host's name" if limit == 248 else "a node name"
            why = (
                " (its keepalived config is the Secret key '<node>.conf', at most 253)"
                if limit == 248
                else ""
            )
            problems.append(f"{where}: {len(node)} characters; {who} may have at most {limit}{why}")
        elif not is_dns_subdomain(node):
            problems.append(
                f"{where}: not a Kubernetes node name (lower-case DNS subdomain: labels of a-z, 0-9 "
                "and '-' joined by '.', each starting and ending alphanumeric)"
            )
    return problems


def _priorities(s: Settings) -> list[str]:
    problems: list[str] = []
    prios: dict[int, str] = {}
    for node in s.lb_nodes:
        p = s.priority(node)
        where = f"{key('hosts')}.{short_name(node)}.priority"
        if not 1 <= p <= 254:
            problems.append(f"{where}: default {p} is not in 1..254; set it")
        if p in prios:
            problems.append(
                f"{where}: {p} is also {short_name(prios[p])}'s; priorities must "
                "be distinct so the cold-start election is not arbitrary"
            )
        prios[p] = node
    return problems


def _addresses(s: Settings) -> list[str]:
    """Each host its own address; load-balancer hosts inside the VIP's subnet."""
    problems: list[str] = []
    net = s.vip.address.network
    seen: dict[ipaddress.IPv4Address, str] = {}
    speakers = "BGP speakers" if s.bgp is not None else "VRRP peers"
    for node in s.lb_nodes:
        host = s.hosts[node]
        where = f"{key('hosts')}.{short_name(node)}.address"
        if host.address is None:
            problems.append(f"{where}: missing (required for load-balancer hosts: {speakers})")
            continue
        if host.address in seen:
            problems.append(
                f"{where}: {host.address} is also the address of {short_name(seen[host.address])}"
            )
        seen.setdefault(host.address, node)
        # With BGP the VIP is a /32 on lo, announced through routers: not on the hosts' subnet.
        if s.bgp is None and net.prefixlen != 32 and host.address not in net:
            problems.append(f"{where}: {host.address} is outside the VIP's subnet {net}")
        if host.address == s.vip.ip:
            problems.append(f"{where}: {host.address} is the VIP itself; use another address")
        if s.bgp is None and host.address in (net.network_address, net.broadcast_address):
            problems.append(f"{where}: {host.address} is the subnet's network/broadcast address")
    # Apps hosts after the load-balancer hosts, so the apps host is the one blamed.
    for node in s.app_nodes:
        addr = s.hosts[node].address
        where = f"{key('hosts')}.{short_name(node)}.address"
        if addr is None:
            continue
        if addr == s.vip.ip:
            problems.append(f"{where}: {addr} is the VIP itself")
        elif addr in seen:
            problems.append(f"{where}: {addr} is also the address of {short_name(seen[addr])}")
        seen.setdefault(addr, node)
    return problems


def _vip(s: Settings) -> list[str]:
    net = s.vip.address.network
    if s.bgp is None and net.prefixlen == 32:
        return [
            f"{key('vip')}.address: prefix /32 is not allowed (/{VIP_PREFIX[0]}../{VIP_PREFIX[1]}: "
            f"a subnet the VIP shares with the load-balancer hosts); a /32 VIP is routed: set {key('bgp')}"
        ]
    if s.bgp is None and s.vip.ip in (net.network_address, net.broadcast_address):
        return [f"{key('vip')}.address: {s.vip.address} is the subnet's network/broadcast address"]
    return []


def _namespaces(s: Settings) -> list[str]:
    problems: list[str] = []
    for name, ns in (("namespace", s.namespace), ("edgeNamespace", s.edge_namespace_setting)):
        if ns is not None and _RESERVED_NAMESPACE.fullmatch(ns):
            problems.append(
                f"{key(name)}: {show(ns)} belongs to Kubernetes or Rancher (default, kube-*, cattle-*); "
                "choose another"
            )
    if s.edge_namespace_setting is None and len(s.edge_namespace) > 63:
        problems.append(
            f"{key('namespace')}: the default edgeNamespace '{short_name(s.edge_namespace)}' would have "
            f"{len(s.edge_namespace)} characters (at most 63); set edgeNamespace or shorten namespace"
        )
    if s.edge_namespace == s.namespace:
        problems.append(
            f"{key('edgeNamespace')}: {show(s.edge_namespace)} is also the apps namespace; the edge tier "
            "needs its own (privileged) one"
        )
    return problems


def _edge_ports(s: Settings) -> list[str]:
    """The edge pod's ports share one host network: each its own."""
    problems: list[str] = []
    lb = s.load_balancer
    lb_ports = {lb.http_port, lb.stats_port}
    if lb.http_port == lb.stats_port:
        problems.append(f"{key('loadBalancer')}.statsPort: {lb.stats_port} is also the httpPort")
    if s.vrrp.metrics_port in lb_ports:
        problems.append(
            f"{key('vrrp')}.metricsPort: {s.vrrp.metrics_port} is also HAProxy's "
            f"{'httpPort' if s.vrrp.metrics_port == lb.http_port else 'statsPort'}; "
            "pick a free port (default 9165)"
        )
    if s.vrrp.handoff.port in lb_ports | {s.vrrp.metrics_port}:
        problems.append(
            f"{key('vrrp')}.handoff.port: {s.vrrp.handoff.port} is taken by another edge port "
            "(httpPort, statsPort, metricsPort); pick a free one (default 9166)"
        )
    return problems


def _push_targets(s: Settings) -> list[str]:
    problems: list[str] = []
    for name, img in (("keepalived", s.keepalived), ("loadBalancer", s.load_balancer), ("frr", s.frr)):
        if img.build and "@" in img.image:
            problems.append(
                f"{key(name)}.image: a digest cannot be a push target; with build: true give repository[:tag]"
            )
    return problems


def _tolerations(s: Settings) -> list[str]:
    problems: list[str] = []
    for i, tol in enumerate(s.load_balancer.tolerations):
        where = f"{key('loadBalancer')}.tolerations[{i}]"
        if tol.operator == "Exists" and tol.value is not None:
            problems.append(f"{where}.value: must be empty with operator Exists")
        if tol.operator == "Equal" and tol.key is None:
            problems.append(f"{where}.key: required with operator Equal (or use operator Exists)")
    return problems


def _failover_window(s: Settings) -> list[str]:
    mon = s.monitoring
    scrape, window = duration_seconds(mon.scrape_interval), duration_seconds(mon.failover_window)
    if window < 2 * scrape:
        # increase() needs two samples inside the window.
        return [
            f"{key('monitoring')}.failoverWindow: {mon.failover_window} is shorter than two "
            f"scrapeIntervals ({mon.scrape_interval}); a failover could never be seen"
        ]
    return []


def _resources(s: Settings) -> list[str]:
    """Kubernetes refuses a container whose requests exceed its limits."""
    where: list[tuple[str, Resources]] = [
        (f"{key('services')}[{i}].resources", svc.resources) for i, svc in enumerate(s.services)
    ]
    lb = s.load_balancer.resources.model_copy(update={"memory_limit": capacity.memory_limit(s)})
    where += [
        (f"{key('loadBalancer')}.resources", lb),
        (f"{key('keepalived')}.resources", s.keepalived.resources),
        (f"{key('frr')}.resources", s.frr.resources),
    ]
    problems: list[str] = []
    for path, r in where:
        mem = quantity(r.memory)
        if mem is not None and mem != mem.to_integral_value():
            problems.append(
                f"{path}.memory: {show(r.memory)} is {mem.normalize():f} bytes; "
                f"did you mean {r.memory[:-1]}Mi?"
            )
        pairs = [("memory", r.memory, "memoryLimit", r.memory_limit)]
        if r.cpu_limit is not None:
            pairs.append(("cpu", r.cpu, "cpuLimit", r.cpu_limit))
        for req_key, req, lim_key, lim in pairs:
            req_v, lim_v = quantity(req), quantity(lim)
            if req_v is not None and lim_v is not None and req_v > lim_v:
                problems.append(
                    f"{path}.{req_key}: {req} is more than {lim_key} {lim} (requests must not exceed limits)"
                )
    return problems


def _haproxy_memory(s: Settings) -> list[str]:
    """A memoryLimit the connection budget does not fit is an OOM kill under load, then a failover."""
    problem = capacity.memory_problem(s)
    return [f"{key('loadBalancer')}.maxConn: {problem}"] if problem else []


def _registry(s: Settings) -> list[str]:
    if s.registry is None and s.registry_password is not None:
        return [
            f"{key('registryPassword')}: set without {key('registry')}; "
            "add registry.server and registry.username"
        ]
    return []


RULES: tuple[Callable[[Settings], list[str]], ...] = (
    _host_count,
    _node_names,
    _priorities,
    _addresses,
    _vip,
    _namespaces,
    *service_rules.RULES,
    _edge_ports,
    _push_targets,
    _tolerations,
    _failover_window,
    _resources,
    _haproxy_memory,
    *vrrp_rules.RULES,
    *bgp_rules.RULES,
    _registry,
    *tls_rules.RULES,
)


def problems(s: Settings) -> list[str]:
    """Every rule's problems, in RULES' order."""
    return [p for rule in RULES for p in rule(s)]
