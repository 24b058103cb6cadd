"""Where a lab keeps itself: its directory, its state, its lock.

`/run/halb-lab/<prefix>/` (`HALB_LAB_STATE` moves the root, `HALB_LAB_PREFIX`
picks the prefix: tests and benchmarks use their own, so they never meet a
developer's lab). Commands that change a lab hold `<root>/<prefix>.lock`
(flock: a killed holder releases it), so two `up`s, or `down` during `up`,
run one after the other instead of into each other; the file goes with the lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from components.settings import RawConfig
from halb.lab.base import LabError, LabInputError, Out, write_text_atomic

LOCK_WAIT_S = 1200.0  # longer than a first `up`, which builds the images


def state_root() -> Path:
    return Path(os.environ.get("HALB_LAB_STATE", "/run/halb-lab"))


def lab_prefix() -> str:
    prefix = os.environ.get("HALB_LAB_PREFIX", "halb")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", prefix):
        raise LabInputError(
            f"HALB_LAB_PREFIX={prefix!r}: use 1-10 lower-case letters/digits, starting with a letter"
        )
    return prefix


def lab_dir(prefix: str) -> Path:
    return state_root() / prefix


def check_root_writable() -> None:
    root = state_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise LabInputError(
            f"HALB_LAB_STATE={root}: cannot write there ({err.strerror}); point it at a writable "
            "directory or unset it (default /run/halb-lab)"
        ) from None


def _same_file(f: IO[str], path: Path) -> bool:
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _acquire(prefix: str, out: Out) -> IO[str]:
    """The lock file at the path, locked: one a finishing holder removed is let go and opened anew."""
    path = state_root() / f"{prefix}.lock"
    deadline = time.monotonic() + LOCK_WAIT_S
    holder = ""
    for _ in range(int(LOCK_WAIT_S / 0.2) + 2):  # bounded: the deadline ends it first
        f = path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not holder:
                f.seek(0)
                holder = f.read().strip() or "another command"
                out(f"waiting for {holder} to finish with lab {prefix!r}")
            f.close()
            if time.monotonic() > deadline:
                raise LabError(f"lab {prefix!r} stayed busy ({holder}) for {LOCK_WAIT_S:g} s") from None
            time.sleep(0.2)
            continue
        if _same_file(f, path):
            return f
        f.close()
    raise LabError(f"lab {prefix!r} stayed busy ({holder or 'its lock file kept changing'})")


@contextmanager
def locked(prefix: str, out: Out, what: str) -> Iterator[None]:
    """Hold the lab's lock; wait (bounded) for whoever holds it, saying so.

    The lock file of a lab that no longer exists is removed on release (a
    waiter checks it holds the file still at the path), so labs that come
    and go leave nothing behind.
    """
    check_root_writable()
    path = state_root() / f"{prefix}.lock"
    with _acquire(prefix, out) as f:
        f.seek(0)
        f.truncate()
        f.write(f"`lab {what}` (pid {os.getpid()})")
        f.flush()
        try:
            yield
        finally:
            if not (state_root() / prefix).exists():
                path.unlink(missing_ok=True)
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


APPS = ("python", "nginx")
# bgp: how the lab's router spreads the VIP's flows over the hosts: Linux's plain ECMP
# (hash-threshold, what zebra installs), or a resilient next-hop group (halb/lab/resilient.py).
ROUTER_HASHES = ("hash-threshold", "resilient")


@dataclass
class LabState:
    """What a later command needs to find the running lab again."""

    prefix: str
    lab_id: str
    stack: str
    config: dict[str, str]
    secret_keys: list[str]
    crashed: list[str] = field(default_factory=list)
    partitioned_at: float | None = None
    drained: list[str] = field(default_factory=list)
    # The app stand-in: `python` (halb/lab/app.py) or `nginx` (Debian's, faster
    # than the edge: what a data-path benchmark needs behind it).
    app: str = "python"
    # bgp: how the lab's router spreads flows over the hosts (ROUTER_HASHES).
    router_hash: str = ROUTER_HASHES[0]

    def raw(self) -> RawConfig:
        return RawConfig(self.config, frozenset(self.secret_keys))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / "state.json", json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> LabState:
        path = directory / "state.json"
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError("no lab is up; start one with `halb lab up`") from None
        except (OSError, ValueError) as err:
            raise LabError(f"{path}: unreadable lab state ({err}); `halb lab down` cleans up") from None
        try:
            state = cls(**data)
            ok = (
                isinstance(state.config, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in state.config.items())
                and isinstance(state.secret_keys, list)
                and isinstance(state.crashed, list)
                and isinstance(state.drained, list)
                and state.app in APPS
                and state.router_hash in ROUTER_HASHES
                and all(isinstance(x, str) for x in [state.prefix, state.lab_id, state.stack, *state.crashed])
            )
        except TypeError:
            ok = False
        if not ok:
            raise LabError(f"{path}: not a lab state this version wrote; `halb lab down` cleans up")
        return state
