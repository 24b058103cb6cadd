"""Pure renderer of the HTTP frontends' routing: Host header and path prefix to backend.

Each request's service is decided once, into `txn.be`, by the first rule that
matches, in this order (the order docs/settings.md documents):

1. an exact hostname with a path (longest path first), then that hostname alone;
2. a wildcard hostname (`*.example.com`: exactly one label) with a path
   (longest first), then the wildcard alone;
3. a path on any host (services with `paths` and no `hostnames`), longest first;
4. the default service: the first HTTP service.

A host's own rules win over host-less ones, as a host's Ingress rules do. A
path prefix matches whole segments (`/api` matches `/api`, `/api/` and
`/api/v1`, never `/apis`), compared with the path as the client sent it.
The redirect, the HSTS header and the `allowFrom` refusal then read `txn.be`,
so each follows exactly the service the request reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.settings import Service, Settings

ROUTE_VAR = "txn.be"


@dataclass(frozen=True)
class Route:
    host: str | None
    path: str  # "/" = any path
    service: Service


def backend_name(svc: Service) -> str:
    return f"be_{svc.name}"


def _rank(r: Route) -> tuple[int, int]:
    kind = 2 if r.host is None else 1 if r.host.startswith("*.") else 0
    return (kind, -len(r.path) if r.path != "/" else 1)


def routes(s: Settings) -> list[Route]:
    """Every (host, path) rule of every HTTP service, in matching order."""
    found = [
        Route(host, path, svc)
        for svc in s.http_services
        for host in (svc.hostnames or (None,))
        for path in (svc.paths or ("/",))
        if host is not None or path != "/"
    ]
    return sorted(found, key=_rank)  # stable: equal ranks keep the services' order


def host_match(host: str) -> str:
    if host.startswith("*."):
        # A wildcard stands for exactly one label, as in Ingress and TLS certificates.
        return "var(txn.host) -m reg '^[^.]+[.]" + host[2:].replace(".", "[.]") + "$'"
    return f"var(txn.host) -m str {host}"


def path_match(path: str) -> str:
    """Whole segments: the prefix itself, or it and a '/'. The path grammar's
    only regex metacharacters are '.' and '+'."""
    literal = path.replace(".", "[.]").replace("+", "[+]")
    return f"path -m reg '^{literal}(/|$)'"


def _route_line(r: Route) -> str:
    conds = [f"!{{ var({ROUTE_VAR}) -m found }}"]
    if r.host is not None:
        conds.append(f"{{ {host_match(r.host)} }}")
    if r.path != "/":
        conds.append(f"{{ {path_match(r.path)} }}")
    return f"    http-request set-var({ROUTE_VAR}) str({backend_name(r.service)}) if {' '.join(conds)}"


def _is(services: list[Service]) -> str:
    return f"{{ var({ROUTE_VAR}) -m str {' '.join(backend_name(svc) for svc in services)} }}"


def route_rules(s: Settings, scheme: str) -> list[str]:
    """The HTTP or HTTPS frontend's routing, client refusals, redirects and backend choice."""
    default = s.default_http_service
    assert default is not None  # settings refuse a stack without an HTTP service
    lines = [_route_line(r) for r in routes(s)]
    lines.append(
        f"    http-request set-var({ROUTE_VAR}) str({backend_name(default)}) "
        f"if !{{ var({ROUTE_VAR}) -m found }}"
    )
    for svc in s.http_services:
        if svc.allow_from is not None:
            # `src`: the TCP peer, never a header a client could forge.
            nets = " ".join(str(n) for n in svc.allow_from)
            lines.append(f"    http-request deny deny_status 403 if {_is([svc])} !{{ src {nets} }}")
    if scheme == "http":
        lines += _redirects(s)
    lines += [f"    use_backend {backend_name(svc)} if {_is([svc])}" for svc in s.http_services]
    lines.append(f"    default_backend {backend_name(default)}")
    return lines


def _redirects(s: Settings) -> list[str]:
    """HTTP for a TLS service: 308 to the same host, path and query over HTTPS,
    exactly when the request routes to a service that redirects."""
    redirecting = [svc for svc in s.http_services if svc.tls is not None and svc.tls.redirect]
    if not redirecting:
        return []
    port = "" if s.load_balancer.https_port == 443 else f":{s.load_balancer.https_port}"
    to = f"http-request redirect location https://%[var(txn.host)]{port}%[capture.req.uri] code 308"
    return [f"    {to} if {_is(redirecting)}"]
