"""Turn a probe's attempts around a fault into numbers."""

from __future__ import annotations

from dataclasses import dataclass

from halb.lab.probe import Attempt


@dataclass(frozen=True)
class Outage:
    outage_s: float  # fault to the first success after the last failure; 0: none failed
    failed: int
    total: int


def outage(attempts: list[Attempt], fault_t: float) -> Outage:
    """Attempts are probe results; `fault_t` is CLOCK_MONOTONIC at injection."""
    after = [a for a in attempts if a.t + a.ms / 1000 >= fault_t]
    failures = [i for i, a in enumerate(after) if not a.ok]
    if not failures:
        return Outage(0.0, 0, len(attempts))
    recovered = next((a for a in after[failures[-1] + 1 :] if a.ok), None)
    if recovered is None:
        end = after[-1]
        return Outage(end.t + end.ms / 1000 - fault_t, len(failures), len(attempts))
    return Outage(recovered.t + recovered.ms / 1000 - fault_t, len(failures), len(attempts))
