"""The failover benchmark's hostile section: issue 22's drills under the 20 ms probe.

    halb bench failover --faults rogue-vrrp,forged-handoff,overload [--runs N] ...

Each run settles the lab, then runs one drill (halb/lab/hostile.py) inside a
measurement window (halb/bench/engine.py): failed requests and VIP moves
while the attack lasts (for forged-handoff, after the real handoff whose
message it replays), and what the defence counted. Goal: 0 VIP moves, and 0
failed requests but under overload (the probe then queues with the flood).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from halb.bench.engine import Window, markdown_table, settle
from halb.lab.hostile import HOSTILE, drill

__all__ = ["HOSTILE", "HostileRun", "one_run", "runs_from_json", "runs_to_json", "table_lines"]
from halb.lab.lab import Lab

SETTLE_TIMEOUT_S = 120.0
# The probe's bound: the longest drill (forged-handoff waits 10 s; overload holds 15 s).
WINDOW_S = 120.0


@dataclass
class HostileRun:
    profile: str
    drill: str
    run: int
    failed: int
    total: int
    vip_moves: int
    sent: int
    counted: dict[str, float] = field(default_factory=dict)
    steering_tables: int = 0
    health_failures: int = 0
    health_checks: int = 0
    restarts: int = 0
    recovered: bool = True


def one_run(lab: Lab, profile: str, kind: str, run: int) -> HostileRun:
    settle(lab, SETTLE_TIMEOUT_S)
    seen: dict[str, Any] = {}

    @contextmanager
    def around() -> Iterator[None]:
        with Window(lab, WINDOW_S) as w:
            w.mark("drill")
            yield
            seen["attempts"] = w.finish(grace_s=10)
        seen["moves"] = w.monitor.moves()

    d = drill(Lab.load(lab.plan.prefix), kind, around)
    attempts = seen["attempts"]
    return HostileRun(
        profile=profile, drill=kind, run=run,
        failed=sum(not a.ok for a in attempts), total=len(attempts), vip_moves=int(seen["moves"]),
        sent=d.sent, counted=d.counted, steering_tables=d.steering_tables,
        health_failures=d.health_failures, health_checks=d.health_checks, restarts=d.restarts,
        recovered=d.recovered,
    )  # fmt: skip


def runs_to_json(runs: list[HostileRun]) -> list[dict[str, Any]]:
    return [asdict(r) for r in runs]


def runs_from_json(data: list[dict[str, Any]]) -> list[HostileRun]:
    return [HostileRun(**r) for r in data]


HEAD = ["drill", "profile", "runs", "failed requests median (max)", "requests", "VIP moves max",
        "counted by the defence (total)", "what else held"]  # fmt: skip


def _else(rs: list[HostileRun]) -> str:
    kind = rs[0].drill
    if kind == "forged-handoff":
        return f"steering tables: {max(r.steering_tables for r in rs)}"
    if kind == "overload":
        checks, fails = sum(r.health_checks for r in rs), sum(r.health_failures for r in rs)
        back = all(r.recovered for r in rs)
        return f"/healthz {checks - fails}/{checks} answered; restarts {sum(r.restarts for r in rs)}; " + (
            "answers again after" if back else "NOT answering after"
        )
    return ""


def table_lines(runs: list[HostileRun]) -> list[str]:
    """The hostile section (nothing without runs: older reports table as they did)."""
    if not runs:
        return []
    rows = []
    for kind in HOSTILE:
        for profile in sorted({r.profile for r in runs if r.drill == kind}):
            rs = [r for r in runs if r.drill == kind and r.profile == profile]
            failed = sorted(r.failed for r in rs)
            counted: dict[str, float] = {}
            for r in rs:
                for k, v in r.counted.items():
                    counted[k] = counted.get(k, 0.0) + v
            rows.append([
                kind, profile, str(len(rs)), f"{failed[len(failed) // 2]} ({failed[-1]})",
                str(sum(r.total for r in rs)), str(max(r.vip_moves for r in rs)),
                ", ".join(f"{k} {v:g}" for k, v in sorted(counted.items())) or "-", _else(rs),
            ])  # fmt: skip
    return [
        "",
        "Hostile drills (halb/lab/hostile.py), under the same probe. Goal: 0 VIP moves; 0 failed "
        "requests for rogue-vrrp and forged-handoff (overload saturates the edge on purpose: the probe "
        "queues with the flood; its goal is /healthz answered, no restart, answers again after):",
        "",
        *markdown_table(HEAD, rows),
    ]
