"""Monitoring in BGP mode (components/monitoring_bgp.py): halb-bgp's series, the rules
promtool judges (a firing and a quiet case per alert), the dashboard's BGP rows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import load_script, stack_raw, with_overrides
from test_monitoring import case, expand, metric_names, promtool  # case: the same 15 s scrapes

from components.monitoring import alert_rules, dashboard, dashboard_exprs, job, rules_file, scrape_jobs
from components.monitoring_bgp import BGP_METRICS
from components.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
hb = load_script(ROOT / "images" / "frr" / "halb-bgp")
PEER = "192.0.2.1"
# The default 15 s scrapes, as test_monitoring's cases.
S: Settings = parse_settings(with_overrides(
    stack_raw("lab"), monitoring={"enabled": True},
    bgp={"asn": 64513, "peers": [{"address": PEER, "asn": 64512}]},
    vip={"address": "203.0.113.10/32", "interface": "eth0", "routerId": 51},
))  # fmt: skip
B = job(S, "halb-bgp")
H = job(S, "halb-haproxy")
VIP = str(S.vip.ip)
RULES = {r["alert"]: r for g in alert_rules(S) for r in g["rules"]}


def alert(name: str, value: str = "0", **labels: str) -> dict[str, Any]:
    rule = RULES[name]
    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {k: expand(v, labels, value) for k, v in rule["annotations"].items()},
    }


def bgp(metric: str, values: str, node: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({"job": B, "node": node, "instance": f"{node}:9165",
                                                         **labels}.items()))  # fmt: skip
    return {"series": f"{metric}{{{inner}}}", "values": values}


def announced(node: str, values: str) -> dict[str, str]:
    return bgp("halb_bgp_announced", values, node, vip=VIP)


# Scrapes every 15 s: the VIP alert needs 30 s, host alerts 1 m.
CASES = [
    case("no host announces: fires after 30 s; one scrape between a withdrawal and the next does not", [
        announced("lb-1", "1 1 1 1 0x16"), announced("lb-2", "1 0 1 1 0x16"),
    ], [
        ("1m15s", "HalbVipNotAnnounced", []),
        ("1m30s", "HalbVipNotAnnounced", [alert("HalbVipNotAnnounced")]),
    ]),
    case("a host withdrawn for a minute and not draining fires; a draining one does not", [
        announced("lb-1", "1 1 0x18"), bgp("halb_bgp_draining", "0x20", "lb-1"),
        announced("lb-2", "1 1 0x18"), bgp("halb_bgp_draining", "0 0 1x18", "lb-2"),
        announced("lb-3", "1 0 1x18"), bgp("halb_bgp_draining", "0x20", "lb-3"),
    ], [
        ("30s", "HalbBgpHostWithdrawn", []),
        ("1m30s", "HalbBgpHostWithdrawn", [alert("HalbBgpHostWithdrawn", node="lb-1")]),
    ]),
    case("a BGP session down for a minute", [
        bgp("halb_bgp_session_up", "1x20", "lb-1", peer=PEER),
        bgp("halb_bgp_session_up", "1 1 0x18", "lb-2", peer=PEER),
    ], [
        ("30s", "HalbBgpSessionDown", []),
        ("1m30s", "HalbBgpSessionDown", [alert("HalbBgpSessionDown", node="lb-2", peer=PEER)]),
    ]),
    case("a BFD session down for a minute", [
        bgp("halb_bfd_session_up", "1 1 0x18", "lb-1", peer=PEER),
        bgp("halb_bfd_session_up", "1x20", "lb-2", peer=PEER),
    ], [
        ("30s", "HalbBfdSessionDown", []),
        ("1m30s", "HalbBfdSessionDown", [alert("HalbBfdSessionDown", node="lb-1", peer=PEER)]),
    ]),
    case("FRR not answering", [
        bgp("halb_frr_up", "1x20", "lb-1"), bgp("halb_frr_up", "1 1 0x18", "lb-2"),
    ], [
        ("30s", "HalbFrrDown", []),
        ("1m30s", "HalbFrrDown", [alert("HalbFrrDown", node="lb-2")]),
    ]),
    case("edge hosts missing: one of two targets down", [
        bgp("up", "1x20", "lb-1"), bgp("up", "1 1 0x18", "lb-2"),
    ], [
        ("30s", "HalbEdgeHostsMissing", []),
        ("1m30s", "HalbEdgeHostsMissing", [alert("HalbEdgeHostsMissing", "1")]),
    ]),
    case("an announcement changed: fires for the window, not on a steady counter", [
        bgp("halb_bgp_announcement_changes_total", "2x40", "lb-1", vip=VIP),
        bgp("halb_bgp_announcement_changes_total", "0x4 1x36", "lb-2", vip=VIP),
    ], [
        ("1m", "HalbBgpAnnouncementChanged", []),
        ("1m15s", "HalbBgpAnnouncementChanged", [alert("HalbBgpAnnouncementChanged", node="lb-2")]),
        ("11m30s", "HalbBgpAnnouncementChanged", []),
    ]),
    case("HAProxy down as halb-bgp counts it", [
        bgp("halb_haproxy_up", "1x20", "lb-1"), bgp("halb_haproxy_up", "1 1 0x18", "lb-2"),
    ], [
        ("30s", "HalbHaproxyDown", []),
        ("1m30s", "HalbHaproxyDown", [alert("HalbHaproxyDown", node="lb-2")]),
    ]),
    case("backend without a healthy server", [
        {"series": f'haproxy_backend_active_servers{{job="{H}",node="lb-1",proxy="be_shop"}}',
         "values": "2 2 0x18"},
    ], [
        ("30s", "HalbBackendNoHealthyServer", []),
        ("1m30s", "HalbBackendNoHealthyServer",
         [alert("HalbBackendNoHealthyServer", node="lb-1", proxy="be_shop")]),
    ]),
]  # fmt: skip


def _promtool_test(
    tmp_path: Path, rules: str, cases: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(rules)
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": S.monitoring.scrape_interval,
        "tests": cases,
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    return subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_the_bgp_groups_replace_the_vip_group_and_keep_haproxys() -> None:
    groups = alert_rules(S)
    assert [g["name"] for g in groups] == ["rancher-ha-lb.bgp", "rancher-ha-lb.haproxy"]
    assert not any(
        "keepalived" in r["expr"] or "halb_vip_held" in r["expr"] for g in groups for r in g["rules"]
    )
    assert scrape_jobs(S) == {H: S.load_balancer.stats_port, B: S.vrrp.metrics_port}


def test_promtool_checks_the_bgp_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(rules_file(S))
    done = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_bgp_alert_has_firing_and_quiet_cases() -> None:
    fired = {c["alertname"] for g in CASES for c in g["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for g in CASES for c in g["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == quiet == set(RULES)


def test_promtool_unit_tests_for_every_bgp_alert(tmp_path: Path) -> None:
    done = _promtool_test(tmp_path, rules_file(S), CASES)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_the_harness_fails_a_broken_bgp_rule(tmp_path: Path) -> None:
    broken = rules_file(S).replace("halb_bgp_draining", "halb_bgp_drained", 1)
    assert broken != rules_file(S)
    assert _promtool_test(tmp_path, broken, CASES[1:2]).returncode != 0


def test_rules_and_dashboard_use_only_what_halb_bgp_serves() -> None:
    exprs = dashboard_exprs(dashboard(S)) + [r["expr"] for r in RULES.values()]
    ours = {n for n in metric_names(exprs) if not n.startswith("haproxy_")}
    served = set(
        re.findall(r"^# TYPE (\w+) ", hb.metrics_text(VIP, True, 0, True, False, True, {}, {}), re.M)
    )
    assert ours and ours <= served == BGP_METRICS, (ours - served, served ^ BGP_METRICS)


def test_the_dashboards_bgp_rows_tile_and_parse(tmp_path: Path) -> None:
    d = dashboard(S)
    titles = [p["title"] for p in d["panels"]]
    assert titles[:6] == [f"VIP {VIP} announced", "Hosts announcing", "BGP sessions",
                          "Announcement changes in range", "BFD sessions", "FRR and HAProxy up"]  # fmt: skip
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"]) == 11 and "frr" in d["tags"]
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells and g["x"] + g["w"] <= 24, p["title"]
        cells |= mine
    exprs = [e.replace("$__rate_interval", "1m").replace("$__range", "1h") for e in dashboard_exprs(d)]
    groups = [
        {
            "name": "dashboard",
            "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
        }
    ]
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"groups": groups}, width=1000))
    done = subprocess.run([promtool(), "check", "rules", str(tmp_path / "d.yaml")], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
