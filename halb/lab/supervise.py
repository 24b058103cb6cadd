"""Run one lab process (a stand-in app, the DNS stand-in, Prometheus), restart
it when it dies, stop it on SIGTERM. The edge pods have a kubelet of their own
(halb/lab/kubelet.py); these are not pods.

    python -m halb.lab.supervise --pidfile F --log L [--restart-delay S]
        -- CMD...

Runs inside the lab host's network namespace. The daemon gets its own
process group (so a fault can SIGKILL the daemon and its children at once,
like a container's cgroup); its PID goes to --pidfile while it runs; its
output, with start/exit markers, is appended to --log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from halb.lab.base import write_text_atomic

MARK = "=== halb-supervise:"
STOP_GRACE_S = 5.0
MAX_RESTARTS = 1000


def supervise(cmd: list[str], pidfile: Path, log: Path, delay: float) -> int:
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with log.open("ab", buffering=0) as out:
        for attempt in range(MAX_RESTARTS):
            if stopping.is_set():
                break
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            out.write(f"{MARK} started pid {child.pid} (attempt {attempt + 1})\n".encode())
            write_text_atomic(pidfile, f"{child.pid}\n")
            while True:
                try:
                    code = child.wait(timeout=STOP_GRACE_S if stopping.is_set() else None)
                    break
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
            pidfile.unlink(missing_ok=True)
            out.write(f"{MARK} pid {child.pid} exited with {code}\n".encode())
            # Whatever the daemon left behind in its group goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            stopping.wait(delay)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.supervise")
    p.add_argument("--pidfile", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--restart-delay", type=float, default=0.5)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given after --")
    return supervise(cmd, args.pidfile, args.log, args.restart_delay)


if __name__ == "__main__":
    sys.exit(main())
