"""Shared fixtures: shipped stacks, config overrides, throwaway netns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.settings import SECRET_KEYS_ALLOWED, RawConfig, Settings, parse_settings  # noqa: E402
from halb.mockrun import Run, run_program  # noqa: E402
from halb.stackfile import load_stack_file, stack_path  # noqa: E402

STACKS = ("dev", "prod", "lab")
P = "rancher-ha-lb:"


def stack_raw(stack: str) -> RawConfig:
    return load_stack_file(stack_path(stack))


def with_overrides(raw: RawConfig, secret: bool = False, **changes: Any) -> RawConfig:
    """`raw` with project keys replaced (None removes); values as YAML would give them.

    secret=True marks the changed keys that may be secret (SECRET_KEYS_ALLOWED)
    as the engine would, had they been set with `pulumi config set --secret`."""
    values = dict(raw.values)
    secrets = set(raw.secret_keys)
    for short, value in changes.items():
        key = short if ":" in short else P + short
        if value is None:
            values.pop(key, None)
            continue
        values[key] = value if isinstance(value, str) else json.dumps(value)
        if secret and key in SECRET_KEYS_ALLOWED:
            secrets.add(key)
    return RawConfig(values, frozenset(secrets))


def lab_value(key: str) -> Any:
    return json.loads(stack_raw("lab").values[P + key])


@cache
def rendered(stack: str) -> Run:
    """Each shipped stack run once under the recording mocks."""
    return run_program(stack_raw(stack), stack)


@cache
def settings_of(stack: str) -> Settings:
    return parse_settings(stack_raw(stack))


def run_halb(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m halb ARGS` as a user runs it: exit code, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "-m", "halb", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def require_root_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make test installs them)")
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with `eth0` (one end of a veth pair), removed afterwards."""
    require_root_tools("ip", "keepalived")
    name = f"halbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # Both ends are created inside the namespace: nothing touches the root one.
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            check=True,
        )
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
