"""`python -m halb`: see halb.cli."""

import sys
from pathlib import Path

# The Pulumi program's `components` package sits beside this one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from halb.cli import main

raise SystemExit(main())
