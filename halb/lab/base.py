"""What every part of the lab shares: its errors, bounded waits, `ip`."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from components.problems import InputError

POLL_S = 0.05

Out = Callable[[str], None]


class LabError(Exception):
    """Something the lab could not do; the CLI prints it and exits 1."""


class LabInputError(LabError, InputError):
    """Bad input to the lab (a flag, a node name, the environment); exit 2."""


def write_text_atomic(path: Path, text: str) -> None:
    """`text` at `path` in one rename: a reader (a kubelet, the DNS stand-in, a
    later command) sees the old file or the new one, never half of one. The
    temporary name is the writer's own, so concurrent writers cannot collide."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(
    cmd: list[str], timeout: float = 10.0, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:g} s: {' '.join(cmd)}") from None
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = POLL_S) -> bool:
    """Bounded by time and by count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / poll) + 1):
        if pred():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return pred()
