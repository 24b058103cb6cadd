"""The failover benchmark: a fast smoke run in a real lab (root), its arithmetic without one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LAB_TOOLS, require_root_tools, run_halb

from halb.bench.engine import VipMonitor
from halb.bench.failover import (
    FAULT_ALERTS,
    Report,
    RunResult,
    chart,
    load_report,
    ratios,
    summary,
    table,
)
from halb.bench.tls import HANDSHAKE_CASES


@pytest.mark.netns
def test_smoke_run_writes_every_field_with_sane_values(tmp_path: Path) -> None:
    require_root_tools(*LAB_TOOLS)
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    png = tmp_path / "bench.png"
    result = run_halb(
        "bench", "failover", "--runs", "1", "--faults", "lb-death", "--profiles", "project",
        "--load-seconds", "2", "--https", "--json", str(out), "--markdown", str(md), "--chart", str(png),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "settings", "runs", "summary", "load"}
    assert data["machine"]["cpus"] >= 1 and "keepalived" in data["machine"]["keepalived"].lower()
    assert data["machine"]["probe"] == {"interval_s": 0.02, "timeout_s": 0.2}
    assert data["settings"]["project"]["check"]["watch"] is True
    (run,) = data["runs"]
    assert set(run) == {
        "profile", "fault", "run", "outage_s", "failed", "total", "two_holders_s", "master_before",
        "served_by", "converge_s", "alert", "alert_s", "alerts_s", "https_outage_s", "https_failed",
    }  # fmt: skip
    assert run["profile"] == "project" and run["fault"] == "lb-death"
    # --https: a new TLS connection every 20 ms too, moved by the same watcher.
    assert 0 <= run["https_outage_s"] < 1.0 and 0 <= run["https_failed"] < 25
    # The watcher, not the 1 s poll, must have moved the VIP.
    assert 0 <= run["outage_s"] < 1.0
    assert 0 <= run["failed"] < 25 and run["total"] > 100
    assert 0 <= run["two_holders_s"] < 1.0
    assert run["served_by"] in ("lb-1", "lb-2") and run["served_by"] != run["master_before"]
    # The lab's Prometheus, polled from the client namespace: the first of lb-death's alerts.
    assert data["machine"]["alerts"] == {"poll_s": 0.1, "scrape_interval": "500ms", "failover_window": "2s"}
    assert run["alert"] in FAULT_ALERTS["lb-death"] and run["alerts_s"][run["alert"]] == run["alert_s"]
    assert 0 < run["alert_s"] < 5
    (row,) = data["summary"]
    assert row["outage_s"]["min"] <= row["outage_s"]["median"] <= row["outage_s"]["max"]
    assert "| lb-death | project | 1 |" in md.read_text() and "HTTPS outage" in md.read_text()
    assert f"| {run['alert']} {run['alert_s'] * 1000:.0f} (1/1) |" in md.read_text()
    assert "[" in result.stderr and "1/1" in result.stderr  # progress
    # The CPU-load phase ran (both CPUs busy for 2 s, keepalived's log read) and the chart was drawn.
    (load,) = data["load"]
    assert load["profile"] == "project" and load["seconds"] == 2
    assert set(load) == {"profile", "seconds", "vip_moves", "state_changes", "timer_warnings"}
    assert "CPU load (project, 2 s, every CPU busy)" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The rest needs no root: pure arithmetic, and flags refused before a lab.


def test_bad_flags_exit_2_before_any_lab() -> None:
    result = run_halb("bench", "failover", "--faults", "meteor", "--runs", "0", timeout=60)
    assert result.returncode == 2
    assert "meteor not allowed" in result.stderr or "0 is not in 1..50" in result.stderr


def _r(profile: str, fault: str, outage: float, failed: int = 1) -> RunResult:
    return RunResult(profile, fault, 1, outage, failed, 100, 0.0, "lb-1", "lb-2")


def test_summary_and_ratio() -> None:
    runs = [_r("project", "link-down", x) for x in (0.1, 0.2, 0.3)]
    runs += [_r("seed", "link-down", x) for x in (3.0, 3.2, 3.4)]
    runs += [_r("project", "handoff", 0.0, 0), _r("seed", "handoff", 0.5)]
    rows = summary(runs)
    ld = next(r for r in rows if r["fault"] == "link-down" and r["profile"] == "project")
    assert ld["outage_s"] == {"min": 0.1, "median": 0.2, "max": 0.3}
    assert ld["served_by_other"] == 3
    assert ratios(rows) == {"link-down": 16.0, "handoff": None}


class _FakeLab:
    """Just enough of a Lab for VipMonitor's constructor (no nodes, no I/O)."""

    def __init__(self) -> None:
        self.plan = type("Plan", (), {"lb_nodes": ()})()


def test_two_holder_time_integrates_overlap() -> None:
    mon = VipMonitor(_FakeLab())  # type: ignore[arg-type]
    mon.initial = {"lb-1": True, "lb-2": False}
    mon.events = [(1.2, "lb-2", True), (3.0, "lb-1", False)]
    assert mon.two_holders_s(1.0, 5.0, set()) == pytest.approx(1.8)
    # An unplugged host's stale VIP conflicts with no one.
    assert mon.two_holders_s(1.0, 5.0, {"lb-1"}) == 0.0


@pytest.mark.netns
def test_changes_smoke_run_a_reload_and_a_handoff_lose_nothing(tmp_path: Path) -> None:
    require_root_tools(*LAB_TOOLS)
    out = tmp_path / "changes.json"
    result = run_halb(
        "bench", "changes", "--runs", "1", "--changes", "add-hostname,handoff", "--modes", "project",
        "--json", str(out), timeout=420,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    run, handoff = data["runs"]
    assert run["change"] == "add-hostname" and run["mode"] == "project"
    assert run["failed"] == 0 and run["total"] > 100 and run["vip_moves"] == 0
    # The new name answers within the sync delay plus a second of the objects' update (the issue's bound).
    assert run["answers_after_s"] is not None and run["answers_after_s"] < data["sync_s"] + 1
    assert "| add-hostname | project | 1 | 0 (0) |" in result.stdout
    # Websockets opened before the reload and held through it: the old worker keeps them.
    assert (run["long_lived"], run["cut"]) == (4, 0)
    # A handoff: the VIP moves once, and websockets held inside the drain window stay open.
    assert handoff["change"] == "handoff" and handoff["failed"] == 0 and handoff["vip_moves"] == 1
    assert (handoff["long_lived"], handoff["cut"]) == (4, 0)


@pytest.mark.netns
def test_tls_smoke_run_resumes_only_with_shared_keys(tmp_path: Path) -> None:
    require_root_tools(*LAB_TOOLS, "h2load", "openssl")
    out = tmp_path / "tls.json"
    result = run_halb(
        "bench", "tls", "--seconds", "1", "--renewals", "1", "--sessions", "5", "--json", str(out),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [h["case"] for h in data["handshakes"]] == [c[0] for c in HANDSHAKE_CASES]
    for h in data["handshakes"]:
        assert h["failed"] == 0 and h["handshakes"] > 10, h
        assert h["resumed"] == (h["handshakes"] if h["case"].endswith("resumed") else 0), h
    for k in data["keepalive"]:
        assert k["failed"] == 0 and k["done"] > 100 and k["ok_2xx"] == k["done"], k
    (ren,) = data["renewals"]
    assert ren["failed_handshakes"] == 0 and ren["failed_requests"] == 0 and ren["handshakes"] > 10
    assert ren["renewals"][0]["served_after_s"] is not None
    shares = data["summary"]["resumed_share"]
    assert len(shares) == 12
    assert all(v == 1.0 for k, v in shares.items() if k.startswith("shared")), shares
    # HAProxy's own keys die with the host or the process that made them.
    assert all(v == 0.0 for k, v in shares.items() if k.startswith("perHost")), shares
    assert "| crash | 1.3 | 100.0% (5/5) | 0.0% (0/5) |" in result.stdout


@pytest.mark.parametrize(
    ("flags", "said"),
    [(["--seconds", "0"], "--seconds: 0 is not in 1..120"),
     (["--sessions", "5001"], "5001 is not in 1..5000"),
     (["--runs", "3"], "unrecognized arguments: --runs 3")],
)  # fmt: skip
def test_tls_bad_flags_exit_2(flags: list[str], said: str) -> None:
    result = run_halb("bench", "tls", *flags, timeout=60)
    assert result.returncode == 2 and said in result.stderr


def test_changes_bad_flags_exit_2() -> None:
    result = run_halb("bench", "changes", "--changes", "meteor", timeout=60)
    assert result.returncode == 2 and "meteor not allowed" in result.stderr


def test_table_chart_and_json_round_trip(tmp_path: Path) -> None:
    runs = [_r("project", "link-down", 0.2), _r("seed", "link-down", 3.2), _r("project", "handoff", 0.0, 0)]
    load = {"profile": "project", "seconds": 5, "vip_moves": 0, "state_changes": 0, "timer_warnings": 1}
    report = Report(machine={"cpus": 2}, settings={}, runs=runs, load=[load])
    text = table(report)
    assert "| link-down | project | 1 | 200 / 200 / 200 | 1 (1) | 0 | 1/1 | no Prometheus |  |" in text
    assert "| link-down | seed | 1 | 3200 / 3200 / 3200 | 1 (1) | 0 | 1/1 | no Prometheus | 16x |" in text
    assert (
        "CPU load (project, 5 s, every CPU busy): 0 VIP moves, 0 VRRP state changes, 1 timer warnings" in text
    )
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(report.to_json()))
    assert load_report(saved) == report
    png = tmp_path / "c.png"
    chart(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_changes_table_and_chart(tmp_path: Path) -> None:
    from halb.bench.changes import ChangeReport, ChangeRun, load_changes
    from halb.bench.changes import chart as changes_chart
    from halb.bench.changes import table as changes_table

    runs = [
        ChangeRun("project", "add-hostname", 0, 0, 400, 0, 6.0, 5.5, 4, 0),
        ChangeRun("project", "add-hostname", 1, 0, 410, 0, 7.0, 6.5, 4, 1),
        ChangeRun("baseline", "add-hostname", 0, 12, 390, 2, 30.0, 5.0, 4, 4),
        ChangeRun("project", "drain", 0, 0, 300, 1, 9.0),  # a report from before websockets were counted
    ]
    report = ChangeReport(machine={}, sync_s=5, runs=runs)
    text = changes_table(report)
    assert "| add-hostname | project | 2 | 0 (0) | 810 | 0 (0) | 6.5 | 6.0 (max 6.5) | 0.5 (1) |" in text
    assert "| add-hostname | baseline | 1 | 12 (12) | 390 | 2 (2) | 30.0 | 5.0 (max 5.0) | 4 (4) |" in text
    assert "| drain | project | 1 | 0 (0) | 300 | 1 (1) | 9.0 |  |  |" in text
    assert "websockets cut of 4 median (max)" in text
    assert "\nThe lab's kubelet syncs changed Secrets and ConfigMaps after 5 s.\nWebsockets: 4 to " in text
    saved = tmp_path / "c.json"
    saved.write_text(json.dumps(report.to_json()))
    assert load_changes(saved) == report
    png = tmp_path / "c.png"
    changes_chart(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize("bench", ["failover", "failover-https", "hostile", "changes", "tls"])
def test_the_published_results_re_table_byte_for_byte(bench: str) -> None:
    """The engine changed how tables are built, not what they say: the JSON in
    docs/ gives back its markdown table and its summary exactly."""
    from halb.bench import changes, failover, tls

    root = Path(__file__).resolve().parent.parent / "docs"
    data = json.loads((root / f"{bench}.json").read_text())
    if bench.startswith("failover") or bench == "hostile":  # hostile: a failover report with drills
        report: Any = load_report(root / f"{bench}.json")
        text = table(report)
    elif bench == "tls":
        report = tls.load_tls(root / "tls.json")
        text = tls.table(report)
    else:
        report = changes.load_changes(root / "changes.json")
        text = changes.table(report)
    assert text + "\n" == (root / f"{bench}-table.md").read_text()
    assert json.loads(json.dumps(report.to_json()))["summary"] == data["summary"]
    assert failover.FAULTS and changes.CHANGES  # both benchmarks' modules import cleanly


def test_the_tls_table_json_and_chart(tmp_path: Path) -> None:
    from halb.bench.tls import TlsReport, load_tls
    from halb.bench.tls import chart as tls_chart
    from halb.bench.tls import table as tls_table

    report = TlsReport(
        machine={"cpus": 2},
        handshakes=[
            {"case": "ECDSA full", "handshakes": 4000, "resumed": 0, "failed": 0, "seconds": 10.0,
             "per_s": 400.0},
            {"case": "ECDSA resumed", "handshakes": 9000, "resumed": 9000, "failed": 0, "seconds": 10.0,
             "per_s": 900.0},
        ],
        keepalive=[
            {"case": "HTTP/1.1", "req_s": 20000.0, "done": 200000, "failed": 0},
            {"case": "HTTPS, HTTP/1.1", "req_s": 15000.0, "done": 150000, "failed": 0, "ok_2xx": 149990},
        ],
        renewals=[{"renewals": [{"renewal": 1, "served_after_s": 5.5}, {"renewal": 2, "served_after_s": 6.5}],
                   "handshakes": 700, "failed_handshakes": 0, "requests": 90000, "failed_requests": 0}],
        resumption=[
            {"tickets": "shared", "fault": "crash", "version": "1.3", "sessions": 200, "resumed": 200,
             "new": 0, "failed": 0, "share": 1.0},
            {"tickets": "perHost", "fault": "crash", "version": "1.3", "sessions": 200, "resumed": 0,
             "new": 200, "failed": 0, "share": 0.0},
        ],
    )  # fmt: skip
    text = tls_table(report)
    assert "| ECDSA resumed | 900 | 0 | 9000/9000 | 2.25x |" in text
    assert "| HTTPS, HTTP/1.1 | 15000 | 10 | 0.75x |" in text  # 10 answers not 2xx
    assert (
        "2 renewals under load: 0 of 700 new TLS connections failed, 0 of 90000 keep-alive requests failed; "
        "the new serial served 5.5 / 6.5 / 6.5 s after the renewal (min / median / max; 2/2 seen)" in text
    )
    assert "| crash | 1.3 | 100.0% (200/200) | 0.0% (0/200) |" in text
    assert report.to_json()["summary"]["https_vs_http_keepalive"] == 0.75
    saved = tmp_path / "t.json"
    saved.write_text(json.dumps(report.to_json()))
    assert load_tls(saved) == report
    png = tmp_path / "t.png"
    tls_chart(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settling_ignores_a_moment_of_health() -> None:
    """A restored host reads BACKUP for a moment, then FAULT: that moment must not count."""
    from halb.bench.engine import steadily

    clock = iter([True, False, True, True, True])
    check = steadily(lambda: next(clock), 0.05)
    assert check() is False  # healthy, but only just
    assert check() is False  # the blip ends
    assert check() is False  # healthy again: the window starts anew
    time.sleep(0.06)
    assert check() is True


def test_a_silent_load_tool_is_a_lab_error_not_a_traceback() -> None:
    from halb.bench import tls
    from halb.lab.base import LabError

    assert tls._result('noise\n{"handshakes": 3}\n', "", "tlsload") == {"handshakes": 3}
    with pytest.raises(LabError, match=r"^tlsload resume \(crash, TLS 1.3\) printed no result: boom$"):
        tls._result("", "boom", "tlsload resume (crash, TLS 1.3)")


def test_the_hostile_section_tables_and_round_trips(tmp_path: Path) -> None:
    from halb.bench.hostile import HostileRun, table_lines

    runs = [
        HostileRun("project", "rogue-vrrp", 1, 0, 300, 0, 240, {"vrrp_refused": 240}),
        HostileRun("project", "forged-handoff", 1, 0, 700, 0, 3, {"stale": 1, "unauthenticated": 1}),
        HostileRun("project", "overload", 1, 40, 400, 0, 8192, {}, health_failures=0, health_checks=60),
    ]
    lines = table_lines(runs)
    assert "| rogue-vrrp | project | 1 | 0 (0) | 300 | 0 | vrrp_refused 240 |  |" in lines
    assert (
        "| forged-handoff | project | 1 | 0 (0) | 700 | 0 | stale 1, unauthenticated 1 | steering tables: 0 |"
        in lines
    )
    assert any(line.startswith("| overload | project | 1 | 40 (40) |") and "/healthz 60/60 answered" in line
               for line in lines)  # fmt: skip
    assert table_lines([]) == []  # a report without drills tables as before
    report = Report(machine={}, settings={}, hostile=runs)
    saved = tmp_path / "f.json"
    saved.write_text(json.dumps(report.to_json()))
    assert load_report(saved).hostile == runs
    assert "hostile" not in Report(machine={}, settings={}).to_json()


def test_the_bgp_summary_table_and_chart(tmp_path: Path) -> None:
    from halb.bench import bgp

    report = bgp.BgpReport(machine={}, settings={})
    report.scale = [{"hosts": 1, "run": 1, "req_s": 1000.0, "failed": 0},
                    {"hosts": 3, "run": 1, "req_s": 2800.0, "failed": 0},
                    {"hosts": 1, "run": 2, "req_s": 900.0, "failed": 0},
                    {"hosts": 3, "run": 2, "req_s": 2600.0, "failed": 1},
                    {"hosts": 1, "run": 3, "req_s": 1100.0, "failed": 0},
                    {"hosts": 3, "run": 3, "req_s": 3000.0, "failed": 0},
                    {"mode": "vrrp", "hosts": 1, "run": 1, "req_s": 950.0, "failed": 0}]  # fmt: skip
    report.shares = {"answered": 1200, "lb-1": 390, "lb-2": 410, "lb-3": 400}
    report.runs = [
        bgp.FailoverRun("bgp", "host-crash", 1, 0.31, 0.35, 4, 200),
        bgp.FailoverRun("bgp", "host-crash", 2, 0.29, 0.33, 3, 200),
        bgp.FailoverRun("vrrp", "host-crash", 1, None, 0.16, 8, 200),
    ]
    rows = bgp.summary(report.runs)
    assert [(r["mode"], r["fault"], r["runs"], r["failed"]) for r in rows] == [
        ("bgp", "host-crash", 2, 7),
        ("vrrp", "host-crash", 1, 8),
    ]
    assert rows[0]["detection_s"]["median"] == 0.3 and rows[1]["detection_s"] is None
    report.disruption = [
        {
            "router_hash": "hash-threshold",
            "event": "host-crash",
            "run": 1,
            "held": 60,
            "on_host": 20,
            "cut": 25,
        },
        {
            "router_hash": "hash-threshold",
            "event": "host-crash",
            "run": 2,
            "held": 60,
            "on_host": 18,
            "cut": 18,
        },
        {"router_hash": "hash-threshold", "event": "rejoin", "run": 1, "held": 60, "on_host": 0, "cut": 30},
        {"router_hash": "resilient", "event": "host-crash", "run": 1, "held": 60, "on_host": 20, "cut": 20},
        {"router_hash": "resilient", "event": "rejoin", "run": 1, "held": 60, "on_host": 0, "cut": 0},
    ]
    text = bgp.table(report)
    assert "| hash-threshold | host-crash | 2 | 120 | 38 | 43 | 5 |" in text
    assert "| hash-threshold | rejoin | 1 | 60 | 0 | 30 | 30 |" in text
    assert (
        "| resilient | host-crash | 1 | 60 | 20 | 20 | 0 |" in text
        and "| resilient | rejoin | 1 | 60 | 0 | 0 | 0 |" in text
    )
    assert "| bgp | 3 | 2800 (2600-3000) | 2.80x | 1 |" in text
    assert "| bgp | 1 | 1000 (900-1100) | 1.00x | 0 |" in text
    assert "| vrrp | 1 (the MASTER) | 950 (950-950) | 0.95x | 0 |" in text
    assert "lb-1 32.5%, lb-2 34.2%, lb-3 33.3%" in text
    assert "| bgp | host-crash | 2 | 300 ms (290 ms-310 ms) | 340 ms (330 ms-350 ms) | 7/400 |" in text
    assert "| vrrp | host-crash | 1 | - | 160 ms" in text
    bgp.chart(report, tmp_path / "bgp.png")
    assert (tmp_path / "bgp.png").stat().st_size > 1000
    assert json.loads(json.dumps(report.to_json()))["summary"] == rows


def test_bgp_bad_flags_exit_2() -> None:
    result = run_halb("bench", "bgp", "--seconds", "0")
    assert result.returncode == 2 and "--seconds" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.netns
def test_bgp_smoke_run_scales_and_fails_over(tmp_path: Path) -> None:
    """Every part once: a short scale-out, each fault once, VRRP's beside it."""
    require_root_tools(*LAB_TOOLS)
    out = tmp_path / "bgp.json"
    result = run_halb("bench", "bgp", "--runs", "1", "--seconds", "2", "--json", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [(r["mode"], r["hosts"]) for r in data["scale_out"]] == [
        ("bgp", 1),
        ("bgp", 2),
        ("bgp", 3),
        ("vrrp", 1),
    ]
    assert [r["hosts"] for r in data["scale_out_summary"]] == [1, 2, 3, 1]
    assert all(r["req_s"] > 0 and r["failed"] == 0 for r in data["scale_out"])
    assert data["shares"]["answered"] == 1200
    modes = {(r["mode"], r["fault"]) for r in data["runs"]}
    assert modes == {("bgp", f) for f in ("host-crash", "lb-death", "link-down", "planned-removal")} | {
        ("vrrp", f) for f in ("host-crash", "lb-death", "link-down")
    }
    crash = next(r for r in data["runs"] if r["mode"] == "bgp" and r["fault"] == "host-crash")
    assert crash["detection_s"] is not None and 0 < crash["detection_s"] < 3  # a guard: the bench measures
    planned = next(r for r in data["runs"] if r["fault"] == "planned-removal")
    assert planned["failed"] == 0
    events = data["disruption"]
    assert [(d["router_hash"], d["event"]) for d in events] == [
        (h, e) for h in ("hash-threshold", "resilient") for e in ("host-crash", "rejoin", "planned-removal")
    ]
    assert all(d["held"] == 60 and 0 <= d["cut"] <= 60 for d in events)
    assert all(0 < d["on_host"] < 60 for d in events if d["event"] == "host-crash")  # spread over the hosts
    # The resilient router moves only the dead host's buckets, and gives a rejoining
    # host only idle ones: the websockets elsewhere are kept (the plain router's are not).
    kept = {d["event"]: d for d in events if d["router_hash"] == "resilient"}
    assert kept["host-crash"]["cut"] <= kept["host-crash"]["on_host"] and kept["rejoin"]["cut"] == 0
    # A planned removal: the peers steer the leaving host's flows back to it for the drain.
    assert kept["planned-removal"]["cut"] == 0


def _stall(mode: str, timers: str, kind: str, downs: int = 0, moves: int = 0, routes: int = 0) -> Any:
    from halb.bench.stall import StallRun

    detection = {"100x3": 300, "20x3": 60, "advert 50 ms": 150}[timers]
    jitter = {"from_host": 9, "to_host": 9, "send_errors": 0, "delay_ms": {"p50": 20, "p99": 41, "max": 47}}
    drawn = jitter if kind == "jitter" else None
    return StallRun(mode, timers, detection, kind, 1, bfd_downs=downs, bgp_drops=downs,
                    route_changes=routes, vip_moves=moves, failed=0, total=150, jitter=drawn)  # fmt: skip


def test_the_stall_table_names_the_smallest_steady_timers(tmp_path: Path) -> None:
    from halb.bench import stall

    report = stall.StallReport(machine={})
    report.runs = [
        _stall("bgp", "100x3", "frr-stall"),
        _stall("bgp", "100x3", "jitter"),
        _stall("bgp", "20x3", "frr-stall", downs=1, routes=2),
        _stall("bgp", "20x3", "jitter"),
        _stall("vrrp", "advert 50 ms", "keepalived-stall", moves=1),
    ]
    text = stall.table(report)
    assert "| bgp | 100x3 | 300 ms | frr-stall | 1 | 0 | 0 | 0 | - | 0/150 |  |" in text
    assert "| bgp | 20x3 | 60 ms | frr-stall | 1 | 1 | 1 | 2 | - | 0/150 |  |" in text
    assert "| bgp | 100x3 | 300 ms | jitter | 1 | 0 | 0 | 0 | - | 0/150 | p99 41 ms, max 47 ms |" in text
    assert "| vrrp | advert 50 ms | 150 ms | keepalived-stall | 1 | - | - | - | 1 | 0/150 |  |" in text
    assert text.endswith("in every disturbance: 100x3")
    assert stall.smallest_steady(report.runs) == "100x3"
    # A route change alone (no session lost) also disqualifies the timers.
    report.runs[1] = _stall("bgp", "100x3", "jitter", routes=1)
    assert stall.smallest_steady(report.runs) is None
    assert text.startswith("Stall tolerance")
    data = json.loads(json.dumps(report.to_json()))
    assert data["smallest_steady"] is None and len(data["runs"]) == 5 and data["stall_s"] == 0.15
    stall.chart(report, tmp_path / "stall.png")
    assert (tmp_path / "stall.png").stat().st_size > 1000


@pytest.mark.parametrize("timers", ["5x3", "100x1", "100", "x3", "100x3,abc", ","])
def test_stall_bad_timers_exit_2(timers: str) -> None:
    result = run_halb("bench", "stall", "--timers", timers)
    assert result.returncode == 2 and "--timers" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.netns
def test_stall_smoke_run_a_stall_longer_than_detection_flaps_and_one_shorter_does_not(tmp_path: Path) -> None:
    """At BFD 100 ms x 3 a 150 ms stall of FRR is ridden out; at 20 ms x 3 it is not:
    the bench sees a flap where there is one."""
    require_root_tools(*LAB_TOOLS)
    out = tmp_path / "stall.json"
    result = run_halb("bench", "stall", "--runs", "1", "--timers", "100x3,20x3", "--modes", "bgp",
                      "--json", str(out), timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    runs = {(r["timers"], r["kind"]): r for r in data["runs"]}
    assert set(runs) == {(t, k) for t in ("100x3", "20x3") for k in ("haproxy-stall", "frr-stall", "jitter")}
    assert runs[("100x3", "frr-stall")]["bfd_downs"] == 0
    assert runs[("20x3", "frr-stall")]["bfd_downs"] >= 1
    assert runs[("100x3", "haproxy-stall")]["route_changes"] == 0  # one slow poll is not a death
    drawn = runs[("100x3", "jitter")]["jitter"]
    assert drawn["from_host"] > 0 and drawn["to_host"] > 0 and 15 < drawn["delay_ms"]["p50"] < 25
