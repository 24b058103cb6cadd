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
    COOKIE_KEY_ENV,
    HOST_IP,
    SERVER_STATE_FILE,
    TICKET_KEYS_FILE,
    TLS_CERTS_DIR,
    TLS_DEFAULT_CERT,
)
from components.haproxy_routes import backend_name, route_rules
from components.settings import Service, Settings
from components.settings.capacity import STATS_MAXCONN, global_maxconn
from components.values import haproxy_seconds

RESOLVERS = "cluster"
# The stats frontend binds the node's own address (HOST_IP) and loopback, so
# /healthz and /metrics never answer on the VIP.
# A reload's old worker keeps its connections (a websocket, a download) until
# they end, bounded by hard-stop-after: the longest of the services' timeouts
# (their tunnel, by default 1 h), never less than this.
MIN_HARD_STOP_AFTER_S = 30
# Every pod slot a rolling update can fill: maxSurge of the app Deployments.
MAX_SURGE = 1
# The sticky cookie's key, the same on every load-balancer host (a Secret).
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


def hard_stop_after_s(s: Settings) -> int:
    longest = max(svc.timeouts.longest_s for svc in s.services)
    return max(MIN_HARD_STOP_AFTER_S, int(longest + 0.999))


def dns_payload_size(slots: int) -> int:
    """An A answer of `slots` records fits: header and question (~300 bytes at
    most), 16 bytes a compressed record, the OPT record; 512 is DNS's floor."""
    return min(65535, max(512, 320 + 16 * slots))


def service_fqdn(s: Settings, svc: Service) -> str:
    return f"{svc.name}.{s.apps_namespace}.svc.{s.cluster_domain}"


def dns_backends(s: Settings) -> dict[str, Backend]:
    """The in-cluster discovery: a slot for every replica and a rolling update's surge."""
    return {
        svc.name: DnsBackend(service_fqdn(s, svc), svc.port, svc.replicas + MAX_SURGE) for svc in s.services
    }


def _servers(b: Backend, svc: Service) -> list[str]:
    # PROXY v2 on checks too: an app that wants the header refuses a connection without it.
    opts = "check" + (" send-proxy-v2 check-send-proxy" if svc.proxy_protocol else "")
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
        *_cookie_key_guard(s),
        "global",
        "    log stdout format raw local0 info",
        # Every traffic frontend's maxconn plus the health frontend's own.
        f"    maxconn {global_maxconn(s)}",
        f"    hard-stop-after {hard_stop_after_s(s)}s",
        f"    server-state-file {SERVER_STATE_FILE}",
        *_tls_global(s),
        "",
        "defaults",
        "    load-server-state-from-file global",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
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
    dns = [b for b in backends.values() if isinstance(b, DnsBackend)]
    if dns:
        lines += [
            f"resolvers {RESOLVERS}",
            "    parse-resolv-conf",
            f"    accepted_payload_size {dns_payload_size(max(b.slots for b in dns))}",
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
        # Its own budget, which the traffic frontends' maxconn never reaches
        # into: /healthz answers while traffic is saturated.
        f"    maxconn {STATS_MAXCONN}",
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
        *_budget(s),
        f"    timeout client {_client_timeout(s)}",
        "    option forwardfor",  # per HTTP frontend: TCP ones inherit defaults
        *_request_heads("http"),
        *route_rules(s, "http"),
        "",
    ]
    if s.tls_services:
        lines += [
            "frontend https",
            f"    bind 0.0.0.0:{lb.https_port} {_tls_bind(s)}",
            *_budget(s),
            f"    timeout client {_client_timeout(s)}",
            "    option forwardfor",  # per HTTP frontend: TCP ones inherit defaults
            *_request_heads("https"),
            *route_rules(s, "https"),
            "",
        ]
    for svc in s.services:
        if svc.tcp_port is not None:
            lines += _tcp_frontend(s, svc, svc.tcp_port)
    lines += [
        f"backend {DRAIN_BACKEND}",
        # Never sent traffic; `maint` = draining (halb-haproxy drain).
        f"    server {DRAIN_SERVER} 127.0.0.1:9",
        "",
    ]
    for svc in s.services:
        if svc.http:
            lines += _backend(s, svc, backends[svc.name], backend_name(svc), "http")
        if svc.tcp_port is not None:
            lines += _backend(s, svc, backends[svc.name], tcp_backend_name(svc), "tcp")
    return "\n".join(lines)


def tcp_backend_name(svc: Service) -> str:
    return backend_name(svc) if not svc.http else f"{backend_name(svc)}_tcp"


def _client_timeout(s: Settings) -> str:
    """HAProxy 2.6 sets `timeout client` per frontend: the longest of the HTTP services'."""
    return max((svc.timeouts.client for svc in s.http_services), key=haproxy_seconds)


def _cookie_key_guard(s: Settings) -> list[str]:
    if not any(svc.sticky for svc in s.services):
        return []
    return [
        f".if !defined({COOKIE_KEY_ENV})",
        f'    .alert "{COOKIE_KEY_ENV} is not set: give the container the sticky-cookie Secret\'s key"',
        ".endif",
    ]


def _budget(s: Settings, allow_from: str | None = None) -> list[str]:
    """A traffic frontend's maxconn and, when set, the connections one source may hold."""
    lb = s.load_balancer
    lines = [f"    maxconn {lb.max_conn}"]
    if allow_from is not None:  # before tracking: a refused source takes no table entry
        lines.append(f"    tcp-request connection reject unless {{ src {allow_from} }}")
    if lb.max_conn_per_source:
        lines += [
            # One entry a source; at most maxconn sources hold a connection at once.
            f"    stick-table type ip size {lb.max_conn} expire 30s store conn_cur",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection reject if {{ sc0_conn_cur gt {lb.max_conn_per_source} }}",
        ]
    return lines


def _tcp_frontend(s: Settings, svc: Service, port: int) -> list[str]:
    nets = " ".join(str(n) for n in svc.allow_from) if svc.allow_from is not None else None
    lines = [
        f"frontend tcp_{svc.name}",
        "    mode tcp",
        "    option tcplog",
        f"    bind 0.0.0.0:{port}",
        *_budget(s, nets),
        f"    timeout client {svc.timeouts.client}",
    ]
    return [*lines, f"    default_backend {tcp_backend_name(svc)}", ""]


def _health_check(s: Settings, svc: Service) -> list[str]:
    """HTTP/1.1 with a Host header: many apps answer a Host-less HTTP/1.0 check with 400."""
    if not svc.http:
        return []  # TCP-only: a connect is the check
    named = [h for h in svc.hostnames if not h.startswith("*.")]
    host = named[0] if named else service_fqdn(s, svc)
    return [
        "    option httpchk",
        f"    http-check send meth GET uri {svc.ready_path} ver HTTP/1.1 hdr Host {host}",
        f"    http-check expect status {svc.health_check.statuses}",
    ]


def _sticky(svc: Service) -> list[str]:
    """A cookie naming the pod (a hash of its address and port under a key every
    load-balancer host shares), so it holds after a failover and a reload."""
    if not svc.sticky:
        return []
    secure = " secure" if svc.tls is not None and svc.tls.redirect else ""
    return [
        f"    cookie halb_{svc.name.replace('-', '_')} insert indirect nocache dynamic httponly{secure} "
        'attr "SameSite=Lax"',
        f'    dynamic-cookie-key "${{{COOKIE_KEY_ENV}}}"',
    ]


def _backend(s: Settings, svc: Service, b: Backend, name: str, mode: str) -> list[str]:
    t = svc.timeouts
    lines = [
        f"backend {name}",
        *(["    mode tcp"] if mode == "tcp" else []),
        "    balance roundrobin",
        f"    timeout connect {t.connect}",
        f"    timeout server {t.server}",
        f"    timeout tunnel {t.tunnel}",
        *_health_check(s, svc),
    ]
    if mode == "http":
        lines += [*_sticky(svc), *_hsts(svc)]
    return [*lines, *_servers(b, svc), ""]


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


def _hsts(svc: Service) -> list[str]:
    header = svc.tls.hsts.header() if svc.tls is not None else None
    if header is None:
        return []
    return [f'    http-response set-header Strict-Transport-Security "{header}" if {{ ssl_fc }}']
