"""Monitoring: the VRRP exporter sidecar, and Rancher Monitoring's objects.

`exporter_container` is the edge pod's vrrp-exporter (always there: it is
also how the lab and `lab status` read VRRP state). The `Monitoring`
component, created when `monitoring.enabled`, adds what prometheus-operator
and Grafana pick up: two PodMonitors (HAProxy's /metrics on the `stats`
port, the exporter on `vrrp-metrics`), a PrometheusRule with the tier's
alerts, and a dashboard ConfigMap labelled `grafana_dashboard: "1"` in
`monitoring.dashboardsNamespace`. The rules and the dashboard are pure
functions of the settings, so promtool and the lab's Prometheus judge
exactly what the cluster gets (`rules_file`, and `prometheus_config` for a
Prometheus without the operator: same jobs, same `node` label).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.edge_pod import (
    BGP_METRICS_PORT_NAME,
    EXPORTER,
    EXPORTER_BIN,
    EXPORTER_PORT_NAME,
    EXPORTER_STATE_FILE,
    HAPROXY_DOWN_FILE,
    HOST_IP,
    NOTIFY_FIFO,
    SHARED_DIR,
    SHARED_VOLUME,
    STATS_PORT_NAME,
    STEER_STATE_FILE,
)
from components.edge_pod import NAME as EDGE
from components.k8s import host_ip_env, labels, resources, selector, unprivileged
from components.keepalived_conf import instance_name
from components.monitoring_bgp import BGP_MONITOR, bgp_panels, bgp_rules
from components.settings import Settings
from components.values import duration_seconds

HAPROXY_MONITOR = "halb-haproxy"
VRRP_MONITOR = "halb-vrrp"
RULE_NAME = "halb"
MONITORING_API = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = "grafana_dashboard"
# HAProxy's app backends (components/haproxy_cfg.py: backend_name).
APP_BACKENDS = 'proxy=~"be_.+"'


def exporter_args(s: Settings, listen: list[str]) -> list[str]:
    """The exporter's command line; `listen`: this node's address(es), never the VIP."""
    args = [
        EXPORTER_BIN,
        *[a for addr in listen for a in ("--listen", addr)],
        "--port", str(s.vrrp.metrics_port),
        "--fifo", NOTIFY_FIFO,
        "--state-file", EXPORTER_STATE_FILE,
        "--instance", instance_name(s),
        "--interface", s.vip.interface,
        "--vrid", str(s.vip.router_id),
        "--vip", str(s.vip.address),
        # The handoff listener's verdicts and the edge table's refusals (halb-keepalived steer).
        "--steer-state-file", STEER_STATE_FILE,
    ]  # fmt: skip
    if s.vrrp.check.watch:
        args += ["--haproxy-down-file", HAPROXY_DOWN_FILE]
    return args


def exporter_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """The vrrp-exporter sidecar for the edge pod (host network).

    Expects the pod to have the emptyDir `SHARED_VOLUME` that keepalived
    mounts at /run/halb. It listens on the node's address (downward API
    status.hostIP; `$(HOST_IP)` is expanded by the kubelet) and 127.0.0.1,
    not on 0.0.0.0: bound there it would also answer on the VIP, as if it
    were the holder's. Unprivileged: reading a FIFO, a file and a netlink
    address dump needs no capability."""
    port = s.vrrp.metrics_port
    return {
        "name": EXPORTER,
        "image": image,
        "command": exporter_args(s, [f"$({HOST_IP})", "127.0.0.1"]),
        "env": [host_ip_env(HOST_IP)],
        "ports": [{"name": EXPORTER_PORT_NAME, "container_port": port, "host_port": port, "protocol": "TCP"}],
        "liveness_probe": {
            "http_get": {"path": "/metrics", "port": EXPORTER_PORT_NAME},
            "period_seconds": 20,
            "timeout_seconds": 3,
            "failure_threshold": 3,
        },
        "resources": resources(s.keepalived.resources),
        "security_context": unprivileged(),
        "volume_mounts": [{"name": SHARED_VOLUME, "mount_path": SHARED_DIR}],
    }


# --- what Prometheus scrapes and evaluates --------------------------------------


def job(s: Settings, monitor: str) -> str:
    """The `job` label prometheus-operator gives a PodMonitor's targets: namespace/name."""
    return f"{s.edge_namespace}/{monitor}"


def edge_monitors(s: Settings) -> list[tuple[str, str, int]]:
    """(PodMonitor, the pod's port name, its number): HAProxy's, and the VIP's exporter
    (the vrrp-exporter, or in BGP mode halb-bgp itself, at the same metricsPort)."""
    vip = (BGP_MONITOR, BGP_METRICS_PORT_NAME) if s.bgp is not None else (VRRP_MONITOR, EXPORTER_PORT_NAME)
    return [(HAPROXY_MONITOR, STATS_PORT_NAME, s.load_balancer.stats_port), (*vip, s.vrrp.metrics_port)]


def vip_monitor(s: Settings) -> str:
    """The PodMonitor of the VIP's exporter (edge_monitors' second)."""
    return edge_monitors(s)[1][0]


def scrape_jobs(s: Settings) -> dict[str, int]:
    """job -> port of the edge pod's /metrics endpoints; targets carry a `node` label."""
    return {job(s, monitor): port for monitor, _, port in edge_monitors(s)}


def prometheus_config(s: Settings, addresses: dict[str, str], rule_files: list[str]) -> dict[str, Any]:
    """A plain Prometheus config scraping what the PodMonitors scrape, with the
    labels the rules rely on (job as the operator names it, `node`), for a
    Prometheus without the operator: the local lab's. `addresses`: LB node ->
    its address."""
    interval = s.monitoring.scrape_interval
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"{addr}:{port}"], "labels": {"node": node}}
                    for node, addr in sorted(addresses.items())
                ],
            }
            for name, port in scrape_jobs(s).items()
        ],
    }


def pod_monitor_spec(s: Settings, port_name: str) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": selector(EDGE)},
        "podMetricsEndpoints": [
            {
                "port": port_name,
                "path": "/metrics",
                "interval": s.monitoring.scrape_interval,
                # The node is what an operator acts on; with host networking
                # the pod IP in `instance` is the node's address anyway.
                "relabelings": [
                    {
                        "action": "replace",
                        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                        "targetLabel": "node",
                    }
                ],
            }
        ],
    }


def fmt_duration(seconds: float) -> str:
    """A Prometheus duration for `seconds` (90 -> '1m30s', 0.5 -> '500ms')."""
    ms = round(seconds * 1000)
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out or "0s"


def _alert(
    name: str, expr: str, for_s: float | None, severity: str, summary: str, description: str, runbook: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_s:
        rule["for"] = fmt_duration(for_s)
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description, "runbook": runbook}
    return rule


def alert_rules(s: Settings) -> list[dict[str, Any]]:
    """The PrometheusRule's groups. `for` is counted in scrapes: a VIP alert
    needs the condition on 3 scrapes in a row (a failover takes ~150 ms and
    must not alert), a degraded host on 5."""
    si = duration_seconds(s.monitoring.scrape_interval)
    vip_for, host_for = 2 * si, 4 * si
    v = f'job="{job(s, vip_monitor(s))}"'  # the VIP's exporter: vrrp-exporter, or halb-bgp
    h = f'job="{job(s, HAPROXY_MONITOR)}"'
    vip = f'vip="{s.vip.ip}"'
    n = len(s.lb_nodes)
    window = s.monitoring.failover_window
    vip_rules = [
        _alert(
            "HalbVipNoHolder",
            f"sum(halb_vip_held{{{v},{vip}}}) == 0",
            vip_for,
            "critical",
            f"No load-balancer host holds the VIP {s.vip.ip}",
            f"No host has {s.vip.ip} on {s.vip.interface}: clients of every service get no answer "
            "(or the holder's exporter does not answer: then HalbEdgeHostsMissing fires too).",
            "Check the edge pods (`kubectl -n "
            + s.edge_namespace
            + " get pods -o wide`) and keepalived's log in each; look for HalbVrrpFault, "
            "HalbHaproxyDown and HalbKeepalivedDown on the same hosts: a host in FAULT does not "
            "take the VIP. Fix the cause (HAProxy, link, keepalived) on one host; it takes the VIP "
            "within a second.",
        ),
        _alert(
            "HalbVipMultipleHolders",
            f"sum(halb_vip_held{{{v},{vip}}}) > 1",
            vip_for,
            "critical",
            f"{{{{ $value }}}} load-balancer hosts hold the VIP {s.vip.ip} (split brain)",
            f"More than one host has {s.vip.ip}: clients are split between them by their ARP cache, "
            "and connections break when the caches change.",
            "The hosts do not hear each other's VRRP adverts (IP protocol 112, unicast between the "
            "host addresses): check the network between them, firewalls and security groups. When "
            "they hear each other again the lower priority yields by itself. A host whose keepalived "
            "is gone but still has the VIP: see HalbVipStale.",
        ),
        _alert(
            "HalbVipStale",
            f"max by (node) (halb_vip_held{{{v},{vip}}}) == 1 unless on (node) "
            f"(max by (node) (keepalived_vrrp_state{{{v}}}) == 2 "
            f"and on (node) max by (node) (keepalived_up{{{v}}}) == 1)",
            host_for,
            "warning",
            f"{{{{ $labels.node }}}} has the VIP {s.vip.ip} but is not a running MASTER",
            "The kernel on {{ $labels.node }} has the VIP while its keepalived is not running or "
            "not MASTER: it answers ARP for an address another host may hold.",
            "keepalived was killed without releasing the VIP. Restart the edge pod on "
            "{{ $labels.node }} (its entrypoint removes the stale VIP before keepalived starts), or "
            f"remove it by hand: `ip addr del {s.vip.address} dev {s.vip.interface}`.",
        ),
        _alert(
            "HalbVrrpFault",
            f"max by (node, iname) (keepalived_vrrp_state{{{v}}}) == 3",
            host_for,
            "warning",
            "VRRP instance {{ $labels.iname }} on {{ $labels.node }} is in FAULT",
            "{{ $labels.node }} cannot take the VIP: its HAProxy check fails, haproxy-watch reports "
            f"HAProxy down, or {s.vip.interface} is down. The VIP has no standby there.",
            "See HalbHaproxyDown for the same host; else check the link "
            f"(`ip link show {s.vip.interface}`) and keepalived's log in the edge pod. The instance "
            "leaves FAULT by itself once the cause is gone.",
        ),
        _alert(
            "HalbKeepalivedDown",
            f"max by (node) (keepalived_up{{{v}}}) == 0",
            host_for,
            "warning",
            "keepalived is not running on {{ $labels.node }}",
            "keepalived's VRRP process does not hold its notify FIFO open: it is stopped, crashing, "
            "or could not open the FIFO. This host cannot take the VIP.",
            f"`kubectl -n {s.edge_namespace} logs <edge pod on the node> -c keepalived`; a config error or "
            "a missing capability shows at the top. The exporter logs why it cannot open the FIFO.",
        ),
        _alert(
            "HalbEdgeHostsMissing",
            f"(count(up{{{v}}} == 1) or vector(0)) < {n}",
            host_for,
            "warning",
            f"{{{{ $value }}}} of {n} load-balancer hosts report VRRP metrics",
            "An edge pod is missing, not ready, or its exporter does not answer: the VIP alerts "
            "above cannot see that host.",
            f"`kubectl -n {s.edge_namespace} get pods -o wide`; a node labelled role=load-balancer that is "
            "NotReady, or a pod stuck Pending (host port taken?) is the usual cause.",
        ),
        _alert(
            "HalbVipFailover",
            f"sum by (node, iname) (increase(keepalived_become_master_total{{{v}}}[{window}])) > 0",
            None,
            "info",
            f"{{{{ $labels.node }}}} became VRRP MASTER in the last {window}",
            f"The VIP {s.vip.ip} moved to {{{{ $labels.node }}}}. Open connections to the previous "
            "holder were reset; new ones went to this host.",
            "If nobody planned it, find why the previous MASTER gave up: HalbHaproxyDown, "
            "HalbVrrpFault or a restarted edge pod on that host, in the same minutes.",
        ),
    ]
    haproxy_rules = [
        _alert(
            "HalbHaproxyDown",
            f"max by (node) (1 - halb_haproxy_up{{{v}}}) == 1 or max by (node) (1 - up{{{h}}}) == 1",
            host_for,
            "warning",
            "HAProxy is down on {{ $labels.node }}",
            "haproxy-watch sees no HAProxy on {{ $labels.node }}, or Prometheus cannot scrape it. "
            "keepalived has put the host in FAULT: the VIP is elsewhere, with no standby here.",
            f"`kubectl -n {s.edge_namespace} logs <edge pod on the node> -c haproxy --previous`; a config "
            "error, an out-of-memory kill or a port taken on the host are the usual causes.",
        ),
        _alert(
            "HalbBackendNoHealthyServer",
            f"max by (node, proxy) (haproxy_backend_active_servers{{{h},{APP_BACKENDS}}}) == 0",
            host_for,
            "critical",
            "Backend {{ $labels.proxy }} has no healthy server on {{ $labels.node }}",
            "HAProxy on {{ $labels.node }} marks every server of {{ $labels.proxy }} down "
            "(or DNS finds no pod): requests for that service get 503 from this host.",
            f"`kubectl -n {s.apps_namespace} get pods,endpoints`: are the service's pods Ready? If "
            "they are, HAProxy's health check path or port is wrong, or the load-balancer host "
            "cannot reach the pod network.",
        ),
    ]
    vip_group = "rancher-ha-lb.vip"
    if s.bgp is not None:
        vip_rules, vip_group = bgp_rules(s, _alert, v, vip_for, host_for), "rancher-ha-lb.bgp"
    for rule in vip_rules + haproxy_rules:
        # Aggregations drop `namespace`; routing (and Rancher's alert views) want it.
        rule["labels"]["namespace"] = s.edge_namespace
    return [
        {"name": vip_group, "rules": vip_rules},
        {"name": "rancher-ha-lb.haproxy", "rules": haproxy_rules},
    ]


def rules_file(s: Settings) -> str:
    """The rule groups as a Prometheus rules file (promtool, the lab's Prometheus)."""
    return yaml.safe_dump({"groups": alert_rules(s)}, sort_keys=False, width=1000)


# --- the dashboard ------------------------------------------------------------------

DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[tuple[str, str]],
    **extra: Any,
) -> dict[str, Any]:
    x, y, w, hgt = grid
    return {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": hgt},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        **extra,
    }


def _states(mapping: dict[int, tuple[str, str]]) -> dict[str, Any]:
    return {
        "defaults": {
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        str(k): {"text": text, "color": color} for k, (text, color) in mapping.items()
                    },
                }
            ],
            "color": {"mode": "thresholds"},
        },
        "overrides": [],
    }


def dashboard(s: Settings) -> dict[str, Any]:
    """Grafana dashboard: who holds (or announces) the VIP over time, transitions, HAProxy per backend."""
    v = f'job="{job(s, vip_monitor(s))}"'
    h = f'job="{job(s, HAPROXY_MONITOR)}"'
    be = f"{h},{APP_BACKENDS}"
    rate = "$__rate_interval"
    vrrp_states = {0: ("INIT", "text"), 1: ("BACKUP", "blue"), 2: ("MASTER", "green"), 3: ("FAULT", "red")}
    panels = [
        _panel(1, f"VIP {s.vip.ip} holder (kernel)", "state-timeline", (0, 0, 16, 6),
               [(f"max by (node) (halb_vip_held{{{v}}})", "{{node}}")],
               fieldConfig=_states({0: ("-", "transparent"), 1: ("holds VIP", "green")})),
        _panel(2, "Hosts holding the VIP", "stat", (16, 0, 8, 6),
               [(f"sum(halb_vip_held{{{v}}})", "holders")],
               fieldConfig={"defaults": {"thresholds": {"mode": "absolute", "steps": [
                   {"color": "red", "value": None}, {"color": "green", "value": 1},
                   {"color": "red", "value": 2}]}}, "overrides": []}),
        _panel(3, "VRRP state (keepalived)", "state-timeline", (0, 6, 16, 6),
               [(f"max by (node) (keepalived_vrrp_state{{{v}}})", "{{node}}")],
               fieldConfig=_states(vrrp_states)),
        _panel(4, "Failovers in range", "stat", (16, 6, 8, 6),
               [(f"sum(increase(keepalived_become_master_total{{{v}}}[$__range]))", "became MASTER")]),
        _panel(5, "Became MASTER", "timeseries", (0, 12, 12, 7),
               [(f"sum by (node) (increase(keepalived_become_master_total{{{v}}}[{rate}]))", "{{node}}")],
               fieldConfig={"defaults": {"custom": {"drawStyle": "bars"}}, "overrides": []}),
        _panel(6, "keepalived and HAProxy up", "state-timeline", (12, 12, 12, 7),
               [(f"max by (node) (keepalived_up{{{v}}})", "keepalived {{node}}"),
                (f"max by (node) (halb_haproxy_up{{{v}}})", "haproxy {{node}}")],
               fieldConfig=_states({0: ("down", "red"), 1: ("up", "green")})),
        _panel(7, "Requests per backend", "timeseries", (0, 19, 12, 8),
               [(f"sum by (proxy) (rate(haproxy_backend_http_requests_total{{{be}}}[{rate}]))", "{{proxy}}")],
               fieldConfig={"defaults": {"unit": "reqps"}, "overrides": []}),
        _panel(8, "Requests per load-balancer host", "timeseries", (12, 19, 12, 8),
               [(f'sum by (node) (rate(haproxy_frontend_http_requests_total{{{h},proxy="http"}}[{rate}]))',
                 "{{node}}")],
               fieldConfig={"defaults": {"unit": "reqps"}, "overrides": []}),
        _panel(9, "5xx responses per backend", "timeseries", (0, 27, 12, 8),
               [(f'sum by (proxy) (rate(haproxy_backend_http_responses_total{{{be},code="5xx"}}[{rate}]))',
                 "{{proxy}}")],
               fieldConfig={"defaults": {"unit": "reqps"}, "overrides": []}),
        _panel(10, "Connection and response errors per backend", "timeseries", (12, 27, 12, 8),
               [(f"sum by (proxy) (rate(haproxy_backend_connection_errors_total{{{be}}}[{rate}]))",
                 "connect {{proxy}}"),
                (f"sum by (proxy) (rate(haproxy_backend_response_errors_total{{{be}}}[{rate}]))",
                 "response {{proxy}}")],
               fieldConfig={"defaults": {"unit": "reqps"}, "overrides": []}),
        _panel(11, "Healthy servers per backend (lowest host)", "timeseries", (0, 35, 24, 7),
               [(f"min by (proxy) (haproxy_backend_active_servers{{{be}}})", "{{proxy}}")]),
    ]  # fmt: skip
    if s.bgp is not None:  # the VIP's rows from halb-bgp's series; HAProxy's stay
        panels = bgp_panels(s, _panel, _states, v) + panels[6:]
    return {
        "uid": "halb-" + hashlib.sha256(s.edge_namespace.encode()).hexdigest()[:12],
        "title": f"rancher-ha-lb: VIP and HAProxy ({s.edge_namespace})",
        "tags": ["rancher-ha-lb", "frr" if s.bgp is not None else "keepalived", "haproxy"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


# --- the component ----------------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringArgs:
    settings: Settings
    namespace: pulumi.Input[str]  # the edge namespace: the pods' and the PodMonitors'


class Monitoring(pulumi.ComponentResource):
    """PodMonitors, PrometheusRule and Grafana dashboard for the edge tier."""

    rule_name: str
    dashboard_name: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:Monitoring", name, None, opts)
        s, mon = args.settings, args.settings.monitoring
        child = pulumi.ResourceOptions(parent=self)

        def operator_object(kind: str, obj_name: str, spec: dict[str, Any]) -> None:
            k8s.apiextensions.CustomResource(
                f"{name}-{obj_name}",
                api_version=MONITORING_API,
                kind=kind,
                metadata={
                    "name": obj_name,
                    "namespace": args.namespace,
                    "labels": {**labels(obj_name, "monitoring"), **mon.labels},
                },
                spec=spec,
                opts=child,
            )

        for monitor, port_name, _ in edge_monitors(s):
            operator_object("PodMonitor", monitor, pod_monitor_spec(s, port_name))
        self.rule_name = RULE_NAME
        operator_object("PrometheusRule", RULE_NAME, {"groups": alert_rules(s)})
        self.dashboard_name = f"rancher-ha-lb-{s.edge_namespace}"
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={
                "name": self.dashboard_name,
                "namespace": mon.dashboards_namespace,
                "labels": {**labels("dashboard", "monitoring"), DASHBOARD_LABEL: "1"},
            },
            data={f"{self.dashboard_name}.json": json.dumps(dashboard(s), indent=1, sort_keys=True)},
            opts=child,
        )
        self.register_outputs({"rule_name": self.rule_name, "dashboard_name": self.dashboard_name})
