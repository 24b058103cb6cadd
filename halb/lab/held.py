"""Long-lived connections held from the lab's client namespace, around a change.

    with held(lab, "ws", 4, host="blog.lab.invalid") as h:
        apply(...)            # the change under test
    h.report["cut"]           # connections that broke before the end

`h.stop()` ends them early, inside the block (a handoff's drain window ends
after the block's work does); the block's end stops them otherwise.

The client (halb/lab/longlived.py's Holder) runs in the client namespace, as
every lab client does; this process tells it when to stop over its stdin and
reads its JSON report. Bounded: it is killed if it does not answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from halb.lab.base import LabError, in_ns
from halb.lab.lab import Lab

OPEN_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0

# Opens the connections, says how many opened, holds them until a line (or
# EOF) on stdin, then prints the report.
_CLIENT = """
import json, sys
from halb.lab.longlived import Holder
kind, host, port, count, header, source = sys.argv[1:7]
h = Holder(kind, host, int(port), int(count), host_header=header or None, source=source or None)
h.start()
print(json.dumps({"opened": h.opened}), flush=True)
sys.stdin.readline()
print(json.dumps(h.stop()), flush=True)
"""


class Held:
    """A running client; `report` is set once the block ends."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.report: dict[str, Any] = {}

    def stop(self) -> dict[str, Any]:
        """Close the connections now and read the report (once: later calls return it)."""
        if not self.report:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.report = _line(self.proc, STOP_TIMEOUT_S)
        return self.report


def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The client's next JSON line, or LabError (and the client killed) after `timeout`."""
    stdout = proc.stdout
    assert stdout is not None
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not result or not result[0].strip():
        proc.kill()
        proc.wait(timeout=10)
        err = proc.stderr.read()[-1500:] if proc.stderr else ""
        raise LabError(f"the long-lived client did not answer within {timeout:g} s {err}".strip())
    data: dict[str, Any] = json.loads(result[0])
    return data


@contextmanager
def held(
    lab: Lab,
    kind: str,
    count: int,
    host: str | None = None,
    source: str | None = None,
    port: int | None = None,
) -> Iterator[Held]:
    """`count` connections of `kind` (ws, stream, tcp) to the VIP, open for the block."""
    port = port if port is not None else lab.plan.settings.load_balancer.http_port
    args = [kind, str(lab.plan.vip), str(port), str(count), host or "", source or ""]
    proc = subprocess.Popen(
        in_ns(lab.plan.client_netns, sys.executable, "-c", _CLIENT, *args),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    h = Held(proc)
    try:
        opened = _line(proc, OPEN_TIMEOUT_S)["opened"]
        if opened != count:
            raise LabError(f"only {opened} of {count} long-lived {kind} connection(s) opened")
        yield h
        h.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
