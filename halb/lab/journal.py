"""What a lab made, written down before it is made.

The lab owns only what it creates. Every namespace, process, container and
mount is appended to the lab's journal (one JSON object a line, O_APPEND)
*before* it is created, so `lab down` can remove exactly that after any
interruption: a killed `up`, a crashed kubelet, a corrupt state file. A
process is recorded with its start time, so a recycled PID is never
signalled; a namespace with the inode of its file, so a namespace of the
same name made by someone else later is never deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses):
    [0] the state, [1] the parent's PID, [19] the start time; None: gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: gone)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def alive(pid: int | None) -> bool:
    """Running, not a zombie (a dead child stays one until its parent reaps it)."""
    if not pid:
        return False
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def same_process(pid: int, start: int | None) -> bool:
    """`pid` is still the process that was recorded (not a recycled PID)."""
    return alive(pid) and start is not None and proc_start(pid) == start


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one write: lines never interleave
        finally:
            os.close(fd)

    def record_process(self, kind: str, pid: int, **fields: Any) -> None:
        self.record(kind, pid=pid, start=proc_start(pid), **fields)

    def entries(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every readable entry; a torn or foreign line is skipped, not fatal."""
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            ours = isinstance(entry, dict) and isinstance(entry.get("kind"), str)
            if ours and (kind is None or entry["kind"] == kind):
                yield entry
