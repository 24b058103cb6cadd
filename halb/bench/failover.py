"""Failover benchmark: our timers against the seed's, fault by fault, in the lab.

    halb bench failover [--runs N] [--json FILE] [--markdown FILE]
        [--chart FILE] [--faults F,..] [--profiles P,..] [--load-seconds S]

For each profile a lab is brought up from the lab stack with that profile's
VRRP timers. Each run is a measurement window (halb/bench/engine.py: the
20 ms probe, the VIP's moves with `ip monitor` in every load-balancer
namespace, the lab's Prometheus's /api/v1/alerts polled from the client
namespace); 1 s in, a fault is injected (its time taken in this process,
right before the action). Then the lab is restored and left to settle (one
VIP holder, no alert active) before the next run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.settings import RawConfig
from halb.bench import hostile
from halb.bench.chart import Bar, grouped_bars, series
from halb.bench.engine import (
    Progress,
    Steps,
    VipMonitor,
    Window,
    bench_lab,
    machine,
    markdown_table,
    new_prefix,
    probe_settings,
    quiet,
    settle,
    stats,
)
from halb.lab.faults import inject
from halb.lab.handoff import handoff
from halb.lab.lab import Lab
from halb.lab.measure import outage
from halb.stackfile import load_stack_file, stack_path

# A container killed again waits out the kubelet's back-off (10, 20, 40 ... 300 s).
SETTLE_TIMEOUT_S = 330.0

# The seed's timers (VRRPv2, advert_int 1, check every 2 s, fall 2, rise 2),
# its shell bug fixed so the check can pass at all; no watcher.
SEED_VRRP = {
    "version": 2,
    "advertInterval": 1,
    "check": {"interval": 2, "timeout": 2, "fall": 2, "rise": 2, "watch": False},
}
PROFILES: dict[str, dict[str, Any]] = {
    "project": {},
    # The project's timers without the haproxy-watch sidecar: the 1 s curl
    # check alone must see HAProxy's death.
    "nowatch": {"vrrp": {"check": {"watch": False}}},
    "seed": {"vrrp": SEED_VRRP},
    # Not a default: how much faster adverts would buy, and at what price.
    "fast": {"vrrp": {"advertInterval": 0.02}},
    # Not a default either: 200 ms adverts, what a flood that drops packets on the
    # link cannot turn into three lost adverts in a row (the overload drill).
    "calm": {"vrrp": {"advertInterval": 0.2}},
}
# Probe window after the fault, long enough for the slowest profile to recover.
WINDOW_S = {"project": 4.0, "nowatch": 5.0, "seed": 9.0, "fast": 4.0, "calm": 5.0}
# A profile that differs from `project` in one mechanism runs only the faults
# that mechanism is for.
PROFILE_FAULTS = {"nowatch": ("lb-death",)}
FAULTS = ("host-crash", "lb-death", "link-down", "keepalived-kill", "handoff", "split-brain")
# Longer than the seed's master-down interval (3 x 1 s + skew), so both
# profiles really split.
PARTITION_S = 5.0
LAB_FAULT = {
    "host-crash": "crash",
    "lb-death": "kill-haproxy",
    "link-down": "link-down",
    "keepalived-kill": "kill-keepalived",
}
UNDO = {"host-crash": "restore", "link-down": "link-up"}
# The alerts that tell an operator of each fault (components/monitoring.py);
# the first of them to fire counts. A host's alerts wait four scrape
# intervals: a container the kubelet restarts at once may be back before.
FAULT_ALERTS = {
    "host-crash": ("HalbVipFailover", "HalbEdgeHostsMissing", "HalbHaproxyDown"),
    "lb-death": ("HalbHaproxyDown", "HalbVipFailover", "HalbVrrpFault"),
    "link-down": ("HalbVipFailover", "HalbEdgeHostsMissing", "HalbHaproxyDown"),
    "keepalived-kill": ("HalbKeepalivedDown", "HalbVipFailover", "HalbVipMultipleHolders"),
    "handoff": ("HalbVipFailover",),
    "split-brain": ("HalbVipMultipleHolders",),
}
ALERT_POLL_S = 0.1
# A failover alert stays firing for failoverWindow; runs come ~10 s apart and
# the next one must see its own. When it fires does not depend on the window
# (`increase() > 0` once the new MASTER's counter is scraped).
BENCH_MONITORING = {"failoverWindow": "2s"}


@dataclass
class RunResult:
    profile: str
    fault: str
    run: int
    outage_s: float
    failed: int
    total: int
    two_holders_s: float
    master_before: str
    served_by: str | None
    converge_s: float | None = None  # split-brain: heal to one VIP holder
    alert: str | None = None  # the first of FAULT_ALERTS[fault] to fire
    alert_s: float | None = None  # fault to that alert firing
    alerts_s: dict[str, float] | None = None  # every alert that fired after the fault (None: no Prometheus)
    https_outage_s: float | None = None  # the same, for a new TLS connection every 20 ms (None: not measured)
    https_failed: int | None = None


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    load: list[dict[str, Any]] = field(default_factory=list)
    hostile: list[hostile.HostileRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {
            "machine": self.machine,
            "settings": self.settings,
            "runs": [asdict(r) for r in self.runs],
            "summary": summary(self.runs),
            "load": self.load,
        }
        return {**data, "hostile": hostile.runs_to_json(self.hostile)} if self.hostile else data


def faults_of(profile: str, faults: list[str]) -> list[str]:
    only = PROFILE_FAULTS.get(profile)
    return [f for f in faults if f in FAULTS and (only is None or f in only)]


def drills_of(profile: str, faults: list[str]) -> list[str]:
    """The hostile drills asked for (every profile but one limited to its own faults)."""
    return [f for f in faults if f in hostile.HOSTILE and profile not in PROFILE_FAULTS]


def profile_raw(profile: str, https: bool = False) -> RawConfig:
    """The lab stack with the profile's timers; `https`: HTTPS on every service too (HTTP still served)."""
    base = load_stack_file(stack_path("lab"))
    values = dict(base.values)
    if https:
        services = json.loads(values["rancher-ha-lb:services"])
        for svc in services:
            svc["tls"] = {"secretName": f"{svc['name']}-tls", "redirect": False}
        values["rancher-ha-lb:services"] = json.dumps(services)
    for key, value in PROFILES[profile].items():
        values[f"rancher-ha-lb:{key}"] = json.dumps(value)
    monitoring = json.loads(values.get("rancher-ha-lb:monitoring", "{}"))
    if monitoring.get("enabled"):
        values["rancher-ha-lb:monitoring"] = json.dumps({**monitoring, **BENCH_MONITORING})
    return RawConfig(values, base.secret_keys)


def first_alert(fault: str, alerts: dict[str, float]) -> tuple[str | None, float | None]:
    """The first of the fault's alerts to fire after it, and when (None: none did)."""
    fired = sorted((s, name) for name, s in alerts.items() if name in FAULT_ALERTS[fault])
    return (fired[0][1], fired[0][0]) if fired else (None, None)


def inject_fault(lab: Lab, fault: str, master: str, window: Window) -> None:
    """The fault, its time marked right before the action (`fault`, and `heal` for a split)."""
    window.mark("fault")
    if fault == "handoff":
        handoff(lab, quiet)
    elif fault == "split-brain":
        inject(lab, "partition", None)
        time.sleep(PARTITION_S)
        window.mark("heal")
        inject(lab, "heal", None)
    else:
        inject(lab, LAB_FAULT[fault], master)


def one_run(lab: Lab, profile: str, fault: str, run: int) -> RunResult:
    settle(lab, SETTLE_TIMEOUT_S, alerts=True)
    master = lab.master() or "?"
    window_s = WINDOW_S[profile] + (PARTITION_S if fault == "split-brain" else 0.0)
    tls_services = lab.plan.settings.tls_services
    tls_host = tls_services[0].hostnames[0] if tls_services and tls_services[0].hostnames else None
    with Window(lab, window_s, ALERT_POLL_S, tls_host=tls_host) as w:
        inject_fault(lab, fault, master, w)
        attempts = w.attempts(grace_s=30)
        tls_attempts = w.attempts(grace_s=30, tls=True) if tls_host else None
        alerts = w.alerts_after("fault", grace_s=30)
    fault_t = w.marks["fault"]
    result = outage(attempts, fault_t)
    https = outage(tls_attempts, fault_t) if tls_attempts is not None else None
    unplugged = {master} if fault == "host-crash" else set()
    live = [n for n in lab.vip_holders() if n not in unplugged]
    alert, alert_s = first_alert(fault, alerts or {})
    run_result = RunResult(
        profile=profile,
        fault=fault,
        run=run,
        outage_s=round(result.outage_s, 4),
        failed=result.failed,
        total=result.total,
        two_holders_s=round(w.monitor.two_holders_s(fault_t, w.marks["end"], unplugged), 4),
        master_before=master,
        served_by=live[0] if len(live) == 1 else None,
        converge_s=w.monitor.converged_after(w.marks["heal"]) if "heal" in w.marks else None,
        alert=alert,
        alert_s=alert_s,
        alerts_s=alerts,
        https_outage_s=round(https.outage_s, 4) if https else None,
        https_failed=https.failed if https else None,
    )
    if fault in UNDO:
        inject(lab, UNDO[fault], master)
    return run_result


def run_profile(
    profile: str,
    faults: list[str],
    runs: int,
    load_s: float,
    report: Report,
    steps: Steps,
    https: bool = False,
) -> None:
    with bench_lab(profile_raw(profile, https), new_prefix("hb")) as lab:
        report.settings[profile] = lab.plan.settings.vrrp.model_dump(by_alias=True)
        if lab.plan.prometheus_netns:
            mon = lab.plan.settings.monitoring
            report.machine["alerts"] = {
                "poll_s": ALERT_POLL_S,
                "scrape_interval": mon.scrape_interval,
                "failover_window": mon.failover_window,
            }
        for fault in faults_of(profile, faults):
            for run in range(1, runs + 1):
                steps.step(f"{profile} {fault} run {run}/{runs}")
                report.runs.append(one_run(lab, profile, fault, run))
        for kind in drills_of(profile, faults):
            for run in range(1, runs + 1):
                steps.step(f"{profile} {kind} run {run}/{runs}")
                report.hostile.append(hostile.one_run(lab, profile, kind, run))
        if load_s > 0 and profile not in PROFILE_FAULTS:
            settle(lab, SETTLE_TIMEOUT_S, alerts=True)
            steps.step(f"{profile} cpu-load {load_s:g} s")
            report.load.append(load_test(lab, profile, load_s))


def load_test(lab: Lab, profile: str, seconds: float) -> dict[str, Any]:
    """Both CPUs busy: does anything fail over, and does keepalived fall behind?"""
    logs = [lab.pods.log(n.name, "keepalived").resolve() for n in lab.plan.lb_nodes]
    sizes = [p.stat().st_size for p in logs]
    monitor = VipMonitor(lab)
    monitor.start()
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        for h in hogs:
            h.wait(timeout=seconds + 30)
    finally:
        for h in hogs:  # only the PIDs we started
            if h.poll() is None:
                h.kill()
        monitor.stop()
    text = "".join(p.read_text(errors="replace")[size:] for p, size in zip(logs, sizes, strict=True))
    return {
        "profile": profile,
        "seconds": seconds,
        "vip_moves": monitor.moves(),
        "state_changes": text.count("Entering "),
        "timer_warnings": sum(
            1 for line in text.splitlines() if "timer" in line.lower() and "expired" in line.lower()
        ),
    }


def summary(runs: list[RunResult]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r.fault, r.profile) for r in runs}, key=lambda k: (FAULTS.index(k[0]), k[1]))
    for fault, profile in keys:
        rs = [r for r in runs if r.fault == fault and r.profile == profile]
        rows.append(
            {
                "fault": fault,
                "profile": profile,
                "runs": len(rs),
                "outage_s": stats(r.outage_s for r in rs),
                "failed": stats(float(r.failed) for r in rs),
                "two_holders_s": stats(r.two_holders_s for r in rs),
                "served_by_other": sum(r.served_by not in (None, r.master_before) for r in rs),
                "converge_s": stats(r.converge_s for r in rs if r.converge_s is not None)
                if any(r.converge_s is not None for r in rs)
                else None,
                **_alert_summary(rs),
                **_https_summary(rs),
            }
        )
    return rows


def _https_summary(rs: list[RunResult]) -> dict[str, Any]:
    """Only where the HTTPS probe ran (`--https`): the published tables stay as they are."""
    measured = [r for r in rs if r.https_outage_s is not None]
    if not measured:
        return {}
    return {
        "https_outage_s": stats(float(r.https_outage_s) for r in measured if r.https_outage_s is not None),
        "https_failed": stats(float(r.https_failed or 0) for r in measured),
    }


def _alert_summary(rs: list[RunResult]) -> dict[str, Any]:
    alerted = [r for r in rs if r.alert is not None and r.alert_s is not None]
    names = statistics.multimode([r.alert for r in alerted]) if alerted else []
    return {
        "alert_watched": any(r.alerts_s is not None for r in rs),
        "alert": "/".join(sorted(str(n) for n in names)) or None,
        "alerted": len(alerted),
        "alert_s": stats(float(r.alert_s) for r in alerted if r.alert_s is not None) if alerted else None,
    }


def _alert_cell(row: dict[str, Any]) -> str:
    if not row["alert_watched"]:
        return "no Prometheus"
    if row["alert_s"] is None:
        return f"none fired (0/{row['runs']})"
    return f"{row['alert']} {row['alert_s']['median'] * 1000:.0f} ({row['alerted']}/{row['runs']})"


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for fault in FAULTS:
        med = {r["profile"]: r["outage_s"]["median"] for r in rows if r["fault"] == fault}
        if "seed" in med and "project" in med:
            out[fault] = round(med["seed"] / med["project"], 1) if med["project"] > 0 else None
    return out


HEAD = [
    "fault", "profile", "runs", "outage min / median / max (ms)", "failed requests median (max)",
    "two VIP holders median (ms)", "served by the other host",
    "first alert, median ms from the fault (runs alerted)", "seed / project",
]  # fmt: skip


def _ratio_cell(row: dict[str, Any], ratio: dict[str, float | None]) -> str:
    if row["profile"] != "seed" or row["fault"] not in ratio:
        return ""
    rat = ratio[row["fault"]]
    return "project lost nothing" if rat is None else f"{rat:g}x"


def table(report: Report) -> str:
    rows = summary(report.runs)
    ratio = ratios(rows)

    def cells(r: dict[str, Any]) -> list[str]:
        o, f, t = r["outage_s"], r["failed"], r["two_holders_s"]
        return [
            r["fault"], r["profile"], str(r["runs"]),
            f"{o['min'] * 1000:.0f} / {o['median'] * 1000:.0f} / {o['max'] * 1000:.0f}",
            f"{f['median']:g} ({f['max']:g})", f"{t['median'] * 1000:.0f}",
            f"{r['served_by_other']}/{r['runs']}", _alert_cell(r), _ratio_cell(r, ratio),
        ]  # fmt: skip

    https = any("https_outage_s" in r for r in rows)
    head = HEAD + (["HTTPS outage min / median / max (ms), failed median"] if https else [])

    def https_cell(r: dict[str, Any]) -> list[str]:
        if not https:
            return []
        o = r.get("https_outage_s")
        if o is None:
            return [""]
        ms = f"{o['min'] * 1000:.0f} / {o['median'] * 1000:.0f} / {o['max'] * 1000:.0f}"
        return [f"{ms}, {r['https_failed']['median']:g}"]

    lines = markdown_table(head, (cells(r) + https_cell(r) for r in rows))
    for r in rows:
        if r["converge_s"] is not None:
            c = r["converge_s"]
            lines.append(
                f"\nsplit-brain ({r['profile']}): after heal one VIP holder again in "
                f"{c['min'] * 1000:.0f} / {c['median'] * 1000:.0f} / {c['max'] * 1000:.0f} ms "
                "(min/median/max)"
            )
    for load in report.load:
        lines.append("")
        lines.append(
            f"CPU load ({load['profile']}, {load['seconds']:g} s, every CPU busy): "
            f"{load['vip_moves']} VIP moves, {load['state_changes']} VRRP state changes, "
            f"{load['timer_warnings']} timer warnings"
        )
    lines += hostile.table_lines(report.hostile)
    return "\n".join(lines)


def chart(report: Report, path: Path) -> None:
    rows = summary(report.runs)
    faults = [f for f in FAULTS if any(r["fault"] == f for r in rows)]
    profiles = [p for p in PROFILES if any(r["profile"] == p for r in rows)]

    def bar(r: dict[str, Any] | None) -> Bar:
        o = r["outage_s"] if r else {"min": 0.0, "median": 0.0, "max": 0.0}
        m = max(o["median"] * 1000, 1.0)  # log axis: a lossless fault is drawn at 1 ms
        low, high = max(o["min"] * 1000, 1.0), max(o["max"] * 1000, 1.0)
        return Bar(m, f"{o['median'] * 1000:.0f}", m - low, high - m)

    grouped_bars(
        path, faults, series(rows, ("fault", "profile"), faults, profiles, bar),
        ylabel="outage (ms, median; bars min..max)",
        title="VIP failover outage per fault: project timers vs the seed's",
        log=True,
    )  # fmt: skip


def load_report(path: Path) -> Report:
    """A Report back from the JSON `--json` wrote (to redraw or re-table it)."""
    data = json.loads(path.read_text())
    runs = [RunResult(**r) for r in data["runs"]]
    drills = hostile.runs_from_json(data.get("hostile", []))
    return Report(
        machine=data["machine"], settings=data["settings"], runs=runs, load=data["load"], hostile=drills
    )


def run_bench(
    runs: int,
    faults: list[str],
    profiles: list[str],
    load_s: float,
    progress: Progress,
    https: bool = False,
) -> Report:
    report = Report(machine=machine(), settings={})
    total = sum(
        (len(faults_of(p, faults)) + len(drills_of(p, faults))) * runs
        + (1 if load_s > 0 and p not in PROFILE_FAULTS else 0)
        for p in profiles
    )
    steps = Steps(total, progress)
    for profile in profiles:
        run_profile(profile, faults, runs, load_s, report, steps, https)
    steps.finish()
    report.machine["probe"] = probe_settings()
    return report
