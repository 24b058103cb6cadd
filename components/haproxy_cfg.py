"""Pure renderer: Settings + backend discovery -> haproxy.cfg.

The cluster finds app pods through DNS of each service's headless Service
(`dns_backends`); the local lab lists its app replicas statically. That
choice, passed in as `backends`, is the only way the two configs differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.settings import Service, Settings

RESOLVERS = "cluster"


@dataclass(frozen=True)
class DnsBackend:
    """Pods found by resolving a headless Service; `slots` bounds how many."""

    fqdn: str
    port: int
    slots: int


@dataclass(frozen=True)
class StaticServer:
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class StaticBackend:
    servers: tuple[StaticServer, ...]


Backend = DnsBackend | StaticBackend


def service_fqdn(s: Settings, svc: Service) -> str:
    return f"{svc.name}.{s.apps_namespace}.svc.{s.cluster_domain}"


def dns_backends(s: Settings) -> dict[str, Backend]:
    """The in-cluster discovery: room for a rolling update's surge pods too."""
    return {
        svc.name: DnsBackend(service_fqdn(s, svc), svc.port, max(4, 2 * svc.replicas)) for svc in s.services
    }


def backend_name(svc: Service) -> str:
    return f"be_{svc.name}"


def _servers(b: Backend) -> list[str]:
    opts = "check"
    if isinstance(b, DnsBackend):
        return [
            f"    server-template pod {b.slots} {b.fqdn}:{b.port} {opts} "
            f"resolvers {RESOLVERS} resolve-prefer ipv4 init-addr none"
        ]
    return [f"    server {srv.name} {srv.address}:{srv.port} {opts}" for srv in b.servers]


def render_haproxy_cfg(s: Settings, backends: Mapping[str, Backend]) -> str:
    """haproxy.cfg routing by Host header, first service the default."""
    missing = [svc.name for svc in s.services if svc.name not in backends]
    if missing:
        raise ValueError(f"no backend given for service(s): {', '.join(missing)}")
    lb = s.load_balancer
    lines = [
        "# haproxy.cfg rendered by rancher-ha-lb; do not edit.",
        "global",
        "    log stdout format raw local0 info",
        f"    maxconn {lb.max_conn}",
        # Bounds a soft stop (rolling update, planned handoff) so old workers
        # holding long connections cannot linger forever.
        "    hard-stop-after 30s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option forwardfor",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 3s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 5s",
        "    default-server inter 2s fall 2 rise 2",
        "",
    ]
    if any(isinstance(b, DnsBackend) for b in backends.values()):
        lines += [
            f"resolvers {RESOLVERS}",
            "    parse-resolv-conf",
            "    resolve_retries 3",
            "    timeout resolve 1s",
            "    timeout retry 1s",
            "    hold valid 10s",
            "    hold obsolete 10s",
            "",
        ]
    lines += [
        "frontend stats",
        f"    bind 0.0.0.0:{lb.stats_port}",
        # keepalived and kubelet ask here; a soft-stopping HAProxy says 503 so
        # the VIP leaves before this node stops serving.
        "    monitor-uri /healthz",
        "    monitor fail if { stopping }",
        "    http-request set-log-level silent",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "",
        "frontend http",
        # 0.0.0.0: a backup listens before it holds the VIP, so a takeover
        # needs no rebind.
        f"    bind 0.0.0.0:{lb.http_port}",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
    ]
    routes = [(host, svc) for svc in s.services for host in svc.hostnames]
    # Exact names first, so `a.example.com` beats `*.example.com`; a wildcard
    # stands for exactly one label, as in Ingress and TLS certificates.
    for host, svc in routes:
        if not host.startswith("*."):
            lines.append(f"    use_backend {backend_name(svc)} if {{ var(txn.host) -m str {host} }}")
    for host, svc in routes:
        if host.startswith("*."):
            pattern = "^[^.]+[.]" + host[2:].replace(".", "[.]") + "$"
            lines.append(f"    use_backend {backend_name(svc)} if {{ var(txn.host) -m reg '{pattern}' }}")
    lines += [f"    default_backend {backend_name(s.services[0])}", ""]
    for svc in s.services:
        lines += [
            f"backend {backend_name(svc)}",
            "    balance roundrobin",
            f"    option httpchk GET {svc.health_path}",
            "    http-check expect status 200-399",
            *_servers(backends[svc.name]),
            "",
        ]
    return "\n".join(lines)
