"""The benchmarks' measurement engine: what every benchmark measures with.

A benchmark is a list of runs, each in a `Window`: the client probe (a new
TCP connection and request to the VIP every 20 ms, 200 ms timeout), the VIP's
moves between hosts (`VipMonitor`), optionally the lab's alerts, and the
run's timeline (`mark`: when a fault was injected, healed, a change began).
Around the runs: a lab of the benchmark's own (`bench_lab`), `settle` between
runs, `Steps` for progress, `stats` and `markdown_table` for the summary,
`write` for the table, JSON and chart a `--json/--markdown/--chart` asks for.
The benchmarks (failover.py, changes.py) hold only their own scripts and rows.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from components.settings import RawConfig
from halb.lab.alertwatch import AlertWatch, fired_after
from halb.lab.base import LabError, wait_until
from halb.lab.images import ensure_image
from halb.lab.lab import Lab
from halb.lab.podman import podman
from halb.lab.probe import Attempt, ProbeRun
from halb.lab.state import ROUTER_HASHES, locked
from halb.lab.teardown import teardown

# How long the lab must stay settled before a run: longer than a restored host's BACKUP-then-FAULT blip.
STABLE_S = 2.0

PROBE_INTERVAL_S = 0.02
PROBE_TIMEOUT_S = 0.2
PROBE_COUNT = 100_000
# Probing before the first mark: the run's baseline of answered requests.
LEAD_S = 1.0

Progress = Callable[[int, int, str], None]


def quiet(_: str) -> None:
    """An `Out` that says nothing: a benchmark prints only its progress and table."""


def new_prefix(tag: str) -> str:
    """A lab of its own per run: never another run's, the tests' or a developer's."""
    return tag + secrets.token_hex(3)


@contextmanager
def bench_lab(
    raw: RawConfig, prefix: str, app: str = "python", router_hash: str = ROUTER_HASHES[0]
) -> Iterator[Lab]:
    """A lab up for `raw` under `prefix` (`app`: the app stand-in; `router_hash`: the bgp
    router's), taken down afterwards, even on failure."""
    lab = Lab.create(raw, "lab", prefix, app=app, router_hash=router_hash)
    try:
        with locked(prefix, quiet, "bench"):
            lab.up(quiet)
        yield lab
    finally:
        with locked(prefix, quiet, "bench"):
            teardown(prefix, quiet)


def settled(lab: Lab) -> bool:
    """One VIP holder; every load-balancer host MASTER or BACKUP with HAProxy running."""
    lbs = [n for n in lab.status()["nodes"] if n["role"] == "load-balancer"]
    return sum(n["holds_vip"] for n in lbs) == 1 and all(
        n["vrrp_state"] in ("MASTER", "BACKUP") and n["haproxy_pid"] for n in lbs
    )


def steadily(pred: Callable[[], bool], stable_s: float) -> Callable[[], bool]:
    """`pred`, true only once it has held for `stable_s`: a restored host is BACKUP for a
    moment before its first failed check sends it to FAULT, and that moment is no settling."""
    since: list[float] = []

    def check() -> bool:
        if not pred():
            since.clear()
            return False
        if not since:
            since.append(time.monotonic())
        return time.monotonic() - since[0] >= stable_s

    return check


def settle(lab: Lab, timeout_s: float, alerts: bool = False, stable_s: float = STABLE_S) -> None:
    """Between runs: the lab settled for `stable_s` (and, with `alerts`, no alert of the lab's
    Prometheus active)."""
    if not wait_until(steadily(lambda: settled(lab), stable_s), timeout_s, poll=0.2):
        raise LabError(f"lab did not settle in {timeout_s:g} s: {lab.status()}")
    if (
        alerts
        and lab.prometheus.enabled
        and not wait_until(lambda: not lab.prometheus.alerts(), timeout_s, 0.2)
    ):
        active = [a["labels"]["alertname"] for a in lab.prometheus.alerts()]
        raise LabError(f"alerts still active {timeout_s:g} s after a run: {', '.join(active)}")
    time.sleep(0.5)  # let ARP caches and HAProxy checks catch up too


class Steps:
    """Progress: `step` before each unit of work, `finish` at the end."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total, self.progress, self.done = total, progress, 0

    def step(self, text: str) -> None:
        self.progress(self.done, self.total, text)
        self.done += 1

    def finish(self) -> None:
        self.progress(self.total, self.total, "done")


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

    def moves(self) -> int:
        """How often a host gained the VIP."""
        with self._lock:
            return sum(1 for _, _, holds in self.events if holds)

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


class Window:
    """One measured run: the probe, the VIP's moves and (with `alert_poll_s`) the
    lab's alerts, with the run's timeline of marks.

    Entering starts them and probes for LEAD_S; they go on for `window_s` after
    that; leaving stops them all."""

    def __init__(
        self,
        lab: Lab,
        window_s: float,
        alert_poll_s: float | None = None,
        tls_host: str | None = None,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.lab, self.window_s, self.alert_poll_s, self.tls_host = lab, window_s, alert_poll_s, tls_host
        # Longer where the run slows answers on purpose (jitter): then a failure is no answer, not a late one.
        self.probe_timeout_s = probe_timeout_s
        self.marks: dict[str, float] = {}
        self.monitor = VipMonitor(lab)
        self.probe: ProbeRun | None = None
        # With `tls_host`: a second probe, a new TLS connection every 20 ms to that name.
        self.tls_probe: ProbeRun | None = None
        self.watch: AlertWatch | None = None

    def __enter__(self) -> Window:
        self.monitor.start()
        try:
            span = LEAD_S + self.window_s
            self.probe = self.lab.start_probe(PROBE_COUNT, PROBE_INTERVAL_S, self.probe_timeout_s, span)
            if self.tls_host is not None:
                self.tls_probe = self.lab.start_probe(
                    PROBE_COUNT, PROBE_INTERVAL_S, self.probe_timeout_s, span, host=self.tls_host, tls=True
                )
            if self.alert_poll_s is not None and self.lab.prometheus.enabled:
                self.watch = self.lab.prometheus.start_watch(span, self.alert_poll_s)
            time.sleep(LEAD_S)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        self.marks.setdefault("end", time.monotonic())

    def _stop(self) -> None:
        for probe in (self.probe, self.tls_probe):
            if probe is not None:
                probe.stop()
        self.monitor.stop()
        if self.watch is not None:
            self.watch.stop()

    def mark(self, name: str) -> float:
        """Now, on the probe's clock (CLOCK_MONOTONIC), as the timeline's `name`."""
        self.marks[name] = time.monotonic()
        return self.marks[name]

    def attempts(self, grace_s: float, tls: bool = False) -> list[Attempt]:
        """Every probe attempt (`tls`: the TLS probe's), once the window is over."""
        probe = self.tls_probe if tls else self.probe
        assert probe is not None
        return probe.attempts(grace_s=grace_s)

    def finish(self, grace_s: float) -> list[Attempt]:
        """Every probe attempt, the probe ended now (no new attempt)."""
        assert self.probe is not None
        return self.probe.finish(grace_s=grace_s)

    def alerts_after(self, mark: str, grace_s: float) -> dict[str, float] | None:
        """alertname -> seconds from the mark to its firing (None: no Prometheus watched)."""
        if self.watch is None:
            return None
        return fired_after(self.watch.alerts(grace_s=grace_s), self.marks[mark])


def stats(values: Iterable[float]) -> dict[str, float]:
    items = list(values)
    return {"min": min(items), "median": statistics.median(items), "max": max(items)}


def probe_settings() -> dict[str, float]:
    return {"interval_s": PROBE_INTERVAL_S, "timeout_s": PROBE_TIMEOUT_S}


def markdown_table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A markdown table's lines: the head, its rule, a line per row."""
    return [
        _row(head),
        "|" + "---|" * len(head),
        *(_row(r) for r in rows),
    ]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the CPU and the daemons as the lab runs them."""
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
    ka, hap = ensure_image("keepalived", quiet), ensure_image("haproxy", quiet)
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


def write(
    text: str,
    data: dict[str, Any],
    draw: Callable[[Path], None],
    json_path: Path | None,
    markdown: Path | None,
    chart: Path | None,
) -> None:
    """The table on stdout, and each output a flag asked for."""
    print(text)
    if json_path:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    if markdown:
        markdown.write_text(text + "\n")
    if chart:
        draw(chart)
