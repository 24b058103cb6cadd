"""Monitoring: settings, the exporter sidecar, Rancher Monitoring's objects, and
the rules judged by promtool (check + a unit test per alert, firing and not)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import rendered, run_halb, settings_of, stack_raw, with_overrides
from k8s_schema import validate
from test_vrrp_exporter import exported_names

from components.edge_pod import EXPORTER, EXPORTER_PORT_NAME, SHARED_VOLUME
from components.monitoring import (
    alert_rules,
    dashboard,
    dashboard_exprs,
    exporter_container,
    fmt_duration,
    job,
    rules_file,
    scrape_jobs,
)
from components.settings import Settings, SettingsError, parse_settings
from components.values import duration_seconds
from halb.render import manifests

CR = "kubernetes:monitoring.coreos.com/v1:"


def lab(**changes: Any) -> Settings:
    return parse_settings(with_overrides(stack_raw("lab"), **changes))


def problems(**changes: Any) -> list[str]:
    with pytest.raises(SettingsError) as exc:
        lab(**changes)
    return exc.value.problems


# --- settings ---------------------------------------------------------------------


def test_defaults() -> None:
    s = lab(monitoring=None)
    assert s.vrrp.metrics_port == 9165
    m = s.monitoring
    assert (m.enabled, m.scrape_interval, m.failover_window, m.dashboards_namespace, m.labels) == (
        False,
        "15s",
        "10m",
        "cattle-dashboards",
        {},
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"vrrp": {"metricsPort": 8404}}, "rancher-ha-lb:vrrp.metricsPort: 8404 is also HAProxy's statsPort"),
        ({"vrrp": {"metricsPort": 80}}, "rancher-ha-lb:vrrp.metricsPort: 80 is also HAProxy's httpPort"),
        ({"vrrp": {"metricsPort": 70000}}, "rancher-ha-lb:vrrp.metricsPort: 70000 is not in 1..65535"),
        ({"vrrp": {"metricsPort": 1.5}}, "rancher-ha-lb:vrrp.metricsPort: 1.5 is not a whole number"),
        (
            {"monitoring": {"failoverWindow": "20s"}},
            "rancher-ha-lb:monitoring.failoverWindow: 20s is shorter than two scrapeIntervals (15s)",
        ),
        (
            {"monitoring": {"scrapeInterval": "15"}},
            "rancher-ha-lb:monitoring.scrapeInterval: '15' is not a positive Prometheus duration",
        ),
        (
            {"monitoring": {"scrapeInterval": "0s"}},
            "rancher-ha-lb:monitoring.scrapeInterval: '0s' is not a positive Prometheus duration",
        ),
        (
            {"monitoring": {"labels": {"release": "rancher monitoring"}}},
            "rancher-ha-lb:monitoring.labels.release: 'rancher monitoring' is not a Kubernetes label value",
        ),
        (
            {"monitoring": {"labels": {"-bad": "x"}}},
            "rancher-ha-lb:monitoring.labels.-bad: '-bad' is not a Kubernetes label key",
        ),
        (
            {"monitoring": {"dashboardsNamespace": "Cattle"}},
            "rancher-ha-lb:monitoring.dashboardsNamespace: 'Cattle' is not a DNS-1123 label",
        ),
        (
            {"monitoring": {"enable": True}},
            "rancher-ha-lb:monitoring.enable: unknown key; expected one of: dashboardsNamespace, enabled, "
            "failoverWindow, labels, scrapeInterval",
        ),
        (
            {"monitoring": {"enabled": "yes please"}},
            "rancher-ha-lb:monitoring.enabled: 'yes please' is not true",
        ),
    ],
)
def test_bad_settings_name_the_key(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_good_monitoring_settings() -> None:
    s = lab(
        vrrp={"metricsPort": 9100},
        monitoring={
            "enabled": True,
            "scrapeInterval": "1s",
            "failoverWindow": "1m30s",
            "labels": {"release": "rancher-monitoring", "example.com/team": "edge"},
        },
    )
    assert s.vrrp.metrics_port == 9100 and s.monitoring.labels["example.com/team"] == "edge"
    assert duration_seconds(s.monitoring.failover_window) == 90


def test_bad_monitoring_setting_is_exit_2_from_the_cli(tmp_path: Path) -> None:
    doc = yaml.safe_load(Path("Pulumi.lab.yaml").read_text())
    doc["config"]["rancher-ha-lb:monitoring"] = {"enabled": True, "failoverWindow": "10"}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_halb("render", "--stack", "x", "--config-file", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "error: rancher-ha-lb:monitoring.failoverWindow: '10' is not a positive Prometheus duration" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("seconds", "text"), [(15, "15s"), (60, "1m"), (90, "1m30s"), (0.5, "500ms"), (7200, "2h")]
)
def test_fmt_duration_is_the_inverse_of_parsing(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text and duration_seconds(text) == seconds


# --- the exporter sidecar ------------------------------------------------------------


def command(c: Any) -> list[str]:
    cmd = c["command"]
    assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)
    return cmd


def test_exporter_container_least_privilege_and_wiring() -> None:
    s = settings_of("lab")
    c = exporter_container(s, "img@sha256:0")
    assert c["name"] == EXPORTER and c["image"] == "img@sha256:0"
    cmd = command(c)
    assert cmd[:5] == ["/usr/local/bin/vrrp-exporter", "--listen", "$(HOST_IP)", "--listen", "127.0.0.1"]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags == {
        "--port": "9165",
        "--fifo": "/run/halb/vrrp-notify.fifo",
        "--steer-state-file": "/run/halb/steer.json",
        "--state-file": "/run/halb/vrrp-exporter.json",
        "--instance": "VI_51",
        "--interface": "eth0",
        "--vrid": "51",
        "--vip": "192.0.2.10/24",
        "--haproxy-down-file": "/run/halb/haproxy-down",
    }
    assert c["env"] == [{"name": "HOST_IP", "value_from": {"field_ref": {"field_path": "status.hostIP"}}}]
    assert c["ports"] == [
        {"name": EXPORTER_PORT_NAME, "container_port": 9165, "host_port": 9165, "protocol": "TCP"}
    ]
    assert c["volume_mounts"] == [{"name": SHARED_VOLUME, "mount_path": "/run/halb"}]
    sc = c["security_context"]
    assert sc == {
        "run_as_user": 65534,
        "run_as_group": 65534,
        "run_as_non_root": True,
        "privileged": False,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_exporter_follows_the_settings() -> None:
    s = lab(
        vrrp={"metricsPort": 9100, "check": {"watch": False}}, vip={"address": "192.0.2.50/24", "routerId": 7}
    )
    cmd = command(exporter_container(s, "img"))
    assert "--haproxy-down-file" not in cmd
    assert cmd[cmd.index("--port") + 1] == "9100" and cmd[cmd.index("--instance") + 1] == "VI_7"
    assert cmd[cmd.index("--vip") + 1] == "192.0.2.50/24"


def test_exporter_args_parse_in_the_exporter() -> None:
    """The sidecar's command line is one the exporter accepts (HOST_IP expanded)."""
    from test_vrrp_exporter import ve

    cmd = [
        a.replace("$(HOST_IP)", "192.0.2.11") for a in command(exporter_container(settings_of("prod"), "i"))
    ]
    args = ve.parse_args(cmd[1:])
    assert args.listen == ["192.0.2.11", "127.0.0.1"] and args.vrid == 1


# --- the program under mocks ----------------------------------------------------------


def test_no_monitoring_objects_unless_enabled() -> None:
    from halb.mockrun import run_program

    run = run_program(with_overrides(stack_raw("lab"), monitoring=None), "lab")
    assert not [r for r in run.resources if r.type.startswith(CR) or "Monitoring" in r.type]


def test_the_lab_stack_monitors_with_alerts_within_seconds() -> None:
    """The lab's own Prometheus scrapes every 500 ms: VIP alerts wait 1 s, host alerts 2 s."""
    s = settings_of("lab")
    assert s.monitoring.enabled and s.monitoring.scrape_interval == "500ms"
    fors = {r["alert"]: r.get("for") for g in alert_rules(s) for r in g["rules"]}
    assert fors["HalbVipMultipleHolders"] == "1s" and fors["HalbHaproxyDown"] == "2s"


def test_monitoring_component_creates_podmonitors_rules_and_dashboard() -> None:
    run, s = rendered("prod"), settings_of("prod")
    comp = run.named("monitoring")
    assert comp.type == "rancher-ha-lb:index:Monitoring"
    monitors = {r.inputs["metadata"]["name"]: r for r in run.of_type(CR + "PodMonitor")}
    assert set(monitors) == {"halb-haproxy", "halb-vrrp"}
    for name, port in (("halb-haproxy", "stats"), ("halb-vrrp", "vrrp-metrics")):
        r = monitors[name]
        assert r.parent == comp.urn and r.provider and "k8s" in r.provider
        assert r.inputs["metadata"]["namespace"] == s.edge_namespace
        spec = r.inputs["spec"]
        assert spec["selector"] == {
            "matchLabels": {"app.kubernetes.io/name": "edge", "app.kubernetes.io/part-of": "rancher-ha-lb"}
        }
        (ep,) = spec["podMetricsEndpoints"]
        assert (ep["port"], ep["path"], ep["interval"]) == (port, "/metrics", "15s")
        assert ep["relabelings"][0]["targetLabel"] == "node"
    (rule,) = run.of_type(CR + "PrometheusRule")
    assert rule.parent == comp.urn and rule.inputs["metadata"]["namespace"] == s.edge_namespace
    assert rule.inputs["spec"]["groups"] == alert_rules(s)
    (cm,) = [r for r in run.of_type("kubernetes:core/v1:ConfigMap") if r.parent == comp.urn]
    meta = cm.inputs["metadata"]
    assert meta["namespace"] == "cattle-dashboards" and meta["labels"]["grafana_dashboard"] == "1"
    (body,) = cm.inputs["data"].values()
    assert json.loads(body) == dashboard(s)
    # One file named for the edge namespace, indented as Grafana's provisioning shows it.
    assert cm.inputs["data"] == {
        f"rancher-ha-lb-{s.edge_namespace}.json": json.dumps(dashboard(s), indent=1, sort_keys=True)
    }
    for r in [*monitors.values(), rule]:
        labels = r.inputs["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == r.inputs["metadata"]["name"]
        assert labels["app.kubernetes.io/component"] == "monitoring"


def test_rules_file_keeps_the_rules_order_and_a_zero_duration_is_0s() -> None:
    text = rules_file(settings_of("prod"))
    assert text.startswith("groups:\n- name: ")
    assert "\n  rules:\n  - alert: " in text
    # Each rule reads as written (alert, expr, for, labels, annotations), not alphabetically.
    first = text.split("\n  - alert: ", 2)[1]
    assert [line.split(":")[0].strip() for line in first.splitlines()[1:3]] == ["expr", "for"]
    assert fmt_duration(0) == "0s"


def test_monitoring_labels_reach_what_prometheus_selects() -> None:
    raw = with_overrides(stack_raw("lab"), monitoring={"enabled": True, "labels": {"release": "kps"}})
    from halb.mockrun import run_program

    run = run_program(raw, "lab")
    selected = run.of_type(CR + "PodMonitor") + run.of_type(CR + "PrometheusRule")
    assert len(selected) == 3
    assert all(r.inputs["metadata"]["labels"]["release"] == "kps" for r in selected)


def test_rendered_custom_resources_pass_their_crd_schema() -> None:
    docs = [d for d in manifests(rendered("prod")) if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted(d["kind"] for d in docs) == ["PodMonitor", "PodMonitor", "PrometheusRule"]
    for doc in docs:
        validate(doc)


def test_crd_schema_validation_catches_a_typo() -> None:
    doc = next(d for d in manifests(rendered("prod")) if d["kind"] == "PodMonitor")
    doc = json.loads(json.dumps(doc))
    doc["spec"]["podMetricsEndpoints"][0]["intervall"] = "1s"
    with pytest.raises(Exception, match="intervall"):
        validate(doc)


# --- rules: promtool ------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("needs promtool (make deps installs Debian's prometheus)")
    return path


def test_scrape_jobs_are_the_operators_job_names() -> None:
    s = settings_of("prod")
    assert scrape_jobs(s) == {"web-edge/halb-haproxy": 8404, "web-edge/halb-vrrp": 9165}


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_promtool_check_rules(stack: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file(settings_of(stack)))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_says_what_to_do() -> None:
    for group in alert_rules(settings_of("prod")):
        for rule in group["rules"]:
            assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["labels"]["namespace"] == "web-edge"


# The cases are written for the default 15 s scrapes (the lab stack's are 500 ms).
S = lab(monitoring=None)
V = job(S, "halb-vrrp")
H = job(S, "halb-haproxy")
VIP = str(S.vip.ip)
RULES = {r["alert"]: r for g in alert_rules(S) for r in g["rules"]}


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """What Prometheus makes of our annotation templates ($labels.x and $value only)."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return out.replace("{{ $value }}", value)


def alert(name: str, value: str = "0", **labels: str) -> dict[str, Any]:
    """One expected firing alert: its labels and its annotations as Prometheus expands them."""
    rule = RULES[name]
    all_labels = {**rule["labels"], **labels}
    return {
        "exp_labels": all_labels,
        "exp_annotations": {k: expand(v, labels, value) for k, v in rule["annotations"].items()},
    }


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{metric}{{{inner}}}", "values": values}


def vrrp(metric: str, values: str, node: str, **labels: str) -> dict[str, str]:
    return series(metric, values, job=V, node=node, instance=f"{node}:9165", **labels)


def held(node: str, values: str) -> dict[str, str]:
    return vrrp("halb_vip_held", values, node, vip=VIP)


def state(node: str, values: str) -> dict[str, str]:
    return vrrp("keepalived_vrrp_state", values, node, iname="VI_51", interface="eth0", vrid="51")


def case(
    name: str, inputs: list[dict[str, str]], checks: list[tuple[str, str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """A promtool test group: `checks` are (eval_time, alertname, expected alerts)."""
    return {
        "name": name,
        "interval": S.monitoring.scrape_interval,
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": t, "alertname": a, "exp_alerts": exp} for t, a, exp in checks
        ],
    }  # fmt: skip


# Scrapes every 15 s: "1x20" is 21 samples, 5 minutes. VIP alerts need 30 s, host alerts 1 m.
CASES = [
    case("no holder: fires after 30 s, a one-scrape gap during a failover does not", [
        held("lb-1", "1 1 1 1 0x16"), held("lb-2", "0 0 0 0 0x16"),
    ], [
        ("1m15s", "HalbVipNoHolder", []),
        ("1m30s", "HalbVipNoHolder", [alert("HalbVipNoHolder")]),
    ]),
    case("no holder: a handover with one empty scrape", [
        held("lb-1", "1 1 1 1 0 0 0 0 0x12"), held("lb-2", "0 0 0 0 0 1 1 1 1x12"),
    ], [
        ("1m", "HalbVipNoHolder", []), ("1m15s", "HalbVipNoHolder", []), ("2m", "HalbVipNoHolder", []),
    ]),
    case("two holders (split brain) fire; one scrape of overlap does not", [
        held("lb-1", "1x20"), held("lb-2", "0 0 0 0 1 0 0 0 1x12"),
    ], [
        ("1m15s", "HalbVipMultipleHolders", []),
        ("2m15s", "HalbVipMultipleHolders", []),
        ("2m30s", "HalbVipMultipleHolders", [alert("HalbVipMultipleHolders", "2")]),
    ]),
    case("stale VIP: held by a BACKUP or by a dead keepalived; a live MASTER is fine", [
        held("lb-1", "1x20"), state("lb-1", "2x20"), vrrp("keepalived_up", "1x20", "lb-1"),
        held("lb-2", "0 0 1x18"), state("lb-2", "1x20"), vrrp("keepalived_up", "1x20", "lb-2"),
    ], [
        ("1m", "HalbVipStale", []),
        ("1m30s", "HalbVipStale", [alert("HalbVipStale", node="lb-2")]),
    ]),
    case("stale VIP: keepalived SIGKILLed while MASTER", [
        held("lb-1", "1x20"), state("lb-1", "2x20"), vrrp("keepalived_up", "1 1 0x18", "lb-1"),
    ], [
        ("1m", "HalbVipStale", []),
        ("1m30s", "HalbVipStale", [alert("HalbVipStale", node="lb-1")]),
    ]),
    case("FAULT for a minute fires, a short FAULT does not", [
        state("lb-1", "2x20"), state("lb-2", "1 3 3 1 1 3x15"),
    ], [
        ("1m15s", "HalbVrrpFault", []),
        ("2m", "HalbVrrpFault", []),
        ("2m15s", "HalbVrrpFault", [alert("HalbVrrpFault", node="lb-2", iname="VI_51")]),
    ]),
    case("keepalived down", [
        vrrp("keepalived_up", "1x20", "lb-1"), vrrp("keepalived_up", "1 1 0x18", "lb-2"),
    ], [
        ("30s", "HalbKeepalivedDown", []),
        ("1m30s", "HalbKeepalivedDown", [alert("HalbKeepalivedDown", node="lb-2")]),
    ]),
    case("edge hosts missing: one target down, then every target gone", [
        vrrp("up", "1x20", "lb-1"), vrrp("up", "1 1 0x8 _x10", "lb-2"),
    ], [
        ("30s", "HalbEdgeHostsMissing", []),
        ("1m30s", "HalbEdgeHostsMissing", [alert("HalbEdgeHostsMissing", "1")]),
        ("4m", "HalbEdgeHostsMissing", [alert("HalbEdgeHostsMissing", "1")]),
    ]),
    case("edge hosts missing: no VRRP target at all", [
        series("up", "1x20", job=H, node="lb-1", instance="lb-1:8404"),
    ], [
        ("1m30s", "HalbEdgeHostsMissing", [alert("HalbEdgeHostsMissing", "0")]),
    ]),
    case("failover: fires for the window after a host became MASTER, not on a steady counter", [
        vrrp("keepalived_become_master_total", "1x40", "lb-1", iname="VI_51"),
        vrrp("keepalived_become_master_total", "0x4 1x36", "lb-2", iname="VI_51"),
    ], [
        ("1m", "HalbVipFailover", []),
        ("1m15s", "HalbVipFailover", [alert("HalbVipFailover", node="lb-2", iname="VI_51")]),
        ("9m", "HalbVipFailover", [alert("HalbVipFailover", node="lb-2", iname="VI_51")]),
        ("11m30s", "HalbVipFailover", []),
    ]),
    case("HAProxy down, seen by haproxy-watch or by the scrape", [
        vrrp("halb_haproxy_up", "1x20", "lb-1"), vrrp("halb_haproxy_up", "1 1 0x18", "lb-2"),
        series("up", "1x20", job=H, node="lb-2", instance="lb-2:8404"),
        series("up", "1 0x19", job=H, node="lb-1", instance="lb-1:8404"),
    ], [
        ("30s", "HalbHaproxyDown", []),
        ("1m30s", "HalbHaproxyDown", [alert("HalbHaproxyDown", node="lb-1"),
                                      alert("HalbHaproxyDown", node="lb-2")]),
    ]),
    case("backend without a healthy server; other proxies ignored", [
        series("haproxy_backend_active_servers", "2x20", job=H, node="lb-1", proxy="be_shop"),
        series("haproxy_backend_active_servers", "2 2 0x18", job=H, node="lb-1", proxy="be_blog"),
        series("haproxy_backend_active_servers", "0x20", job=H, node="lb-1", proxy="stats"),
    ], [
        ("30s", "HalbBackendNoHealthyServer", []),
        ("1m30s", "HalbBackendNoHealthyServer",
         [alert("HalbBackendNoHealthyServer", node="lb-1", proxy="be_blog")]),
    ]),
]  # fmt: skip


def test_every_alert_has_firing_and_quiet_cases() -> None:
    fired = {c["alertname"] for g in CASES for c in g["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for g in CASES for c in g["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == quiet == set(RULES)


def test_promtool_unit_tests_for_every_alert(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(rules_file(S))
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": S.monitoring.scrape_interval,
        "tests": CASES,
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_on_a_broken_rule(tmp_path: Path) -> None:
    """The harness can fail: the no-holder rule with `> 0` instead of `== 0`."""
    broken = rules_file(S).replace(f'vip="{VIP}"}}) == 0', f'vip="{VIP}"}}) > 0', 1)
    assert broken != rules_file(S)
    (tmp_path / "rules.yaml").write_text(broken)
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "15s", "tests": CASES[:1]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


# --- the dashboard ----------------------------------------------------------------------------


def test_dashboard_is_what_rancher_monitoring_loads() -> None:
    d = dashboard(settings_of("prod"))
    assert d["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) == 11
    titles = " | ".join(p["title"] for p in d["panels"])
    for wanted in ("holder", "VRRP state", "Became MASTER", "Requests per backend", "5xx", "errors"):
        assert wanted in titles
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} == set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    assert len(d["uid"]) <= 40


def test_alert_groups_are_named_for_what_they_watch() -> None:
    """The group names Prometheus and Rancher's alert views list the rules under."""
    groups = alert_rules(S)
    assert [g["name"] for g in groups] == ["rancher-ha-lb.vip", "rancher-ha-lb.haproxy"]
    assert all(g["rules"] for g in groups)


GOLDEN_DASHBOARD = Path(__file__).parent / "golden" / "dashboard-prod.json"


def test_dashboard_is_the_reviewed_one() -> None:
    """No Grafana runs here to load it: the dashboard is pinned as a reviewed file.
    After a deliberate change, rewrite it with `.venv/bin/python tests/golden/update.py` and
    review the diff."""
    assert dashboard(settings_of("prod")) == json.loads(GOLDEN_DASHBOARD.read_text())


def test_dashboard_panels_tile_the_grid_without_overlap() -> None:
    cells: dict[tuple[int, int], int] = {}
    for p in dashboard(S)["panels"]:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]


def test_dashboard_legends_name_labels_their_queries_keep() -> None:
    for p in dashboard(S)["panels"]:
        for t in p["targets"]:
            kept = re.match(r"^\w+ by \(([\w, ]+)\)", t["expr"])
            labels = set(re.findall(r"{{(\w+)}}", t["legendFormat"]))
            assert labels <= ({x.strip() for x in kept.group(1).split(",")} if kept else set()), t


def metric_names(exprs: list[str]) -> set[str]:
    return set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", " ".join(exprs))) - {"up"}


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    exprs = [
        e.replace("$__rate_interval", "1m").replace("$__range", "1h") for e in dashboard_exprs(dashboard(S))
    ]
    groups = [
        {
            "name": "dashboard",
            "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
        }
    ]
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, width=1000))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_use_only_metrics_the_exporter_serves(tmp_path: Path) -> None:
    """HAProxy's names are checked against a real HAProxy in test_monitoring_live."""
    exprs = dashboard_exprs(dashboard(S)) + [r["expr"] for r in RULES.values()]
    ours = {n for n in metric_names(exprs) if not n.startswith("haproxy_")}
    assert ours and ours <= exported_names(tmp_path), ours - exported_names(tmp_path)


def haproxy_metric_names(exprs: list[str]) -> set[str]:
    return {n for n in metric_names(exprs) if n.startswith("haproxy_")}


def all_exprs(s: Settings) -> list[str]:
    return dashboard_exprs(dashboard(s)) + [r["expr"] for g in alert_rules(s) for r in g["rules"]]


def test_durations_follow_the_scrape_interval() -> None:
    fast = lab(monitoring={"scrapeInterval": "1s", "failoverWindow": "2m"})
    rules = {r["alert"]: r for g in alert_rules(fast) for r in g["rules"]}
    assert rules["HalbVipMultipleHolders"]["for"] == "2s" and rules["HalbVrrpFault"]["for"] == "4s"
    assert "[2m]" in rules["HalbVipFailover"]["expr"] and "for" not in rules["HalbVipFailover"]


def test_keepalived_writes_its_events_to_the_exporters_fifo() -> None:
    from components.keepalived_conf import render_keepalived_conf

    conf = render_keepalived_conf(settings_of("lab"), "lb-1")
    # Order matters: a fifo before script_user takes the default user, which does not exist.
    assert (
        "    script_user root\n"
        "    vrrp_notify_fifo /run/halb/vrrp-notify.fifo\n"
        "    fifo_write_vrrp_states_on_reload\n"
        "    umask 0133\n"
    ) in conf
    assert conf.index("global_defs {") < conf.index("vrrp_notify_fifo") < conf.index("\n}\n")


def test_a_plain_prometheus_config_for_the_lab(tmp_path: Path) -> None:
    """Same jobs and `node` labels as the PodMonitors give; promtool accepts it with the rules."""
    from components.monitoring import prometheus_config

    s = settings_of("lab")
    (tmp_path / "rules.yaml").write_text(rules_file(s))
    cfg = prometheus_config(s, {n: str(s.address(n)) for n in s.lb_nodes}, ["rules.yaml"])
    jobs = {c["job_name"]: c["static_configs"] for c in cfg["scrape_configs"]}
    assert set(jobs) == set(scrape_jobs(s))
    assert jobs[job(s, "halb-vrrp")] == [
        {"targets": ["192.0.2.11:9165"], "labels": {"node": "lb-1"}},
        {"targets": ["192.0.2.12:9165"], "labels": {"node": "lb-2"}},
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout
