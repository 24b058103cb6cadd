"""Pure renderer: Settings + backend discovery -> haproxy.cfg.

The cluster finds app pods through DNS of each service's headless Service
(`dns_backends`); the local lab lists its app replicas statically. That
choice, passed in as `backends`, is the only way the two configs differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.edge_pod import HOST_IP, SERVER_STATE_FILE
from components.settings import Service, Settings

RESOLVERS = "cluster"
# The stats frontend binds the node's own address (HOST_IP) and loopback, so
# /healthz and /metrics never answer on the VIP.
# Bounds a soft stop so old workers holding long connections cannot linger.
HARD_STOP_AFTER_S = 30
# A node about to stop says so on /healthz (503) while it still serves: the
# pod's preStop puts this backend's one server in maintenance through the
# master CLI. Not `monitor fail if { stopping }` with `grace`: on every hitless
# reload the old worker is "stopping" too, and a health check that reached it
# would move the VIP; HAProxy's manual says `grace` must not be used with
# processes that are reloaded.
DRAIN_BACKEND = "be_halb_drain"
# SERVER_STATE_FILE: servers found by DNS keep their addresses across a hitless
# reload (`init-addr last`); without it, a new worker's servers have no address
# until the resolvers answer, and requests meet a 503.
DRAIN_SERVER = "serving"


def vip_leave_s(s: Settings) -> int:
    """How long after /healthz turns 503 the VIP may still be here: keepalived's
    slowest path, the curl poll (`fall` checks `interval` apart, each up to
    `timeout`), plus a second for the adverts and GARPs."""
    chk = s.vrrp.check
    return chk.interval * chk.fall + chk.timeout + 1


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
            f"resolvers {RESOLVERS} resolve-prefer ipv4 init-addr last,none"
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
        # An unset or empty address would make the stats bind below listen on
        # every address, the VIP included: refuse to start instead.
        f'.if !defined({HOST_IP}) || streq("${HOST_IP}","")',
        f'    .alert "{HOST_IP} is not set: give the container status.hostIP (downward API)"',
        ".endif",
        "global",
        "    log stdout format raw local0 info",
        f"    maxconn {lb.max_conn}",
        f"    hard-stop-after {HARD_STOP_AFTER_S}s",
        f"    server-state-file {SERVER_STATE_FILE}",
        "",
        "defaults",
        "    load-server-state-from-file global",
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
        f'    bind "${{{HOST_IP}}}:{lb.stats_port}"',
        f"    bind 127.0.0.1:{lb.stats_port}",
        # keepalived and the kubelet ask here; a draining node says 503 so the
        # VIP leaves before it stops serving.
        "    monitor-uri /healthz",
        f"    monitor fail if {{ nbsrv({DRAIN_BACKEND}) lt 1 }}",
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
    lines += [
        f"backend {DRAIN_BACKEND}",
        # Never sent traffic; `maint` = draining (halb-haproxy drain).
        f"    server {DRAIN_SERVER} 127.0.0.1:9",
        "",
    ]
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
