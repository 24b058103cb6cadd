"""HAProxy's connection budget and the memory it needs: one arithmetic for the
config, the pod's limit, the settings' check and the lab.

`loadBalancer.maxConn` is each traffic frontend's `maxconn` (HTTP, HTTPS,
each `tcpPort`), HAProxy's own meaning. The process's global `maxconn` is
their sum plus the health frontend's own STATS_MAXCONN, so no flood on any
port, nor on all of them at once, leaves /healthz without a connection:
saturation alone never fails keepalived's check and never moves the VIP.
"""

from __future__ import annotations

import math

from components.settings.models import Settings
from components.values import quantity

# /healthz and /metrics: keepalived's check, the kubelet's probes, Prometheus.
STATS_MAXCONN = 100
# A busy connection holds two buffers (tune.bufsize 16 KiB: request and
# response) and about 1 KiB of session; an idle one holds less.
CONN_BYTES = 33 * 1024
# The process itself: code, config, DNS and stick tables, TLS contexts.
BASE_BYTES = 64 * 1024 * 1024
MI = 1024 * 1024
# The least limit the pod gets when it follows maxConn.
MIN_LIMIT_MI = 512


def traffic_listeners(s: Settings) -> list[tuple[str, int]]:
    """(name, port) of every frontend that carries traffic: HTTP, HTTPS, each tcpPort."""
    lb = s.load_balancer
    listeners = [("HTTP", lb.http_port)] + ([("HTTPS", lb.https_port)] if s.tls_services else [])
    return listeners + [
        (f"tcpPort {svc.tcp_port}", svc.tcp_port) for svc in s.services if svc.tcp_port is not None
    ]


def traffic_frontends(s: Settings) -> list[str]:
    """The frontends that carry traffic, each with maxConn of its own."""
    return [name for name, _ in traffic_listeners(s)]


def global_maxconn(s: Settings) -> int:
    return len(traffic_frontends(s)) * s.load_balancer.max_conn + STATS_MAXCONN


def memory_need_bytes(s: Settings) -> int:
    return BASE_BYTES + global_maxconn(s) * CONN_BYTES


def memory_limit_set(s: Settings) -> bool:
    """Whether the stack sets loadBalancer.resources.memoryLimit (else it follows maxConn)."""
    return "memory_limit" in s.load_balancer.resources.model_fields_set


def memory_limit(s: Settings) -> str:
    """HAProxy's container memory limit: the stack's, or what maxConn needs (at least 512Mi)."""
    if memory_limit_set(s):
        return s.load_balancer.resources.memory_limit
    return f"{max(MIN_LIMIT_MI, math.ceil(memory_need_bytes(s) / MI))}Mi"


def max_conn_that_fits(s: Settings, limit_bytes: int) -> int:
    """The largest maxConn whose need fits `limit_bytes` (0 if none does)."""
    per = (limit_bytes - BASE_BYTES) // CONN_BYTES - STATS_MAXCONN
    return max(0, per // len(traffic_frontends(s)))


def memory_problem(s: Settings) -> str | None:
    """The sentence for a memoryLimit too small for maxConn, with the arithmetic."""
    if not memory_limit_set(s):
        return None
    limit = s.load_balancer.resources.memory_limit
    value = quantity(limit)
    if value is None:
        return None  # the quantity's own message says why
    need = memory_need_bytes(s)
    if need <= value:
        return None
    fronts = traffic_frontends(s)
    return (
        f"{s.load_balancer.max_conn} connections on each of {len(fronts)} traffic frontend(s) "
        f"({', '.join(fronts)}) + {STATS_MAXCONN} for /healthz = {global_maxconn(s)} x 33 KiB + 64 MiB "
        f"= {math.ceil(need / MI)} MiB, more than loadBalancer.resources.memoryLimit {limit}: HAProxy "
        f"would be OOM-killed before it reached maxconn. Raise memoryLimit to {math.ceil(need / MI)}Mi "
        f"(or remove it: it then follows maxConn), or lower maxConn to {max_conn_that_fits(s, int(value))}"
    )
