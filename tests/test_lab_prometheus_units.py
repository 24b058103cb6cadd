"""The lab's Prometheus, the exporter view of `lab status` and the bench's alert column, without root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import rendered, settings_of, stack_raw, with_overrides

from components.monitoring import alert_rules, job
from components.settings import parse_settings
from halb.bench import failover
from halb.bench.failover import FAULT_ALERTS, Report, RunResult, first_alert, profile_raw, summary, table
from halb.cli import print_status
from halb.lab import alertwatch
from halb.lab.alertwatch import fired_after
from halb.lab.base import LabError
from halb.lab.metrics import parse, view
from halb.lab.prometheus import LabPrometheus, rule_groups
from halb.lab.topology import plan_lab
from halb.render import manifests

PLAN = plan_lab(settings_of("lab"), "t", "x")


def lab_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads(json.dumps(manifests(rendered("lab"))))  # a copy to change
    return docs


def needs_promtool() -> None:
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        pytest.skip("needs prometheus and promtool (make deps installs Debian's prometheus)")


# --- config and rules --------------------------------------------------------------------


def test_prepare_writes_the_scrape_jobs_and_the_rendered_rules(tmp_path: Path) -> None:
    needs_promtool()
    s = PLAN.settings
    cmd = LabPrometheus(PLAN, tmp_path).prepare(lab_docs())
    assert cmd is not None and cmd[0] == "prometheus"
    flags = dict(a.split("=", 1) for a in cmd[1:])
    assert flags["--storage.tsdb.path"] == str(tmp_path / "prometheus" / "data")  # in the lab's directory
    assert flags["--web.listen-address"] == "0.0.0.0:9090"
    config = yaml.safe_load(Path(flags["--config.file"]).read_text())
    assert config["global"] == {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
    jobs = {c["job_name"]: c["static_configs"] for c in config["scrape_configs"]}
    assert jobs[job(s, "halb-vrrp")] == [
        {"targets": ["192.0.2.11:9165"], "labels": {"node": "lb-1"}},
        {"targets": ["192.0.2.12:9165"], "labels": {"node": "lb-2"}},
    ]
    assert jobs[job(s, "halb-haproxy")][0]["targets"] == ["192.0.2.11:8404"]
    # Exactly the groups of the rendered PrometheusRule, which are alert_rules(s).
    (rules,) = config["rule_files"]
    (rule_doc,) = [d for d in lab_docs() if d["kind"] == "PrometheusRule"]
    assert Path(rules).name == f"{s.edge_namespace}-{rule_doc['metadata']['name']}.yaml"
    loaded = yaml.safe_load(Path(rules).read_text())
    assert loaded == {"groups": rule_doc["spec"]["groups"]} == {"groups": alert_rules(s)}


def test_prepare_refuses_rules_promtool_refuses(tmp_path: Path) -> None:
    needs_promtool()
    docs = lab_docs()
    (rule_doc,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rule_doc["spec"]["groups"][0]["rules"][0]["expr"] = "sum(halb_vip_held"
    with pytest.raises(LabError, match=r"promtool check config .*\n(.|\n)*parse error"):
        LabPrometheus(PLAN, tmp_path).prepare(docs)


def test_no_prometheus_without_monitoring(tmp_path: Path) -> None:
    plan = plan_lab(parse_settings(with_overrides(stack_raw("lab"), monitoring=None)), "t", "x")
    prom = LabPrometheus(plan, tmp_path)
    assert not prom.enabled and prom.prepare(lab_docs()) is None and prom.status() is None
    assert not (tmp_path / "prometheus").exists()
    with pytest.raises(LabError, match=r"monitoring\.enabled is false"):
        prom.alerts()


def test_rule_groups_come_from_every_prometheus_rule() -> None:
    docs: list[dict[str, Any]] = [
        {"kind": "ConfigMap", "metadata": {"name": "x"}},
        {
            "kind": "PrometheusRule",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"groups": [{"x": 1}]},
        },
        {
            "kind": "PrometheusRule",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"groups": [{"x": 2}]},
        },
    ]
    assert rule_groups(docs) == {"n-a": [{"x": 1}], "n-b": [{"x": 2}]}


# --- the alert watcher ---------------------------------------------------------------------


def _alert(name: str, state: str, active: str = "2026-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "state": state, "activeAt": active}


def test_watch_records_when_each_alert_was_first_pending_and_firing(monkeypatch: pytest.MonkeyPatch) -> None:
    polls: list[list[dict[str, Any]] | Exception] = [
        [],
        OSError("connection refused"),
        [_alert("HalbVipMultipleHolders", "pending")],
        [_alert("HalbVipMultipleHolders", "firing")],
        [_alert("HalbVipMultipleHolders", "firing"), _alert("HalbVipFailover", "firing", node="lb-2")],
    ]
    clock = iter(float(t) for t in range(1000))

    def get(url: str, timeout: float) -> list[dict[str, Any]]:
        assert url == "http://192.0.2.252:9090"
        item = polls.pop(0) if polls else []
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(alertwatch, "_get_alerts", get)
    out = alertwatch.watch("http://192.0.2.252:9090", 20, 1, now=lambda: next(clock), sleep=lambda _: None)
    assert out["errors"] == 1 and out["last_error"] == "connection refused" and out["polls"] >= 5
    split, failover = out["alerts"]
    assert split["name"] == "HalbVipMultipleHolders" and split["pending_t"] < split["firing_t"]
    assert failover["labels"] == {"alertname": "HalbVipFailover", "node": "lb-2"}
    assert failover["pending_t"] is None and failover["firing_t"] > split["firing_t"]


def test_only_alerts_that_fire_after_the_fault_count() -> None:
    alerts: list[dict[str, Any]] = [
        {"name": "HalbVipFailover", "firing_t": 9.0},  # still firing from before: not this fault's
        {"name": "HalbVipFailover", "firing_t": 12.5},
        {"name": "HalbVipFailover", "firing_t": 11.25},
        {"name": "HalbEdgeHostsMissing", "firing_t": 13.0},
        {"name": "HalbVipStale", "firing_t": None},  # pending only
    ]
    assert fired_after(alerts, 10.0) == {"HalbVipFailover": 1.25, "HalbEdgeHostsMissing": 3.0}
    assert first_alert("host-crash", {"HalbEdgeHostsMissing": 3.0, "HalbVipFailover": 1.25}) == (
        "HalbVipFailover",
        1.25,
    )
    # Only the fault's own alerts count.
    assert first_alert("split-brain", {"HalbVipFailover": 0.5}) == (None, None)


def test_every_fault_alert_is_a_rule() -> None:
    names = {r["alert"] for g in alert_rules(settings_of("lab")) for r in g["rules"]}
    assert set(FAULT_ALERTS) == set(failover.FAULTS)
    assert {a for alerts in FAULT_ALERTS.values() for a in alerts} <= names


# --- the bench's alert column --------------------------------------------------------------


def _run(fault: str, alert_s: float | None, alerts: dict[str, float] | None) -> RunResult:
    r = RunResult("project", fault, 1, 0.1, 5, 100, 0.0, "lb-1", "lb-2", alerts_s=alerts)
    r.alert, r.alert_s = first_alert(fault, alerts or {})
    assert r.alert_s == alert_s
    return r


def test_table_has_the_alert_latency_column() -> None:
    runs = [
        _run("host-crash", 0.8, {"HalbVipFailover": 0.8, "HalbEdgeHostsMissing": 3.1}),
        _run("host-crash", 1.2, {"HalbVipFailover": 1.2}),
        _run("host-crash", None, {}),
        _run("split-brain", 1.7, {"HalbVipMultipleHolders": 1.7}),
        _run("lb-death", None, None),
    ]
    rows = {r["fault"]: r for r in summary(runs)}
    assert rows["host-crash"]["alert_s"] == {"min": 0.8, "median": 1.0, "max": 1.2}
    assert (rows["host-crash"]["alert"], rows["host-crash"]["alerted"]) == ("HalbVipFailover", 2)
    text = table(Report(machine={}, settings={}, runs=runs))
    head, _, *lines = text.splitlines()
    assert "| first alert, median ms from the fault (runs alerted) |" in head
    assert head.count("|") == _.count("|")
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[7] for line in lines if line.startswith("|")}
    assert cells == {
        "host-crash": "HalbVipFailover 1000 (2/3)",
        "lb-death": "no Prometheus",
        "split-brain": "HalbVipMultipleHolders 1700 (1/1)",
    }
    assert summary([_run("handoff", None, {})])[0]["alert_s"] is None
    assert "none fired (0/1)" in table(Report(machine={}, settings={}, runs=[_run("handoff", None, {})]))


def test_bench_profiles_keep_monitoring_with_a_short_failover_window() -> None:
    for profile in failover.PROFILES:
        mon = parse_settings(profile_raw(profile)).monitoring
        assert (mon.enabled, mon.scrape_interval, mon.failover_window) == (True, "500ms", "2s")


# --- lab status: the exporter's view ---------------------------------------------------------

EXPOSITION = """\
# TYPE keepalived_vrrp_state gauge
keepalived_vrrp_state{iname="VI_51",interface="eth0",vrid="51"} 2.0
# TYPE keepalived_become_master_total counter
keepalived_become_master_total{iname="VI_51"} 3.0
# TYPE keepalived_up gauge
keepalived_up 1.0
# TYPE halb_vip_held gauge
halb_vip_held{vip="192.0.2.10"} 1.0
"""


def test_exporter_view_is_the_state_keepalived_announced() -> None:
    v = view(parse(EXPOSITION), PLAN)
    assert v is not None
    assert (v.state, v.source, v.become_master_total, v.vip_held) == ("MASTER", "exporter", 3.0, True)
    fault = view(parse(EXPOSITION.replace("} 2.0", "} 3.0")), PLAN)
    assert fault is not None and fault.state == "FAULT"


def test_exporter_view_of_a_killed_keepalived_is_stopped() -> None:
    """SIGKILL announces nothing: the gauge keeps MASTER, keepalived_up says it is gone."""
    v = view(parse(EXPOSITION.replace("keepalived_up 1.0", "keepalived_up 0.0")), PLAN)
    assert v is not None and v.state == "STOPPED"


def test_exporter_without_the_instance_is_no_view() -> None:
    other = EXPOSITION.replace("VI_51", "VI_9")
    assert view(parse(other), PLAN) is None
    with pytest.raises(ValueError):
        parse("<html>not metrics</html>\n")


WHY = "exporter at http://127.0.0.1:9165/metrics did not answer: x"


def test_status_text_says_where_prometheus_is_and_why_a_state_came_from_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lb = {"role": "load-balancer", "address": "192.0.2.11", "holds_vip": True, "keepalived_pid": 7,
          "haproxy_pid": 8}  # fmt: skip
    print_status(
        {
            "prefix": "t", "stack": "lab", "vip": "192.0.2.10", "url": "http://192.0.2.10:80/",
            "client_netns": "t-x~client",
            "prometheus": {"url": "http://192.0.2.252:9090", "netns": "t-x~prom",
                           "firing": ["HalbVipFailover"]},
            "nodes": [
                {**lb, "name": "lb-1", "vrrp_state": "MASTER", "vrrp_source": "exporter"},
                {**lb, "name": "lb-2", "vrrp_state": "BACKUP", "holds_vip": False,
                 "vrrp_source": f"keepalived log ({WHY})"},
            ],
        }
    )  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "VRRP state from the keepalived log (exporter at http://127.0.0.1:9165/metrics did not answer" in out
    )
    assert out.count("VRRP state from") == 1
    assert "Prometheus http://192.0.2.252:9090 (netns t-x~prom); alerts firing: HalbVipFailover" in out
