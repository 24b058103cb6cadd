"""Changes benchmark: what users see while the tier is changed, not broken.

    halb bench changes [--runs N] [--changes C,..] [--modes project,baseline]
        [--json FILE] [--markdown FILE] [--chart FILE]

Each run brings the lab from the lab stack to a changed stack with `lab
apply` (halb/lab/apply.py) in a measurement window (halb/bench/engine.py: a
new TCP connection and request to the VIP every 20 ms, 200 ms timeout, the
VIP's moves), and counts failed requests and VIP moves; then it changes back (not measured). For a
new service or hostname it also records when the new name first answers.

Beside the short requests, LONG_LIVED websockets (halb/lab/held.py: one echo
a second each) are opened to the second service before each change and held
through it: `cut` counts those that broke. The benchmark's stack gives the
handoff a drain window of BENCH_DRAIN_S; a `handoff` run holds its websockets
until HOLD_AFTER_MOVE_S after the VIP moved, inside that window.

Modes: `project` is this repo's behaviour (configs reloaded in place, pods
replaced with their preStop handoff); `baseline` is the behaviour before it
(every change rolls the pods, as the config checksum did, and no pod has a
preStop hook: keepalived's SIGTERM is a plain VRRP switch).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.settings import RawConfig
from halb.bench.chart import Bar, grouped_bars, series
from halb.bench.engine import (
    Progress,
    Steps,
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
from halb.lab.apply import apply, drain, uncordon
from halb.lab.base import LabError, in_ns, run, wait_until
from halb.lab.faults import inject
from halb.lab.handoff import handoff
from halb.lab.held import Held, held
from halb.lab.lab import Lab
from halb.lab.pods import sync_delay_s
from halb.stackfile import load_stack_file, stack_path

CHANGES = (
    "add-service", "add-hostname", "timeouts", "vrrp-timers", "haproxy-image", "keepalived-image", "drain",
    "handoff",
)  # fmt: skip
LONG_LIVED = 4
LONG_LIVED_HOST = "blog.lab.invalid"  # the second service's (the one add-hostname changes)
BENCH_DRAIN_S = 20.0
HOLD_AFTER_MOVE_S = 5.0
MODES = ("project", "baseline")
SETTLE_TIMEOUT_S = 120.0
# The longest a change may take under the probe (the probe's own bound).
WINDOW_S = 599.0
TAIL_S = 1.0
NEW_SERVICE = {
    "name": "news", "image": "ghcr.io/example/news:1.0.0", "port": 8082, "replicas": 2,
    "hostnames": ["news.lab.invalid"], "healthPath": "/healthz",
}  # fmt: skip
# On the second service: the first is the default backend, which answers any name.
NEW_HOSTNAME = "www.blog.lab.invalid"


@dataclass
class ChangeRun:
    mode: str
    change: str
    run: int
    failed: int
    total: int
    vip_moves: int
    seconds: float  # how long the change took (apply, or drain + uncordon)
    answers_after_s: float | None = None  # a new name first answered, from the objects' update
    long_lived: int = 0  # websockets held through the change
    cut: int | None = None  # ...of which broke before it ended


@dataclass
class ChangeReport:
    machine: dict[str, Any]
    sync_s: float
    runs: list[ChangeRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "sync_s": self.sync_s, "runs": [asdict(r) for r in self.runs],
                "summary": summary(self.runs)}  # fmt: skip


def _values(raw: RawConfig, key: str) -> Any:
    return json.loads(raw.values[f"rancher-ha-lb:{key}"])


def bench_stack(base: RawConfig) -> RawConfig:
    """The lab stack with the benchmark's handoff window."""
    vrrp = json.loads(base.values.get("rancher-ha-lb:vrrp", "{}"))
    vrrp["handoff"] = {**vrrp.get("handoff", {}), "drainSeconds": BENCH_DRAIN_S}
    return RawConfig({**base.values, "rancher-ha-lb:vrrp": json.dumps(vrrp)}, base.secret_keys)


def changed(base: RawConfig, change: str) -> RawConfig:
    """The lab stack with one change made (none for `drain` and `handoff`)."""
    values = dict(base.values)

    def put(key: str, value: Any) -> None:
        values[f"rancher-ha-lb:{key}"] = json.dumps(value)

    if change == "add-service":
        put("services", [*_values(base, "services"), NEW_SERVICE])
    elif change == "add-hostname":
        services = _values(base, "services")
        services[1]["hostnames"] = [*services[1]["hostnames"], NEW_HOSTNAME]
        put("services", services)
    elif change == "timeouts":
        # On the very service the websockets use: a reload, and theirs go on in the old worker.
        services = _values(base, "services")
        services[1]["timeouts"] = {"server": "45s", "tunnel": "2h"}
        put("services", services)
    elif change == "vrrp-timers":
        vrrp = json.loads(values.get("rancher-ha-lb:vrrp", "{}"))
        put("vrrp", {**vrrp, "advertInterval": 0.1})
    elif change in ("haproxy-image", "keepalived-image"):
        key = "loadBalancer" if change == "haproxy-image" else "keepalived"
        setting = json.loads(values.get(f"rancher-ha-lb:{key}", "{}"))
        image = setting.get("image", "")
        setting["image"] = image.rsplit(":", 1)[0] + ":bumped-" + secrets.token_hex(2)
        put(key, setting)
    return RawConfig(values, base.secret_keys)


def new_name(change: str) -> str | None:
    return {"add-service": NEW_SERVICE["hostnames"][0], "add-hostname": NEW_HOSTNAME}.get(change)  # type: ignore[index]


def _first_answer(lab: Lab, host: str, service: str, since: float, until: threading.Event) -> list[float]:
    """Seconds from `since` until `host` was first answered by `service` (polled every 100 ms)."""
    found: list[float] = []

    def poll() -> None:
        url = f"http://{lab.plan.vip}:{lab.plan.settings.load_balancer.http_port}/"
        cmd = in_ns(lab.plan.client_netns, "curl", "-s", "--max-time", "0.5", "-H", f"Host: {host}", url)
        for _ in range(1200):  # bounded: 2 minutes
            if until.is_set():
                return
            if f"service={service} " in run(cmd, check=False).stdout:
                found.append(time.monotonic() - since)
                return
            time.sleep(0.1)

    threading.Thread(target=poll, daemon=True).start()
    return found


def _handoff(lab: Lab, mode: str, held_for: Callable[[], None]) -> None:
    """`project`: the pod's handoff (held_for runs inside its drain window);
    `baseline`: keepalived's SIGTERM, a plain VRRP switch, then the host restored."""
    old = lab.master() or lab.plan.lb_nodes[0].name

    def moved() -> bool:
        return old not in Lab.load(lab.plan.prefix).vip_holders()

    if mode == "baseline":
        inject(lab, "stop-keepalived", old)
        wait_until(moved, 10, poll=0.05)
        held_for()
        inject(Lab.load(lab.plan.prefix), "restore", None)
        return
    failed: list[BaseException] = []

    def run_handoff() -> None:
        try:
            handoff(lab, quiet)
        except Exception as e:
            failed.append(e)

    t = threading.Thread(target=run_handoff, daemon=True)
    t.start()
    if not wait_until(lambda: moved() or bool(failed), 10, poll=0.05):
        raise LabError(f"the handoff did not move the VIP from {old} in 10 s")
    held_for()
    t.join(timeout=BENCH_DRAIN_S + 60)
    if failed:
        raise failed[0]


def _hold_then_stop(long_lived: Held) -> None:
    """Held past the VIP's move, stopped inside the drain window (the handoff goes on to its end)."""
    time.sleep(HOLD_AFTER_MOVE_S)
    long_lived.stop()


def one_run(lab: Lab, base: RawConfig, mode: str, change: str, run_no: int) -> ChangeRun:
    settle(lab, SETTLE_TIMEOUT_S)
    stop_poll = threading.Event()
    with Window(lab, WINDOW_S) as w:
        try:
            name = new_name(change)
            written: list[float] = []
            with held(lab, "ws", LONG_LIVED, host=LONG_LIVED_HOST) as long_lived:
                t0 = w.mark("change")
                answered = (
                    _first_answer(lab, name, "news" if change == "add-service" else "blog", t0, stop_poll)
                    if name
                    else []
                )
                if change == "drain":
                    master = lab.master() or lab.plan.lb_nodes[0].name
                    drain(lab, master, quiet, hooks=mode != "baseline")
                    uncordon(Lab.load(lab.plan.prefix), master, quiet)
                elif change == "handoff":
                    _handoff(lab, mode, lambda: _hold_then_stop(long_lived))
                else:
                    apply(
                        lab, changed(base, change), "lab", quiet, baseline=mode == "baseline",
                        written=lambda: written.append(time.monotonic() - t0),
                    )  # fmt: skip
                took = time.monotonic() - t0
                if name:
                    wait_until(lambda: bool(answered), 30, poll=0.1)
                if change != "handoff":  # its websockets stop inside the drain window
                    time.sleep(TAIL_S)
            attempts = w.finish(grace_s=10)
        finally:
            stop_poll.set()
    result = ChangeRun(
        mode=mode, change=change, run=run_no,
        failed=sum(not a.ok for a in attempts), total=len(attempts),
        vip_moves=w.monitor.moves(),
        seconds=round(took, 3),
        # From the objects' update, as the sync delay is: rendering the stack is `pulumi up`'s own time.
        answers_after_s=round(answered[0] - written[0], 3) if answered and written else None,
        long_lived=int(long_lived.report["opened"]), cut=int(long_lived.report["cut"]),
    )  # fmt: skip
    if change not in ("drain", "handoff"):  # back to the base stack, not measured
        apply(Lab.load(lab.plan.prefix), base, "lab", quiet, baseline=mode == "baseline")
    return result


def run_mode(mode: str, changes: list[str], runs: int, report: ChangeReport, steps: Steps) -> None:
    base = bench_stack(load_stack_file(stack_path("lab")))
    with bench_lab(base, new_prefix("hc")) as lab:
        for change in changes:
            for run_no in range(1, runs + 1):
                steps.step(f"{mode} {change} run {run_no}/{runs}")
                report.runs.append(one_run(Lab.load(lab.plan.prefix), base, mode, change, run_no))


def load_changes(path: Path) -> ChangeReport:
    """A ChangeReport back from the JSON `--json` wrote (to redraw, re-table or merge it)."""
    data = json.loads(path.read_text())
    runs = [ChangeRun(**r) for r in data["runs"]]
    return ChangeReport(machine=data["machine"], sync_s=data["sync_s"], runs=runs)


def summary(runs: list[ChangeRun]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r.change, r.mode) for r in runs}, key=lambda k: (CHANGES.index(k[0]), MODES.index(k[1])))
    for change, mode in keys:
        rs = [r for r in runs if r.change == change and r.mode == mode]
        answers = [r.answers_after_s for r in rs if r.answers_after_s is not None]
        cuts = [
            float(r.cut) for r in rs if r.cut is not None
        ]  # none in reports from before they were counted
        rows.append({
            "change": change, "mode": mode, "runs": len(rs),
            "failed": stats(float(r.failed) for r in rs), "total": sum(r.total for r in rs),
            "vip_moves": stats(float(r.vip_moves) for r in rs),
            "seconds": stats(r.seconds for r in rs),
            "answers_after_s": stats(answers) if answers else None,
            "long_lived": sum(r.long_lived for r in rs),
            "cut": stats(cuts) if cuts else None,
        })  # fmt: skip
    return rows


HEAD = [
    "change", "mode", "runs", "failed requests median (max)", "requests", "VIP moves median (max)",
    "change took median (s)", "new name answers, s after the objects' update, median",
    f"websockets cut of {LONG_LIVED} median (max)",
]  # fmt: skip


def table(report: ChangeReport) -> str:
    def cells(r: dict[str, Any]) -> list[str]:
        f, v, s, a = r["failed"], r["vip_moves"], r["seconds"], r["answers_after_s"]
        answers = f"{a['median']:.1f} (max {a['max']:.1f})" if a else ""
        cut = r.get("cut")
        return [
            r["change"], r["mode"], str(r["runs"]), f"{f['median']:g} ({f['max']:g})", str(r["total"]),
            f"{v['median']:g} ({v['max']:g})", f"{s['median']:.1f}", answers,
            f"{cut['median']:g} ({cut['max']:g})" if cut else "",
        ]  # fmt: skip

    lines = markdown_table(HEAD, (cells(r) for r in summary(report.runs)))
    lines.append(f"\nThe lab's kubelet syncs changed Secrets and ConfigMaps after {report.sync_s:g} s.")
    lines.append(
        f"Websockets: {LONG_LIVED} to {LONG_LIVED_HOST}, opened before each change and held through it "
        f"(handoff: until {HOLD_AFTER_MOVE_S:g} s after the VIP moved, inside the {BENCH_DRAIN_S:g} s "
        "drain window the benchmark's stack sets)."
    )
    return "\n".join(lines)


def chart(report: ChangeReport, path: Path) -> None:
    rows = summary(report.runs)
    changes = [c for c in CHANGES if any(r["change"] == c for r in rows)]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]

    def bar(r: dict[str, Any] | None) -> Bar:
        v = r["failed"]["median"] if r else 0.0
        return Bar(v, f"{v:g}")

    grouped_bars(
        path, changes, series(rows, ("change", "mode"), changes, modes, bar),
        ylabel="failed requests per change (median)",
        title="Failed requests during changes: this project vs checksum restarts without handoff",
    )  # fmt: skip


def run_changes(runs: int, changes: list[str], modes: list[str], progress: Progress) -> ChangeReport:
    report = ChangeReport(machine=machine(), sync_s=sync_delay_s())
    steps = Steps(len(modes) * len(changes) * runs, progress)
    for mode in modes:
        run_mode(mode, changes, runs, report, steps)
    steps.finish()
    report.machine["probe"] = probe_settings()
    return report
