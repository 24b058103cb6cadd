"""`python -m halb`: see halb.cli."""

import os
import signal
import sys
from pathlib import Path

# The Pulumi program's `components` package sits beside this one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

INTERRUPTED = 130

try:
    from halb.interrupts import held

    # A Ctrl-C landing in an import's lock callback prints "Exception ignored".
    with held():
        from halb.cli import main

    code = main()
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
