"""Ctrl-C (and SIGTERM) held until a point where acting on it leaves nothing half-done.

Python raises KeyboardInterrupt between any two bytecodes: inside an import's
module-lock callback, inside the Pulumi engine's event loop (tasks left
half-stepped: a hang, or asyncio tracebacks), between `mkdtemp` and the
assignment that would let cleanup find the directory. Short steps hold the
signal instead and deliver it, to whatever handler was there before, where
the caller chose.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def held() -> Iterator[Callable[[], None]]:
    """Inside the block these signals are noted, not acted on; the `check` it
    yields delivers them, and so does the end of the block (unless it raised)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # signals reach the main thread only
        return
    noted: list[int] = []
    previous = {s: signal.getsignal(s) for s in HELD}

    def note(signum: int, _frame: FrameType | None) -> None:
        noted.append(signum)

    def hold() -> None:
        for s in HELD:
            signal.signal(s, note)

    def release() -> None:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)

    def deliver() -> None:
        while noted:
            signal.raise_signal(noted.pop(0))

    def check() -> None:
        if noted:
            release()
            try:
                deliver()
            finally:
                hold()

    hold()
    try:
        yield check
    finally:
        release()
    deliver()
