"""Stall tolerance (issue 23): do short stalls and a jittery link make BFD, BGP or VRRP flap?

    halb bench stall [--runs N] [--timers 100x3,50x3,..] [--modes bgp,vrrp]
                     [--json FILE] [--markdown FILE] [--chart FILE]

On one load-balancer host, under the 20 ms probe, `--runs` times each:
- a 150 ms stall of HAProxy, and of FRR (every process of the container
  SIGSTOPped, then continued: a GC pause, a hypervisor's steal, a throttled
  cgroup);
- JITTER_S of jitter on the host's link (halb/lab/jitter.py's delay line,
  netem's `delay 20ms 10ms distribution normal`; this kernel has no netem).
Counted at the lab's router: BFD sessions that went down (bfdd's own
`session-down` counter), BGP sessions dropped, and the VIP's route changing
(`ip monitor route`); and the probe's failed requests. Each BFD timer of
BFD_SWEEP gets a lab of its own (the hosts and the router at those timers),
from the lab stack's 100 ms x 3 down: the smallest with 0 flaps is the answer.
The VRRP mode beside it, on the same stalls of its MASTER (keepalived in
place of FRR) at the shipped 50 ms adverts and the calm profile's 200 ms:
VIP moves counted.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.edge_pod import FRR, HAPROXY, KEEPALIVED
from components.settings import RawConfig
from halb.bench import failover
from halb.bench.bgp import RouteMonitor, bgp_raw, every, settle_bgp
from halb.bench.chart import Bar, grouped_bars
from halb.bench.engine import (
    PROBE_TIMEOUT_S,
    Progress,
    Steps,
    Window,
    bench_lab,
    machine,
    markdown_table,
    new_prefix,
    settle,
)
from halb.lab import router
from halb.lab.base import LabError
from halb.lab.faults import stall
from halb.lab.jitter import JitterLink
from halb.lab.lab import Lab
from halb.lab.probe import Attempt

STALL_S = 0.150
JITTER = {"delay_ms": 20.0, "jitter_ms": 10.0}
JITTER_S = 5.0
JITTER_PROBE_TIMEOUT_S = 1.0
BGP_STALLS = ("haproxy-stall", "frr-stall", "jitter")
VRRP_STALLS = ("haproxy-stall", "keepalived-stall", "jitter")
# (interval ms, multiplier), both ends; the first is the lab stack's (the chosen timers).
BFD_SWEEP = ((100, 3), (75, 3), (60, 3), (50, 3), (20, 3))
VRRP_PROFILES = ("project", "calm")
MODES = ("bgp", "vrrp")
STALL_CONTAINER = {"haproxy-stall": HAPROXY, "frr-stall": FRR, "keepalived-stall": KEEPALIVED}
WINDOW_S = 3.0
VICTIM = "lb-2"


@dataclass
class StallRun:
    mode: str  # bgp | vrrp
    timers: str  # "100x3" (BFD) or the VRRP profile's advert interval
    detection_ms: int  # what the timers promise: BFD interval x multiplier, VRRP's master-down
    kind: str
    run: int
    bfd_downs: int  # the router's BFD session to the host went down (bgp)
    bgp_drops: int  # the router's BGP session to the host dropped (bgp)
    route_changes: int  # the VIP's route at the router changed (bgp)
    vip_moves: int  # a host gained the VIP (vrrp)
    failed: int
    total: int
    jitter: dict[str, Any] | None = None  # what the delay line drew
    errors: dict[str, int] = field(default_factory=dict)  # the failed probes' errors, counted


def _router_counts(lab: Lab, node: str) -> tuple[int, int]:
    """(BFD session-down, BGP connections dropped) of the router's sessions to `node`."""
    address = str(lab.plan.node(node).address)
    bfd = router.vtysh(lab.plan, "show bfd peers counters json")
    bgp = router.vtysh(lab.plan, f"show bgp neighbors {address} json")
    try:
        peers = json.loads(bfd.stdout)
        downs = next(int(p["session-down"]) for p in peers if p.get("peer") == address)
        drops = int(json.loads(bgp.stdout)[address].get("connectionsDropped", 0))
    except (ValueError, KeyError, StopIteration, TypeError) as err:
        raise LabError(
            f"the router's counters for {address} unreadable ({err}): {bfd.stdout[-300:]}"
        ) from None
    return downs, drops


def _window(lab: Lab, kind: str) -> Window:
    """The probe's window; under jitter longer, and a request fails only unanswered in
    JITTER_PROBE_TIMEOUT_S (a request through the jittered host crosses its link about ten times)."""
    if kind == "jitter":
        return Window(lab, WINDOW_S + JITTER_S, probe_timeout_s=JITTER_PROBE_TIMEOUT_S)
    return Window(lab, WINDOW_S)


def _disturb(lab: Lab, kind: str, node: str, w: Window) -> dict[str, Any] | None:
    w.mark("fault")
    if kind == "jitter":
        port = lab.plan.node(node).port
        with JitterLink(lab.plan.switch_netns, port, seconds=JITTER_S, **JITTER) as line:
            time.sleep(JITTER_S)
        return line.result
    stall(lab, node, STALL_CONTAINER[kind], STALL_S)
    return None


def bgp_point(interval: int, multiplier: int, runs: int, rows: list[StallRun], steps: Steps) -> None:
    raw = _with_bfd(bgp_raw(), interval, multiplier)
    with bench_lab(raw, new_prefix("hs")) as lab:
        for kind in BGP_STALLS:
            for r in range(1, runs + 1):
                steps.step(f"stall: bgp BFD {interval}x{multiplier} {kind} run {r}/{runs}")
                settle_bgp(lab, every(lab))
                downs, drops = _router_counts(lab, VICTIM)
                monitor = RouteMonitor(lab)
                monitor.start()
                try:
                    with _window(lab, kind) as w:
                        drew = _disturb(lab, kind, VICTIM, w)
                        attempts = w.attempts(grace_s=30)
                finally:
                    monitor.stop()
                after = _router_counts(lab, VICTIM)
                rows.append(StallRun(
                    "bgp", f"{interval}x{multiplier}", interval * multiplier, kind, r,
                    bfd_downs=after[0] - downs, bgp_drops=after[1] - drops,
                    route_changes=len(monitor.events), vip_moves=0,
                    failed=sum(not a.ok for a in attempts), total=len(attempts), jitter=drew,
                    errors=_errors(attempts),
                ))  # fmt: skip


def _errors(attempts: list[Attempt]) -> dict[str, int]:
    """What the failed probes met (a timeout, a reset, a refusal), counted."""
    return dict(Counter(a.error or "no answer" for a in attempts if not a.ok))


def _with_bfd(raw: RawConfig, interval: int, multiplier: int) -> RawConfig:
    values = dict(raw.values)
    bgp = json.loads(values["rancher-ha-lb:bgp"])
    bgp["bfd"] = {"interval": interval, "multiplier": multiplier}
    values["rancher-ha-lb:bgp"] = json.dumps(bgp)
    return RawConfig(values, raw.secret_keys)


def vrrp_profile(profile: str, runs: int, rows: list[StallRun], steps: Steps) -> None:
    with bench_lab(failover.profile_raw(profile), new_prefix("hv")) as lab:
        v = lab.plan.settings.vrrp
        advert_ms = round(v.advert_interval * 1000)
        master_down = 3 * advert_ms  # RFC 5798's 3 x advert + skew (skew under one advert)
        for kind in VRRP_STALLS:
            for r in range(1, runs + 1):
                steps.step(f"stall: vrrp {profile} {kind} run {r}/{runs}")
                settle(lab, failover.SETTLE_TIMEOUT_S)
                master = lab.master()
                if master is None:
                    raise LabError(f"no MASTER before a {kind} run: {lab.status()}")
                with _window(lab, kind) as w:
                    drew = _disturb(lab, kind, master, w)
                    attempts = w.attempts(grace_s=30)
                rows.append(StallRun(
                    "vrrp", f"advert {advert_ms} ms", master_down, kind, r, 0, 0, 0,
                    vip_moves=w.monitor.moves(), failed=sum(not a.ok for a in attempts),
                    total=len(attempts), jitter=drew, errors=_errors(attempts),
                ))  # fmt: skip


def flaps(r: StallRun) -> int:
    """BFD or BGP sessions lost, routes withdrawn, VIPs moved: anything the stall shook loose."""
    return max(r.bfd_downs, r.bgp_drops) + r.vip_moves


def smallest_steady(rows: list[StallRun]) -> str | None:
    """The smallest BFD timers of the sweep at which no stall flapped anything."""
    steady = [
        (r.detection_ms, r.timers)
        for r in rows
        if r.mode == "bgp" and not any(flaps(x) or x.route_changes for x in rows if x.timers == r.timers)
    ]
    return min(steady)[1] if steady else None


HEAD = ["mode", "timers", "detection", "disturbance", "runs", "BFD downs", "BGP drops", "route changes",
        "VIP moves", "failed/probes", "jitter drawn"]  # fmt: skip


def _drawn(drew: list[dict[str, float]]) -> str:
    if not drew:
        return ""
    return f"p99 {max(d['p99'] for d in drew):.0f} ms, max {max(d['max'] for d in drew):.0f} ms"


def table_lines(rows: list[StallRun]) -> list[str]:
    if not rows:
        return []
    groups: dict[tuple[str, str, str], list[StallRun]] = {}
    for r in rows:
        groups.setdefault((r.mode, r.timers, r.kind), []).append(r)
    out = []
    for (mode, timers, kind), rs in groups.items():
        drew = [r.jitter["delay_ms"] for r in rs if r.jitter and r.jitter.get("delay_ms")]
        out.append([
            mode, timers, f"{rs[0].detection_ms} ms", kind, str(len(rs)),
            str(sum(r.bfd_downs for r in rs)) if mode == "bgp" else "-",
            str(sum(r.bgp_drops for r in rs)) if mode == "bgp" else "-",
            str(sum(r.route_changes for r in rs)) if mode == "bgp" else "-",
            str(sum(r.vip_moves for r in rs)) if mode == "vrrp" else "-",
            f"{sum(r.failed for r in rs)}/{sum(r.total for r in rs)}",
            _drawn(drew),
        ])  # fmt: skip
    lines = [
        "",
        f"Stall tolerance ({VICTIM} or the MASTER; stalls {STALL_S * 1000:.0f} ms of every process of the "
        f"container; jitter {JITTER_S:g} s of delay {JITTER['delay_ms']:g} ms +- {JITTER['jitter_ms']:g} ms "
        f"normal on its link; the probe's timeout {PROBE_TIMEOUT_S:g} s, under jitter "
        f"{JITTER_PROBE_TIMEOUT_S:g} s). Goal: 0 flaps at the chosen timers",
        "",
        *markdown_table(HEAD, out),
    ]
    if any(r.mode == "bgp" for r in rows):
        lines += [
            "",
            "Smallest BFD timers with 0 flaps and 0 route changes in every disturbance: "
            + (smallest_steady(rows) or "none of the sweep"),
        ]
    return lines


def to_json(rows: list[StallRun]) -> dict[str, Any]:
    return {"runs": [asdict(r) for r in rows], "smallest_steady": smallest_steady(rows),
            "stall_s": STALL_S, "jitter": {**JITTER, "seconds": JITTER_S}}  # fmt: skip


@dataclass
class StallReport:
    machine: dict[str, Any]
    runs: list[StallRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, **to_json(self.runs)}


def table(report: StallReport) -> str:
    return "\n".join(table_lines(report.runs)[1:])


def chart(report: StallReport, path: Path) -> None:
    """Flaps (sessions lost, routes changed, VIPs moved) per timers, a bar per disturbance."""
    groups = list(dict.fromkeys(f"{r.mode} {r.timers}" for r in report.runs))
    kinds = list(dict.fromkeys(r.kind for r in report.runs))
    bars = {}
    for kind in kinds:
        row = []
        for g in groups:
            rs = [r for r in report.runs if f"{r.mode} {r.timers}" == g and r.kind == kind]
            n = sum(flaps(r) + r.route_changes for r in rs)
            row.append(Bar(n, str(n)))
        bars[kind] = row
    grouped_bars(path, groups, bars, ylabel="flaps (all runs)",
                 title=f"{STALL_S * 1000:.0f} ms stalls and link jitter: what flapped")  # fmt: skip


def run_stall(
    runs: int,
    progress: Progress,
    timers: tuple[tuple[int, int], ...] = BFD_SWEEP,
    modes: tuple[str, ...] = MODES,
) -> StallReport:
    report = StallReport(machine=machine())
    total = runs * ((len(timers) * len(BGP_STALLS) if "bgp" in modes else 0)
                    + (len(VRRP_PROFILES) * len(VRRP_STALLS) if "vrrp" in modes else 0))  # fmt: skip
    steps = Steps(total, progress)
    if "bgp" in modes:
        for interval, multiplier in timers:
            bgp_point(interval, multiplier, runs, report.runs, steps)
    if "vrrp" in modes:
        for profile in VRRP_PROFILES:
            vrrp_profile(profile, runs, report.runs, steps)
    steps.finish()
    return report
