"""Monitoring in BGP mode: the alerts and dashboard panels for halb-bgp's /metrics.

With `bgp` there is no keepalived and no vrrp-exporter: each host's `frr`
container serves /metrics itself (images/frr/halb-bgp: what the host
announces, HAProxy as the announcer counts it, each peer's BGP and BFD
session as bgpd and bfdd report them). The `halb-bgp` PodMonitor scrapes it
at `vrrp.metricsPort`; these rules and panels take the VRRP ones' place,
the HAProxy ones stay (components/monitoring.py).
"""

from __future__ import annotations

from typing import Any

from components.settings import Settings

BGP_MONITOR = "halb-bgp"
# The series halb-bgp serves (tests check the rules and the dashboard use no other).
BGP_METRICS = frozenset({
    "halb_bgp_announced", "halb_bgp_announcement_changes_total", "halb_haproxy_up", "halb_bgp_draining",
    "halb_frr_up", "halb_bgp_session_up", "halb_bfd_session_up",
})  # fmt: skip


def bgp_rules(s: Settings, alert: Any, b: str, vip_for: float, host_for: float) -> list[dict[str, Any]]:
    """The VIP's alerts in BGP mode; `b`: the halb-bgp job's selector; `alert`: monitoring's _alert."""
    assert s.bgp is not None
    vip = f'vip="{s.vip.ip}"'
    n = len(s.lb_nodes)
    window = s.monitoring.failover_window
    ns = s.edge_namespace
    return [
        alert(
            "HalbVipNotAnnounced",
            f"sum(halb_bgp_announced{{{b},{vip}}}) == 0",
            vip_for,
            "critical",
            f"No load-balancer host announces the VIP {s.vip.ip}",
            f"No host announces {s.vip.ip}/32 to its routers: clients of every service get no answer "
            "(or no exporter answers: then HalbEdgeHostsMissing fires too).",
            f"Look for HalbHaproxyDown, HalbBgpSessionDown and HalbFrrDown: a host announces only while its "
            f"HAProxy is healthy, it is not draining and its session is up. `kubectl -n {ns} logs <edge pod> "
            "-c frr` says why each host withdrew.",
        ),
        alert(
            "HalbBgpHostWithdrawn",
            f"max by (node) (halb_bgp_announced{{{b},{vip}}}) == 0 "
            f"unless on (node) max by (node) (halb_bgp_draining{{{b}}}) == 1",
            host_for,
            "warning",
            f"{{{{ $labels.node }}}} does not announce the VIP {s.vip.ip}",
            "{{ $labels.node }} serves no new flows and is not draining: its HAProxy check fails or "
            "haproxy-watch says it is down. The others carry its share.",
            "See HalbHaproxyDown for the same host; the frr container's log names the reason of each "
            "withdrawal. It announces again once HAProxy answers `vrrp.check.rise` times.",
        ),
        alert(
            "HalbBgpSessionDown",
            f"max by (node, peer) (halb_bgp_session_up{{{b}}}) == 0",
            host_for,
            "warning",
            "{{ $labels.node }} has no BGP session with {{ $labels.peer }}",
            "The router {{ $labels.peer }} gets no route to the VIP from {{ $labels.node }}: that host "
            "takes no traffic through it.",
            f"`kubectl -n {ns} exec <edge pod> -c frr -- vtysh -c 'show bgp summary'`: a wrong ASN or "
            "password (bgp.peers), TCP 179 blocked between them, or the router's side not configured "
            "for this host (docs/bgp.md, the router's side).",
        ),
        alert(
            "HalbBfdSessionDown",
            f"max by (node, peer) (halb_bfd_session_up{{{b}}}) == 0",
            host_for,
            "warning",
            "{{ $labels.node }} has no BFD session with {{ $labels.peer }}",
            "Without BFD the router notices a dead {{ $labels.node }} only by BGP's hold time "
            "(seconds), not in bgp.bfd's interval x multiplier.",
            "BFD needs UDP 3784 both ways with TTL 255 and BFD enabled for this host on the router "
            f"(docs/bgp.md). `kubectl -n {ns} exec <edge pod> -c frr -- vtysh -c 'show bfd peers'`.",
        ),
        alert(
            "HalbFrrDown",
            f"max by (node) (halb_frr_up{{{b}}}) == 0",
            host_for,
            "warning",
            "FRR does not answer on {{ $labels.node }}",
            "bgpd or bfdd does not answer vtysh on {{ $labels.node }}: the container is stopping, or "
            "a daemon hangs.",
            f"`kubectl -n {ns} logs <edge pod on the node> -c frr`; a daemon that died restarts the "
            "container by itself.",
        ),
        alert(
            "HalbEdgeHostsMissing",
            f"(count(up{{{b}}} == 1) or vector(0)) < {n}",
            host_for,
            "warning",
            f"{{{{ $value }}}} of {n} load-balancer hosts report BGP metrics",
            "An edge pod is missing, not ready, or halb-bgp's /metrics does not answer: the alerts "
            "above cannot see that host.",
            f"`kubectl -n {ns} get pods -o wide`; a node labelled role=load-balancer that is NotReady, "
            "or a pod stuck Pending (host port taken?) is the usual cause.",
        ),
        alert(
            "HalbBgpAnnouncementChanged",
            f"sum by (node) (increase(halb_bgp_announcement_changes_total{{{b}}}[{window}])) > 0",
            None,
            "info",
            f"{{{{ $labels.node }}}} announced or withdrew the VIP in the last {window}",
            f"The routers' next hops for {s.vip.ip} changed: flows were rehashed, and long-lived "
            "connections beyond the host's own share may have been cut (docs/bgp.md).",
            "If nobody drained the host, find why it withdrew: HalbHaproxyDown or a restarted edge pod "
            "on it in the same minutes.",
        ),
    ]


def bgp_panels(s: Settings, panel: Any, states: Any, b: str) -> list[dict[str, Any]]:
    """The dashboard's top rows in BGP mode (ids 1-6, the VRRP panels' places)."""
    up_down = states({0: ("down", "red"), 1: ("up", "green")})
    return [
        panel(1, f"VIP {s.vip.ip} announced", "state-timeline", (0, 0, 16, 6),
              [(f"max by (node) (halb_bgp_announced{{{b}}})", "{{node}}")],
              fieldConfig=states({0: ("withdrawn", "orange"), 1: ("announced", "green")})),
        panel(2, "Hosts announcing", "stat", (16, 0, 8, 6),
              [(f"sum(halb_bgp_announced{{{b}}})", "announcing")],
              fieldConfig={"defaults": {"thresholds": {"mode": "absolute", "steps": [
                  {"color": "red", "value": None}, {"color": "green", "value": 1}]}}, "overrides": []}),
        panel(3, "BGP sessions", "state-timeline", (0, 6, 16, 6),
              [(f"max by (node, peer) (halb_bgp_session_up{{{b}}})", "{{node}} - {{peer}}")],
              fieldConfig=up_down),
        panel(4, "Announcement changes in range", "stat", (16, 6, 8, 6),
              [(f"sum(increase(halb_bgp_announcement_changes_total{{{b}}}[$__range]))", "changes")]),
        panel(5, "BFD sessions", "state-timeline", (0, 12, 12, 7),
              [(f"max by (node, peer) (halb_bfd_session_up{{{b}}})", "{{node}} - {{peer}}")],
              fieldConfig=up_down),
        panel(6, "FRR and HAProxy up", "state-timeline", (12, 12, 12, 7),
              [(f"max by (node) (halb_frr_up{{{b}}})", "frr {{node}}"),
               (f"max by (node) (halb_haproxy_up{{{b}}})", "haproxy {{node}}")],
              fieldConfig=up_down),
    ]  # fmt: skip
