"""The `halb` command (console script and `python -m halb`): halb.cli, with Ctrl-C handled.

A Ctrl-C during the imports or while the interpreter shuts down must not
print a traceback or "Exception ignored", and the exit code is the one chosen.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

INTERRUPTED = 130


def main() -> NoReturn:
    try:
        from halb.interrupts import held

        # A Ctrl-C landing in an import's lock callback prints "Exception ignored".
        with held():
            from halb.cli import main as cli

        code = cli()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = INTERRUPTED
    # The command is done (its output complete): a Ctrl-C while the interpreter
    # shuts down has nothing left to interrupt, and must not kill it half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == INTERRUPTED:
        # An interrupt that passed through an import leaves CPython set to
        # re-kill itself with SIGINT at exit; exit with the code we chose instead.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
