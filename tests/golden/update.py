"""Rewrite the reviewed files tests/test_monitoring.py compares against (after a
deliberate change; review the diff before committing it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

from conftest import settings_of  # noqa: E402

from components.monitoring import dashboard  # noqa: E402

(HERE / "dashboard-prod.json").write_text(
    json.dumps(dashboard(settings_of("prod")), indent=1, sort_keys=True) + "\n"
)
