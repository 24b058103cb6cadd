"""Read a `Pulumi.<stack>.yaml` the way the Pulumi engine would hand it over.

Without the Pulumi CLI, `secure:` values cannot be decrypted: they become a
placeholder (`REDACTED`, valid wherever a secret setting is) and their key is
marked secret, so the program still treats them as Pulumi secrets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from components.settings import RawConfig

REDACTED = "REDACTED"
ROOT = Path(__file__).resolve().parent.parent


class StackFileError(Exception):
    """A stack file that cannot be read; the message names it and the fix."""


def stack_path(stack: str, config_file: str | None = None) -> Path:
    if config_file is not None:
        return Path(config_file)
    return ROOT / f"Pulumi.{stack}.yaml"


def _redact(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return REDACTED, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], hit = _redact(v)
            found |= hit
        return out, found
    if isinstance(value, list):
        items = [_redact(v) for v in value]
        return [v for v, _ in items], any(hit for _, hit in items)
    return value, False


def _engine_form(value: Any) -> str:
    # The engine passes scalars as strings and structures as JSON.
    if isinstance(value, str):
        return value
    return json.dumps(value)


def load_stack_file(path: Path) -> RawConfig:
    """RawConfig from a stack file, or StackFileError saying what is wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StackFileError(
            f"{path}: no such stack file (stacks here: {', '.join(known_stacks()) or 'none'})"
        ) from None
    except OSError as err:
        raise StackFileError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StackFileError(f"{path}: not valid YAML ({err})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise StackFileError(f"{path}: expected a mapping with a `config:` mapping inside")
    values: dict[str, str] = {}
    secret: set[str] = set()
    for key, value in (doc.get("config") or {}).items():
        plain, is_secret = _redact(value)
        values[str(key)] = _engine_form(plain)
        if is_secret:
            secret.add(str(key))
    return RawConfig(values, frozenset(secret))


def known_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
