"""Failover benchmark: our timers against the seed's, fault by fault, in the lab.

    python -m halb bench failover [--runs N] [--json FILE] [--markdown FILE]
        [--chart FILE] [--faults F,..] [--profiles P,..] [--load-seconds S]

For each profile a lab is brought up from the lab stack with that profile's
VRRP timers. Each run: a client probe opens a new TCP connection to the VIP
every 20 ms (200 ms timeout); 1 s in, a fault is injected (its time taken in
this process, right before the action); VIP additions and removals are
followed with `ip monitor` in every load-balancer namespace, and the lab's
Prometheus's /api/v1/alerts is polled from the client namespace: the time
from the fault to the first of the fault's alerts firing. Then the lab is
restored and left to settle (one VIP holder, no alert active) before the
next run.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.settings import RawConfig
from halb.bench.chart import Bar, grouped_bars, series
from halb.lab.alertwatch import AlertWatch, fired_after
from halb.lab.base import LabError, wait_until
from halb.lab.faults import inject
from halb.lab.handoff import handoff
from halb.lab.images import ensure_image
from halb.lab.lab import Lab
from halb.lab.measure import outage
from halb.lab.podman import podman
from halb.lab.state import locked
from halb.lab.teardown import teardown
from halb.stackfile import load_stack_file, stack_path


def bench_prefix() -> str:
    """A lab of its own per run: never another run's, the tests' or a developer's."""
    return "hb" + secrets.token_hex(3)


PROBE_INTERVAL_S = 0.02
PROBE_TIMEOUT_S = 0.2
LEAD_S = 1.0
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
}
# Probe window after the fault, long enough for the slowest profile to recover.
WINDOW_S = {"project": 4.0, "nowatch": 5.0, "seed": 9.0, "fast": 4.0}
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


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    load: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "runs": [asdict(r) for r in self.runs],
            "summary": summary(self.runs),
            "load": self.load,
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def first_line(*cmd: str) -> str:
        done = podman(*cmd, check=False, timeout=60)
        return (
            (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""
        )

    # The daemons as they run in the lab: from the images built from images/.
    ka, hap = ensure_image("keepalived", lambda _: None), ensure_image("haproxy", lambda _: None)
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "runtime": first_line("--version")
        + ", "
        + (first_line("info", "--format", "{{.Host.OCIRuntime.Name}}")),
        "keepalived": first_line(
            "run", "--rm", "--network", "none", "--entrypoint", '["keepalived", "--version"]', ka
        ),
        "haproxy": first_line("run", "--rm", "--network", "none", hap, "haproxy", "-v"),
    }


def faults_of(profile: str, faults: list[str]) -> list[str]:
    only = PROFILE_FAULTS.get(profile)
    return [f for f in faults if only is None or f in only]


def profile_raw(profile: str) -> RawConfig:
    base = load_stack_file(stack_path("lab"))
    values = dict(base.values)
    for key, value in PROFILES[profile].items():
        values[f"rancher-ha-lb:{key}"] = json.dumps(value)
    monitoring = json.loads(values.get("rancher-ha-lb:monitoring", "{}"))
    if monitoring.get("enabled"):
        values["rancher-ha-lb:monitoring"] = json.dumps({**monitoring, **BENCH_MONITORING})
    return RawConfig(values, base.secret_keys)


class VipMonitor:
    """`ip monitor address` per LB namespace: when each host gained or lost the VIP."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.events: list[tuple[float, str, bool]] = []  # (monotonic, node, holds)
        self._procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.initial = {n.name: lab.holds_vip(n.name) for n in lab.plan.lb_nodes}

    def start(self) -> None:
        vip = f"inet {self.lab.plan.vip}/{self.lab.plan.prefixlen} "
        for n in self.lab.plan.lb_nodes:
            proc = subprocess.Popen(
                ["ip", "-n", n.netns, "monitor", "address"], stdout=subprocess.PIPE, text=True
            )
            self._procs.append(proc)
            t = threading.Thread(target=self._read, args=(proc, n.name, vip), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, proc: subprocess.Popen[str], node: str, vip: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if vip in line and f" {self.lab.plan.interface}" in line:
                with self._lock:
                    self.events.append((time.monotonic(), node, not line.startswith("Deleted")))

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def converged_after(self, t0: float) -> float | None:
        """Seconds from t0 until one host alone held the VIP (None: never)."""
        holds = dict(self.initial)
        at = None
        with self._lock:
            events = sorted(self.events)
        for t, node, state in events:
            holds[node] = state
            if t >= t0:
                at = t if sum(holds.values()) == 1 else None
        if sum(holds.values()) != 1:
            return None
        return round(at - t0, 4) if at is not None else 0.0

    def two_holders_s(self, start: float, end: float, unplugged: set[str]) -> float:
        """Time in [start, end] with two connected hosts holding the VIP."""
        holds = {k: v for k, v in self.initial.items() if k not in unplugged}
        total, last = 0.0, start
        with self._lock:
            events = sorted(self.events)
        for t, node, state in events:
            if node in unplugged:
                continue
            t = min(max(t, start), end)
            if sum(holds.values()) >= 2:
                total += t - last
            last = t
            holds[node] = state
        if sum(holds.values()) >= 2:
            total += end - last
        return total


def first_alert(fault: str, alerts: dict[str, float]) -> tuple[str | None, float | None]:
    """The first of the fault's alerts to fire after it, and when (None: none did)."""
    fired = sorted((s, name) for name, s in alerts.items() if name in FAULT_ALERTS[fault])
    return (fired[0][1], fired[0][0]) if fired else (None, None)


Progress = Callable[[int, int, str], None]


class Bench:
    def __init__(self, runs: int, faults: list[str], total: int, progress: Progress) -> None:
        self.runs = runs
        self.faults = faults
        self.total = total
        self.done = 0
        self.progress = progress

    def step(self, text: str) -> None:
        self.progress(self.done, self.total, text)
        self.done += 1

    def settle(self, lab: Lab) -> None:
        def ok() -> bool:
            st = lab.status()["nodes"]
            lbs = [n for n in st if n["role"] == "load-balancer"]
            return sum(n["holds_vip"] for n in lbs) == 1 and all(
                n["vrrp_state"] in ("MASTER", "BACKUP") and n["haproxy_pid"] for n in lbs
            )

        if not wait_until(ok, SETTLE_TIMEOUT_S, poll=0.2):
            raise LabError(f"lab did not settle in {SETTLE_TIMEOUT_S:g} s: {lab.status()}")
        if lab.prometheus.enabled and not wait_until(
            lambda: not lab.prometheus.alerts(), SETTLE_TIMEOUT_S, 0.2
        ):
            active = [a["labels"]["alertname"] for a in lab.prometheus.alerts()]
            raise LabError(f"alerts still active {SETTLE_TIMEOUT_S:g} s after a run: {', '.join(active)}")
        time.sleep(0.5)  # let ARP caches and HAProxy checks catch up too

    def one(self, lab: Lab, profile: str, fault: str, run: int) -> RunResult:
        self.settle(lab)
        master = lab.master() or "?"
        monitor = VipMonitor(lab)
        monitor.start()
        window = LEAD_S + WINDOW_S[profile] + (PARTITION_S if fault == "split-brain" else 0.0)
        probe = lab.start_probe(100_000, PROBE_INTERVAL_S, PROBE_TIMEOUT_S, window)
        watch: AlertWatch | None = None
        try:
            if lab.prometheus.enabled:
                watch = lab.prometheus.start_watch(window, ALERT_POLL_S)
            time.sleep(LEAD_S)
            fault_t = time.monotonic()
            heal_t = None
            if fault == "handoff":
                handoff(lab, lambda _: None)
            elif fault == "split-brain":
                inject(lab, "partition", None)
                time.sleep(PARTITION_S)
                heal_t = time.monotonic()
                inject(lab, "heal", None)
            else:
                inject(lab, LAB_FAULT[fault], master)
            attempts = probe.attempts(grace_s=30)
            alerts = fired_after(watch.alerts(grace_s=30), fault_t) if watch else None
        finally:
            probe.stop()
            monitor.stop()
            if watch:
                watch.stop()
        end_t = time.monotonic()
        result = outage(attempts, fault_t)
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
            two_holders_s=round(monitor.two_holders_s(fault_t, end_t, unplugged), 4),
            master_before=master,
            served_by=live[0] if len(live) == 1 else None,
            converge_s=monitor.converged_after(heal_t) if heal_t is not None else None,
            alert=alert,
            alert_s=alert_s,
            alerts_s=alerts,
        )
        if fault in UNDO:
            inject(lab, UNDO[fault], master)
        return run_result

    def profile(self, profile: str, report: Report, load_s: float) -> None:
        prefix = bench_prefix()
        lab = Lab.create(profile_raw(profile), "lab", prefix)
        report.settings[profile] = lab.plan.settings.vrrp.model_dump(by_alias=True)
        if lab.plan.prometheus_netns:
            mon = lab.plan.settings.monitoring
            report.machine["alerts"] = {
                "poll_s": ALERT_POLL_S,
                "scrape_interval": mon.scrape_interval,
                "failover_window": mon.failover_window,
            }
        try:
            with locked(prefix, lambda _: None, "bench"):
                lab.up(lambda _: None)
            for fault in faults_of(profile, self.faults):
                for run in range(1, self.runs + 1):
                    self.step(f"{profile} {fault} run {run}/{self.runs}")
                    report.runs.append(self.one(lab, profile, fault, run))
            if load_s > 0 and profile not in PROFILE_FAULTS:
                self.settle(lab)
                self.step(f"{profile} cpu-load {load_s:g} s")
                report.load.append(load_test(lab, profile, load_s))
        finally:
            with locked(prefix, lambda _: None, "bench"):
                teardown(prefix, lambda _: None)


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
        "vip_moves": sum(1 for _, _, holds in monitor.events if holds),
        "state_changes": text.count("Entering "),
        "timer_warnings": sum(
            1 for line in text.splitlines() if "timer" in line.lower() and "expired" in line.lower()
        ),
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


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
                "outage_s": _stats([r.outage_s for r in rs]),
                "failed": _stats([float(r.failed) for r in rs]),
                "two_holders_s": _stats([r.two_holders_s for r in rs]),
                "served_by_other": sum(r.served_by not in (None, r.master_before) for r in rs),
                "converge_s": _stats([r.converge_s for r in rs if r.converge_s is not None])
                if any(r.converge_s is not None for r in rs)
                else None,
                **_alert_summary(rs),
            }
        )
    return rows


def _alert_summary(rs: list[RunResult]) -> dict[str, Any]:
    alerted = [r for r in rs if r.alert is not None and r.alert_s is not None]
    names = statistics.multimode([r.alert for r in alerted]) if alerted else []
    return {
        "alert_watched": any(r.alerts_s is not None for r in rs),
        "alert": "/".join(sorted(str(n) for n in names)) or None,
        "alerted": len(alerted),
        "alert_s": _stats([float(r.alert_s) for r in alerted if r.alert_s is not None]) if alerted else None,
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


def table(report: Report) -> str:
    rows = summary(report.runs)
    ratio = ratios(rows)
    head = (
        "| fault | profile | runs | outage min / median / max (ms) | failed requests median (max) "
        "| two VIP holders median (ms) | served by the other host | first alert, median ms from the fault "
        "(runs alerted) | seed / project |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, f, t = r["outage_s"], r["failed"], r["two_holders_s"]
        rat = ratio.get(r["fault"]) if r["profile"] == "seed" else None
        if r["profile"] != "seed" or r["fault"] not in ratio:
            rat_s = ""
        elif rat is None:
            rat_s = "project lost nothing"
        else:
            rat_s = f"{rat:g}x"
        lines.append(
            f"| {r['fault']} | {r['profile']} | {r['runs']} "
            f"| {o['min'] * 1000:.0f} / {o['median'] * 1000:.0f} / {o['max'] * 1000:.0f} "
            f"| {f['median']:g} ({f['max']:g}) | {t['median'] * 1000:.0f} "
            f"| {r['served_by_other']}/{r['runs']} | {_alert_cell(r)} | {rat_s} |"
        )
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
    return Report(machine=data["machine"], settings=data["settings"], runs=runs, load=data["load"])


def run_bench(
    runs: int,
    faults: list[str],
    profiles: list[str],
    load_s: float,
    progress: Progress,
) -> Report:
    report = Report(machine=machine(), settings={})
    total = sum(
        len(faults_of(p, faults)) * runs + (1 if load_s > 0 and p not in PROFILE_FAULTS else 0)
        for p in profiles
    )
    bench = Bench(runs, faults, total, progress)
    for profile in profiles:
        bench.profile(profile, report, load_s)
    progress(total, total, "done")
    report.machine["probe"] = {"interval_s": PROBE_INTERVAL_S, "timeout_s": PROBE_TIMEOUT_S}
    return report
