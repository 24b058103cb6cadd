"""Rules across a service's routing keys (called from rules.RULES): every route
to one service, every service reachable, a TCP port of its own."""

from __future__ import annotations

from components.settings.messages import key
from components.settings.models import Settings
from components.values import show


def _routes(s: Settings) -> list[str]:
    """Distinct names; each (host, path) routed to one service; every service reachable."""
    problems: list[str] = []
    names: dict[str, int] = {}
    routed: dict[tuple[str | None, str], str] = {}
    default = s.default_http_service
    for i, svc in enumerate(s.services):
        where = f"{key('services')}[{i}]"
        if svc.name in names:
            problems.append(f"{where}.name: {show(svc.name)} is also services[{names[svc.name]}]'s name")
        names.setdefault(svc.name, i)
        if svc.http and not svc.hostnames and not svc.paths and svc is not default:
            problems.append(
                f"{where}.hostnames: empty; only the first HTTP service (the default backend) can do "
                "without hostnames or paths, any other would never be reached"
            )
        for host in svc.hostnames or (None,):
            for path in dict.fromkeys(svc.paths or ("/",)):  # a repeat is its own message below
                if (host, path) in routed:
                    on = f"{show(path)} on {show(host)}" if host else f"path {show(path)}"
                    what = show(host) if host and path == "/" else on
                    field = "hostnames" if path == "/" else "paths"
                    problems.append(
                        f"{where}.{field}: {what} is already routed to {show(routed[host, path])}"
                    )
                routed.setdefault((host, path), svc.name)
        if len(set(svc.paths)) != len(svc.paths):
            problems.append(f"{where}.paths: {show(list(svc.paths))} names a path twice")
    if default is None:
        problems.append(
            f"{key('services')}: every service is TCP-only (tcpPort without hostnames or paths); "
            "the HTTP frontend needs a default service: give one no tcpPort, or hostnames"
        )
    return problems


def _tcp_ports(s: Settings) -> list[str]:
    """A service's TCP port is a VIP port of its own, apart from every edge port."""
    lb = s.load_balancer
    edge = {
        lb.http_port: f"{key('loadBalancer')}.httpPort",
        lb.https_port: f"{key('loadBalancer')}.httpsPort",
        lb.stats_port: f"{key('loadBalancer')}.statsPort",
        s.vrrp.metrics_port: f"{key('vrrp')}.metricsPort",
        s.vrrp.handoff.port: f"{key('vrrp')}.handoff.port",
    }
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        if svc.tcp_port is None:
            continue
        where = f"{key('services')}[{i}].tcpPort"
        if svc.tcp_port in edge:
            problems.append(f"{where}: {svc.tcp_port} is also {edge[svc.tcp_port]}; pick a free port")
        else:
            edge[svc.tcp_port] = f"services[{i}].tcpPort"
    return problems


def _tcp_only(s: Settings) -> list[str]:
    """What needs HTTP, refused on a TCP-only service, with the reason."""
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        where = f"{key('services')}[{i}]"
        if svc.http:
            continue
        if svc.tls is not None:
            problems.append(
                f"{where}.tls: the service is TCP-only (tcpPort without hostnames or paths); HTTPS is "
                "terminated on the HTTP frontends: give it hostnames, or drop tls"
            )
        if svc.sticky:
            problems.append(
                f"{where}.sticky: cookie stickiness needs HTTP; the service is TCP-only (tcpPort without "
                "hostnames or paths)"
            )
    return problems


def _allow_from(s: Settings) -> list[str]:
    return [
        f"{key('services')}[{i}].allowFrom: empty would refuse every client; omit allowFrom to admit all"
        for i, svc in enumerate(s.services)
        if svc.allow_from is not None and not svc.allow_from
    ]


def _health_check(s: Settings) -> list[str]:
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        hc = svc.health_check
        if "health_path" in svc.model_fields_set and hc.path is not None and hc.path != svc.health_path:
            problems.append(
                f"{key('services')}[{i}].healthCheck.path: {show(hc.path)} differs from healthPath "
                f"{show(svc.health_path)}; set one of them"
            )
    return problems


RULES = (_routes, _tcp_ports, _tcp_only, _allow_from, _health_check)
