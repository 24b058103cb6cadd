"""BGP benchmark (issue 23): the tier scaled out over every host, and its failover, beside VRRP.

    halb bench bgp [--runs N] [--seconds S] [--parts scale-out,failover,vrrp]
                   [--json FILE] [--markdown FILE] [--chart FILE]

Scale-out: the lab-bgp stack (three load-balancer hosts, the FRR router
between the client and them), each host's HAProxy limited to SCALE_CPU of a
CPU (the lab's kubelet applies the limit, as a kubelet does) and the apps
served by nginx (faster than the edge, so the edge is what is measured).
With 1, 2 and 3 hosts announcing (the others draining), h2load's requests
per second over keep-alive connections; then SHARE_FLOWS new connections
and each host's share of them (its HAProxy's own counter).

Failover: for each fault, `--runs` times, in a measurement window
(halb/bench/engine.py's 20 ms probe): how long until the router's FIB no
longer sends the VIP to the host (`ip monitor route` in the router's
namespace), and the outage the probe saw (fault to the first answer after
the last failure; with ECMP only the flows hashed to that host fail). The
VRRP mode's own numbers for the same faults come from a VRRP lab in the
same run (halb/bench/failover.py's runs), the baseline.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.edge_pod import DRAIN_FILE
from components.settings import RawConfig
from halb.bench import failover
from halb.bench.chart import Bar, grouped_bars
from halb.bench.engine import (
    Progress,
    Steps,
    Window,
    bench_lab,
    machine,
    markdown_table,
    new_prefix,
    settle,
    stats,
    steadily,
)
from halb.lab import router
from halb.lab.base import LabError, in_ns, run, wait_until
from halb.lab.faults import inject
from halb.lab.held import held
from halb.lab.lab import Lab
from halb.lab.measure import outage
from halb.lab.state import ROUTER_HASHES
from halb.stackfile import load_stack_file, stack_path

# Each host's HAProxy CPU limit for the scale-out: low enough that three of them,
# nginx, h2load and the router's forwarding fit in the lab's two CPUs.
SCALE_CPU = "100m"
# The benchmark's parts: scale-out, the BGP faults and disruption, the VRRP faults (the baseline).
PARTS = ("scale-out", "failover", "vrrp")
SHARE_FLOWS = 1200
H2LOAD_CLIENTS = 48
HOST = "shop.lab.invalid"
FAULTS = ("host-crash", "lb-death", "link-down", "planned-removal")
LAB_FAULT = {"host-crash": "crash", "lb-death": "kill-haproxy", "link-down": "link-down"}
UNDO = {"host-crash": "restore", "link-down": "link-up"}
VRRP_FAULTS = ("host-crash", "lb-death", "link-down")
WINDOW_S = 4.0
SETTLE_S = 120.0
VICTIM = "lb-2"
# Disruption: websockets held through each event; a cut is seen within the
# client's reply timeout (3 s) after the event. Once with the router's plain
# ECMP (the baseline: what FRR installs) and once with a resilient next-hop
# group (halb/lab/resilient.py), each in a lab of its own.
DISRUPTIONS = ("host-crash", "rejoin", "planned-removal")
HELD = 60
CUT_WAIT_S = 6.0
# The drain of those labs: a planned removal's steering outlasts the wait for cuts (as the
# changes benchmark's handoff does), so a cut there is one steering did not prevent.
DISRUPTION_DRAIN_S = 20.0


@dataclass
class FailoverRun:
    mode: str
    fault: str
    run: int
    detection_s: float | None  # fault -> the router's FIB without the host (None: VRRP, or never)
    outage_s: float
    failed: int
    total: int


@dataclass
class BgpReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    scale: list[dict[str, Any]] = field(default_factory=list)
    shares: dict[str, int] = field(default_factory=dict)
    runs: list[FailoverRun] = field(default_factory=list)
    disruption: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "scale_out": self.scale,
            "scale_out_summary": scale_summary(self.scale),
            "shares": self.shares,
            "runs": [asdict(r) for r in self.runs],
            "summary": summary(self.runs),
            "disruption": self.disruption,
            "disruption_summary": disruption_summary(self.disruption),
        }


def bgp_raw(cpu_limit: str | None = None, stack: str = "lab-bgp", drain_s: float | None = None) -> RawConfig:
    """The lab-bgp stack (or `stack`), each host's HAProxy limited to `cpu_limit` (and then no
    Prometheus: its scrapes, two vtysh runs per host every 500 ms in BGP mode, would share the
    CPUs being measured), its drain (and so a withdrawn host's steering) `drain_s` long."""
    base = load_stack_file(stack_path(stack))
    values = dict(base.values)
    if cpu_limit is not None:
        values["rancher-ha-lb:monitoring"] = json.dumps({"enabled": False})
    if drain_s is not None:
        vrrp = json.loads(values.get("rancher-ha-lb:vrrp", "{}"))
        vrrp["handoff"] = {**vrrp.get("handoff", {}), "drainSeconds": drain_s}
        values["rancher-ha-lb:vrrp"] = json.dumps(vrrp)
    if cpu_limit is not None:
        lb = json.loads(values["rancher-ha-lb:loadBalancer"])
        lb["resources"] = {"cpu": cpu_limit, "cpuLimit": cpu_limit, "memory": "128Mi"}
        values["rancher-ha-lb:loadBalancer"] = json.dumps(lb)
    return RawConfig(values, base.secret_keys)


class RouteMonitor:
    """`ip monitor route` in the router's namespace: when the VIP's next hops changed, and to what."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.events: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ns = self.lab.plan.router_netns
        assert ns is not None
        self._proc = subprocess.Popen(["ip", "-n", ns, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        vip = f"{self.lab.plan.vip}"
        for line in self._proc.stdout:
            if line.startswith((vip, f"Deleted {vip}")):
                t = time.monotonic()
                hops = router.hop_nodes(self.lab.plan)
                with self._lock:
                    self.events.append((t, hops))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def gone_after(self, node: str, t0: float) -> float | None:
        """Seconds from t0 to the first change after which the router no longer used `node`."""
        with self._lock:
            events = sorted(self.events)
        for t, hops in events:
            if t >= t0 and node not in hops:
                return round(t - t0, 4)
        return None


def every(lab: Lab) -> list[str]:
    return sorted(n.name for n in lab.plan.lb_nodes)


def set_draining(lab: Lab, node: str, on: bool) -> None:
    """The drain flag the preStop writes, set (or cleared) from outside the pod."""
    path = lab.pods.shared_path(node, DRAIN_FILE)
    if on or path.exists():
        path.write_text("1\n" if on else "0\n")


def settle_bgp(lab: Lab, hosts: list[str]) -> None:
    """The router sends the VIP to exactly `hosts`, steadily for a second."""
    steady = steadily(lambda: router.hop_nodes(lab.plan) == hosts, 1.0)
    if not wait_until(steady, SETTLE_S, poll=0.1):
        raise LabError(f"the router did not settle on {hosts} in {SETTLE_S:g} s: {lab.status()}")


def h2load_rps(lab: Lab, seconds: int) -> dict[str, Any]:
    cmd = ["h2load", "--h1", "-D", str(seconds), "-c", str(H2LOAD_CLIENTS), "-t", "2",
           f"--connect-to={lab.plan.vip}:80", f"http://{HOST}/"]  # fmt: skip
    done = run(in_ns(lab.plan.client_netns, *cmd), seconds + 60, check=False)
    rps = re.search(r"finished in [^,]+, ([0-9.]+) req/s", done.stdout)
    failed = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed", done.stdout
    )
    if rps is None or failed is None:
        raise LabError(f"h2load gave no numbers: {done.stdout[-500:]} {done.stderr[-300:]}")
    return {"req_s": float(rps.group(1)), "failed": int(failed.group(1))}


def frontend_metric(lab: Lab, metric: str) -> dict[str, int]:
    """A metric of each host's HAProxy's HTTP frontend, as its own /metrics says
    (`haproxy_frontend_connections_total`: accepted; `..._current_sessions`: open now)."""
    port = lab.plan.settings.load_balancer.stats_port
    counts = {}
    for n in lab.plan.lb_nodes:
        out = run(in_ns(n.netns, "curl", "-s", "--max-time", "2", f"http://127.0.0.1:{port}/metrics"),
                  check=False).stdout  # fmt: skip
        m = re.search(rf'^{metric}\{{proxy="http"\}} (\S+)$', out, flags=re.M)
        counts[n.name] = int(float(m.group(1))) if m else 0
    return counts


def accepted(lab: Lab) -> dict[str, int]:
    return frontend_metric(lab, "haproxy_frontend_connections_total")


def new_connections(lab: Lab, count: int) -> int:
    """`count` new connections from the client, each from its own source port: how many answered."""
    url = f"http://{lab.plan.vip}:80/"
    script = (
        "import urllib.request\nok=0\n"
        f"for i in range({count}):\n"
        "    try:\n"
        f"        q=urllib.request.Request('{url}',headers={{'Host':'{HOST}'}})\n"
        "        ok+=urllib.request.urlopen(q,timeout=2).status==200\n"
        "    except OSError:\n        pass\n"
        "print(ok)\n"
    )
    out = run(in_ns(lab.plan.client_netns, "python3", "-c", script), 600, check=False).stdout
    return int(out.strip() or 0)


def scale_out(report: BgpReport, seconds: int, runs: int, steps: Steps) -> None:
    """1, 2, 3 hosts announcing, `runs` rounds interleaved (a slow moment of the shared
    machine falls on every size alike), then the shares of new connections."""
    with bench_lab(bgp_raw(SCALE_CPU), new_prefix("hg"), app="nginx") as lab:
        hosts = every(lab)
        for r in range(1, runs + 1):
            for k in range(1, len(hosts) + 1):
                steps.step(f"scale-out: {k} host(s) announcing, round {r}/{runs}")
                for i, n in enumerate(hosts):
                    set_draining(lab, n, i >= k)
                settle_bgp(lab, hosts[:k])
                report.scale.append({"mode": "bgp", "hosts": k, "run": r, **h2load_rps(lab, seconds)})
        for n in hosts:
            set_draining(lab, n, False)
        settle_bgp(lab, hosts)
        steps.step(f"shares over {SHARE_FLOWS} new connections")
        before = accepted(lab)
        answered = new_connections(lab, SHARE_FLOWS)
        after = accepted(lab)
        report.shares = {"answered": answered, **{n: after[n] - before[n] for n in hosts}}
    # The baseline: the VRRP lab at the same limit, its MASTER serving alone (the client on
    # the hosts' segment, no router between).
    with bench_lab(bgp_raw(SCALE_CPU, stack="lab"), new_prefix("hg"), app="nginx") as lab:
        for r in range(1, runs + 1):
            steps.step(f"scale-out: VRRP, the MASTER serving, round {r}/{runs}")
            settle(lab, SETTLE_S)
            report.scale.append({"mode": "vrrp", "hosts": 1, "run": r, **h2load_rps(lab, seconds)})


def scale_summary(scale: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode and number of hosts: requests per second (median, min, max) and the median's
    ratio to one BGP host's."""
    rows = []
    for mode in ("bgp", "vrrp"):
        ms = [r for r in scale if r.get("mode", "bgp") == mode]
        for k in sorted({r["hosts"] for r in ms}):
            rs = [r for r in ms if r["hosts"] == k]
            rows.append({"mode": mode, "hosts": k, "req_s": stats(r["req_s"] for r in rs),
                         "failed": sum(r["failed"] for r in rs)})  # fmt: skip
    base = rows[0]["req_s"]["median"] if rows else 0
    for row in rows:
        row["vs_one"] = round(row["req_s"]["median"] / base, 2) if base else None
    return rows


def one_bgp_run(lab: Lab, fault: str, run_no: int) -> FailoverRun:
    settle_bgp(lab, every(lab))
    time.sleep(0.5)
    monitor = RouteMonitor(lab)
    monitor.start()
    try:
        with Window(lab, WINDOW_S) as w:
            t0 = w.mark("fault")
            if fault == "planned-removal":
                set_draining(lab, VICTIM, True)
            else:
                inject(lab, LAB_FAULT[fault], VICTIM)
            attempts = w.attempts(grace_s=30)
    finally:
        monitor.stop()
    result = outage(attempts, t0)
    detection = monitor.gone_after(VICTIM, t0)
    if fault == "planned-removal":
        set_draining(lab, VICTIM, False)
    elif fault in UNDO:
        inject(lab, UNDO[fault], VICTIM)
    return FailoverRun(
        "bgp", fault, run_no, detection, round(result.outage_s, 4), result.failed, result.total
    )


def bgp_failover(report: BgpReport, runs: int, steps: Steps) -> None:
    with bench_lab(bgp_raw(drain_s=DISRUPTION_DRAIN_S), new_prefix("hg")) as lab:
        s = lab.plan.settings
        assert s.bgp is not None
        report.settings["bgp"] = {"bfd": s.bgp.bfd.model_dump(), "check": s.vrrp.check.model_dump()}
        for fault in FAULTS:
            for r in range(1, runs + 1):
                steps.step(f"bgp {fault} run {r}/{runs}")
                report.runs.append(one_bgp_run(lab, fault, r))
        disruption(lab, report, runs, steps)
    with bench_lab(bgp_raw(drain_s=DISRUPTION_DRAIN_S), new_prefix("hg"), router_hash="resilient") as lab:
        disruption(lab, report, runs, steps)


def sessions(lab: Lab) -> dict[str, int]:
    return frontend_metric(lab, "haproxy_frontend_current_sessions")


def disruption(lab: Lab, report: BgpReport, runs: int, steps: Steps) -> None:
    """Websockets held through one host's death, its rejoin, and a planned removal, `runs`
    times: how many were cut, against how many that host held (the goal: only those; on a
    rejoin none)."""
    hosts = every(lab)
    hashing = lab.state.router_hash
    for r in range(1, runs + 1):
        for event in DISRUPTIONS:
            steps.step(f"disruption ({hashing}): {event}, {HELD} websockets, run {r}/{runs}")
            if event != "rejoin":
                settle_bgp(lab, hosts)
            with held(lab, "ws", HELD, host=HOST) as h:
                time.sleep(1.0)
                on_victim = sessions(lab).get(VICTIM, 0) if event != "rejoin" else 0
                if event == "host-crash":
                    inject(lab, "crash", VICTIM)  # left crashed: the rejoin follows
                elif event == "rejoin":
                    inject(lab, "restore", VICTIM)
                    settle_bgp(lab, hosts)
                else:
                    set_draining(lab, VICTIM, True)
                time.sleep(CUT_WAIT_S)
                cut = int(h.stop()["cut"])
            if event == "planned-removal":
                set_draining(lab, VICTIM, False)
            report.disruption.append(
                {
                    "router_hash": hashing,
                    "event": event,
                    "run": r,
                    "held": HELD,
                    "on_host": on_victim,
                    "cut": cut,
                }
            )


def disruption_summary(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per router hash and event, over the runs: held, on the host, cut, and cut beyond its share."""
    rows = []
    for hashing in ROUTER_HASHES:
        for event in DISRUPTIONS:
            ds = [
                d for d in events if d.get("router_hash", ROUTER_HASHES[0]) == hashing and d["event"] == event
            ]
            if ds:
                rows.append({
                    "router_hash": hashing, "event": event, "runs": len(ds),
                    "held": sum(d["held"] for d in ds), "on_host": sum(d["on_host"] for d in ds),
                    "cut": sum(d["cut"] for d in ds),
                    "beyond_share": sum(max(0, d["cut"] - d["on_host"]) for d in ds),
                })  # fmt: skip
    return rows


def vrrp_failover(report: BgpReport, runs: int, steps: Steps) -> None:
    """The VRRP mode's numbers for the same faults (failover.py's names), from its own runs."""
    f_report = failover.Report(machine={}, settings={})
    failover.run_profile("project", list(VRRP_FAULTS), runs, 0, f_report, steps)
    for r in f_report.runs:
        report.runs.append(FailoverRun("vrrp", r.fault, r.run, None, r.outage_s, r.failed, r.total))


def summary(runs: list[FailoverRun]) -> list[dict[str, Any]]:
    rows = []
    for mode in ("bgp", "vrrp"):
        for fault in FAULTS:
            rs = [r for r in runs if r.mode == mode and r.fault == fault]
            if not rs:
                continue
            detections = [r.detection_s for r in rs if r.detection_s is not None]
            rows.append({
                "mode": mode, "fault": fault, "runs": len(rs),
                "detection_s": stats(detections) if detections else None,
                "outage_s": stats(r.outage_s for r in rs),
                "failed": sum(r.failed for r in rs), "total": sum(r.total for r in rs),
            })  # fmt: skip
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def table(report: BgpReport) -> str:
    lines = [
        "Scale-out (HAProxy limited to " + SCALE_CPU + " CPU per host; nginx apps; h2load keep-alive)",
        "",
    ]
    rows = [
        [r["mode"], str(r["hosts"]) if r["mode"] == "bgp" else "1 (the MASTER)",
         f"{r['req_s']['median']:.0f} ({r['req_s']['min']:.0f}-{r['req_s']['max']:.0f})",
         f"{r['vs_one']:.2f}x" if r["vs_one"] is not None else "-", str(r["failed"])]
        for r in scale_summary(report.scale)
    ]  # fmt: skip
    heads = ["mode", "hosts serving", "req/s (median, min-max)", "vs 1 BGP host", "failed"]
    lines += markdown_table(heads, rows)
    if report.shares:
        hosts = [k for k in report.shares if k != "answered"]
        total = sum(report.shares[h] for h in hosts) or 1
        cells = ", ".join(f"{h} {100 * report.shares[h] / total:.1f}%" for h in hosts)
        lines += [
            "",
            f"Shares of {SHARE_FLOWS} new connections ({report.shares['answered']} answered): {cells}",
        ]
    lines += ["", "Failover (median, min-max; detection: the router's FIB without the host)", ""]
    frows = []
    for row in summary(report.runs):
        det, out = row["detection_s"], row["outage_s"]
        frows.append([
            row["mode"], row["fault"], str(row["runs"]),
            "-" if det is None else f"{_ms(det['median'])} ({_ms(det['min'])}-{_ms(det['max'])})",
            f"{_ms(out['median'])} ({_ms(out['min'])}-{_ms(out['max'])})",
            f"{row['failed']}/{row['total']}",
        ])  # fmt: skip
    lines += markdown_table(["mode", "fault", "runs", "detection", "outage", "failed/probes"], frows)
    if report.disruption:
        lines += [
            "",
            f"Disruption ({VICTIM} of three; websockets held from the client; sums over the runs)",
            "",
        ]
        drows = [
            [d["router_hash"], d["event"], str(d["runs"]), str(d["held"]), str(d["on_host"]), str(d["cut"]),
             str(d["beyond_share"])]
            for d in disruption_summary(report.disruption)
        ]  # fmt: skip
        heads = ["router", "event", "runs", "held", "on that host", "cut", "cut beyond its share"]
        lines += markdown_table(heads, drows)
    return "\n".join(lines)


def bar(req_s: dict[str, float]) -> Bar:
    median = req_s["median"]
    return Bar(median, f"{median:.0f}", below=median - req_s["min"], above=req_s["max"] - median)


def chart(report: BgpReport, path: Path) -> None:
    rows = scale_summary(report.scale)
    groups = [f"{r['hosts']}" if r["mode"] == "bgp" else "VRRP" for r in rows]
    bars = {"req/s": [bar(r["req_s"]) for r in rows]}
    grouped_bars(
        path,
        groups,
        bars,
        ylabel="requests per second",
        title="BGP scale-out: hosts announcing (VRRP: its MASTER)",
    )


def run_bgp(runs: int, seconds: int, progress: Progress, parts: tuple[str, ...] = PARTS) -> BgpReport:
    report = BgpReport(machine=machine(), settings={"scale_cpu": SCALE_CPU, "share_flows": SHARE_FLOWS})
    sizes = {
        "scale-out": 4 * runs + 1,
        "failover": len(FAULTS) * runs + len(ROUTER_HASHES) * len(DISRUPTIONS) * runs,
        "vrrp": len(VRRP_FAULTS) * runs,
    }
    steps = Steps(sum(sizes[p] for p in parts), progress)
    if "scale-out" in parts:
        scale_out(report, seconds, runs, steps)
    if "failover" in parts:
        bgp_failover(report, runs, steps)
    if "vrrp" in parts:
        vrrp_failover(report, runs, steps)
    steps.finish()
    return report
