"""Rewrite the reviewed files tests/test_monitoring.py compares against (after a
deliberate change; review the diff before committing it)."""

from __future__ import annotations

import json
from pathlib import Path

from components.monitoring import dashboard
from components.settings import parse_settings
from halb.stackfile import load_stack_file, stack_path

HERE = Path(__file__).resolve().parent

(HERE / "dashboard-prod.json").write_text(
    json.dumps(dashboard(parse_settings(load_stack_file(stack_path("prod")))), indent=1, sort_keys=True)
    + "\n"
)
