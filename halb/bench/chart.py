"""One grouped bar chart for both benchmarks: groups on the x axis, a bar per series."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Bar:
    value: float
    label: str
    below: float = 0.0  # error bar: how far below `value` the minimum lies
    above: float = 0.0


def series(
    rows: list[dict[str, Any]],
    keys: tuple[str, str],
    groups: list[str],
    names: list[str],
    bar: Callable[[dict[str, Any] | None], Bar],
) -> dict[str, list[Bar]]:
    """A Bar per name and group from summary rows; `keys`: the rows' group and name fields
    (`bar` gets None where a name has no row for a group)."""
    group_key, name_key = keys

    def row(group: str, name: str) -> dict[str, Any] | None:
        return next((r for r in rows if r[group_key] == group and r[name_key] == name), None)

    return {name: [bar(row(g, name)) for g in groups] for name in names}


def grouped_bars(
    path: Path,
    groups: list[str],
    series: dict[str, list[Bar]],
    *,
    ylabel: str,
    title: str,
    log: bool = False,
) -> None:
    """A PNG at `path`; every list in `series` has a Bar per group, in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(series))
    errors = any(b.below or b.above for bars in series.values() for b in bars)
    for i, (name, bars) in enumerate(series.items()):
        xs = [x + i * width for x in range(len(groups))]
        values = [b.value for b in bars]
        yerr = [[b.below for b in bars], [b.above for b in bars]] if errors else None
        ax.bar(xs, values, width, yerr=yerr, capsize=3, label=name)
        for x, b in zip(xs, bars, strict=True):
            ax.text(x, b.value * 1.15 if log else b.value + 0.1, b.label, ha="center", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(groups))], groups)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
