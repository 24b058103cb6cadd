"""Pure renderer: Settings + backend discovery -> haproxy.cfg.

The cluster finds app pods through DNS of each service's headless Service
(`dns_backends`); the local lab lists its app replicas statically. That
choice, passed in as `backends`, is the only way the two configs differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.edge_pod import (
    ADMIN_SOCKET,
    HOST_IP,
    SERVER_STATE_FILE,
    TICKET_KEYS_FILE,
    TLS_CERTS_DIR,
    TLS_DEFAULT_CERT,
)
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
# Mozilla's intermediate profile (ssl-config generator 5.7, HAProxy 2.6, OpenSSL
# 3.0): TLS 1.2 and 1.3, its ciphers and curves. Tickets stay on (Mozilla turns
# them off because keys are rarely rotated; ours rotate, tls-ticket-keys).
TLS_CURVES = "X25519:prime256v1:secp384r1"
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
TLS_OPTIONS = "prefer-client-ciphers no-sslv3 no-tlsv10 no-tlsv11"
ALPN = "h2,http/1.1"
# What a client may send but only the edge may say: dropped, then set by HAProxy.
FORWARDED_HEADERS = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "Forwarded",
)


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
        *_tls_global(s),
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
        *_request_heads("http"),
        *_redirects(s),
        *_routes(s),
        "",
    ]
    if s.tls_services:
        lines += [
            "frontend https",
            f"    bind 0.0.0.0:{lb.https_port} {_tls_bind(s)}",
            *_request_heads("https"),
            *_routes(s),
            "",
        ]
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
            *_hsts(svc),
            *_servers(backends[svc.name]),
            "",
        ]
    return "\n".join(lines)


def _tls_global(s: Settings) -> list[str]:
    if not s.tls_services:
        return []
    options = TLS_OPTIONS + (" no-tls-tickets" if s.tls.session_tickets == "off" else "")
    return [
        # The runtime API: renewed certificates and rotated ticket keys without a reload.
        f"    stats socket {ADMIN_SOCKET} mode 666 level admin",
        f"    ssl-default-bind-curves {TLS_CURVES}",
        f"    ssl-default-bind-ciphers {TLS12_CIPHERS}",
        f"    ssl-default-bind-ciphersuites {TLS13_CIPHERSUITES}",
        f"    ssl-default-bind-options {options}",
        # ffdhe2048 (RFC 7919) for the DHE ciphers, as Mozilla's profile asks.
        "    tune.ssl.default-dh-param 2048",
    ]


def _tls_bind(s: Settings) -> str:
    """The certificates (the default first, then every good one, chosen by SNI), ALPN, tickets."""
    bind = f"ssl crt {TLS_DEFAULT_CERT} crt {TLS_CERTS_DIR} alpn {ALPN}"
    if s.tls.session_tickets == "shared":
        bind += f" tls-ticket-keys {TICKET_KEYS_FILE}"
    return bind


def _request_heads(scheme: str) -> list[str]:
    """The request's host for routing; forwarding headers only the edge may set."""
    return [
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
        *(f"    http-request del-header {h}" for h in FORWARDED_HEADERS),
        f"    http-request set-header X-Forwarded-Proto {scheme}",
    ]


def _host_match(host: str) -> str:
    if host.startswith("*."):
        # A wildcard stands for exactly one label, as in Ingress and TLS certificates.
        return "var(txn.host) -m reg '^[^.]+[.]" + host[2:].replace(".", "[.]") + "$'"
    return f"var(txn.host) -m str {host}"


def _routes(s: Settings) -> list[str]:
    """Host header to backend: exact names first, so `a.example.com` beats `*.example.com`."""
    routes = [(host, svc) for svc in s.services for host in svc.hostnames]
    exact = [(h, svc) for h, svc in routes if not h.startswith("*.")]
    wild = [(h, svc) for h, svc in routes if h.startswith("*.")]
    lines = [f"    use_backend {backend_name(svc)} if {{ {_host_match(h)} }}" for h, svc in exact + wild]
    return [*lines, f"    default_backend {backend_name(s.services[0])}"]


def _redirects(s: Settings) -> list[str]:
    """HTTP for a TLS service: 308 to the same host, path and query over HTTPS.

    A request goes where the routes send it (exact name, else wildcard, else
    the default service), so it is redirected exactly when that service redirects."""
    redirecting = {svc.name for svc in s.services if svc.tls is not None and svc.tls.redirect}
    if not redirecting:
        return []
    port = "" if s.load_balancer.https_port == 443 else f":{s.load_balancer.https_port}"
    to = f"http-request redirect location https://%[var(txn.host)]{port}%[capture.req.uri] code 308"
    exact = [(h, svc.name) for svc in s.services for h in svc.hostnames if not h.startswith("*.")]
    wild = [(h, svc.name) for svc in s.services for h in svc.hostnames if h.startswith("*.")]
    lines = [f"    {to} if {{ {_host_match(h)} }}" for h, name in exact if name in redirecting]
    other_exact = " ".join(h for h, name in exact if name not in redirecting)
    unless_exact = f" !{{ var(txn.host) -m str {other_exact} }}" if other_exact else ""
    lines += [f"    {to} if {{ {_host_match(h)} }}{unless_exact}" for h, name in wild if name in redirecting]
    if s.services[0].name in redirecting:
        # The default service: whatever no hostname routes elsewhere.
        unrouted = "".join(f" !{{ {_host_match(h)} }}" for h, name in exact + wild)
        lines.append(f"    {to}{' if' + unrouted if unrouted else ''}")
    return lines


def _hsts(svc: Service) -> list[str]:
    header = svc.tls.hsts.header() if svc.tls is not None else None
    if header is None:
        return []
    return [f'    http-response set-header Strict-Transport-Security "{header}" if {{ ssl_fc }}']
