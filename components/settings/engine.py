"""Engine config in, Settings out: decoding, namespaces, which keys may be secret.

The Pulumi engine hands the program flat `namespace:key` strings (structured
values JSON-encoded); `parse_settings` decodes them, validates the models and
then the rules across fields, and reports every problem at once.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError

from components.problems import InputError
from components.settings.messages import PROJECT, RANCHER, problems_from
from components.settings.models import Settings
from components.settings.rules import problems as rule_problems
from components.values import short_name, show

# Keys this program reads from the `rancher2:` namespace (the provider's own
# settings); any other `rancher2:` key is the provider's business, not ours.
RANCHER_KEYS = ("apiUrl", "tokenKey", "insecure", "caCerts")
SECRET_PROJECT_KEYS = ("vrrpAuthPass", "registryPassword")
# Project keys whose value is a plain string: taken as the engine gives it, so
# `cluster: 2024` or `namespace: no` mean the text, as for `pulumi config get`.
STRING_PROJECT_KEYS = ("cluster", "namespace", "edgeNamespace", "project", "clusterDomain")
# The only keys that may hold a `secure:` value: everything else reaches the
# cluster (labels, ConfigMaps, manifests) in plain text. `services` may hold
# secrets only in its `env` values, which then go through a Kubernetes Secret;
# `bgp` only in its peers' passwords, which reach FRR through the frr-config Secret.
SECRET_KEYS_ALLOWED = (
    f"{RANCHER}:tokenKey",
    f"{PROJECT}:vrrpAuthPass",
    f"{PROJECT}:registryPassword",
    f"{PROJECT}:services",
    f"{PROJECT}:bgp",
)
# Keys whose value is a structure that may be secret only at known leaves.
SECRET_LEAVES = (f"{PROJECT}:services", f"{PROJECT}:bgp")
SECRET_RULE = (
    f"only {RANCHER}:tokenKey, {PROJECT}:vrrpAuthPass, {PROJECT}:registryPassword, "
    f"values of {PROJECT}:services[].env and {PROJECT}:bgp.peers[].password may be secure"
)
_MAX_DIGITS = 4000  # below Python's int/str conversion limit (4300)
# The project's keys: each Settings field's alias (`rancher` is the `rancher2:` namespace).
PROJECT_KEYS = frozenset(f.alias or n for n, f in Settings.model_fields.items() if n != "rancher")


class SettingsError(InputError):
    """All problems found in one stack's settings, each naming its key path."""


@dataclass(frozen=True)
class RawConfig:
    """Stack config as the engine hands it over: full keys, string values."""

    values: Mapping[str, str]
    secret_keys: frozenset[str] = frozenset()


class _UndecodableError(Exception):
    """A config value JSON cannot turn into data this program can hold."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _UndecodableError(
            f"holds a {len(text.lstrip('-'))}-digit number (at most {_MAX_DIGITS} digits)"
        )
    return int(text)


def _decode(value: str) -> Any:
    """Structured config arrives JSON-encoded; plain strings stay strings."""
    try:
        return json.loads(value, parse_int=_json_int)
    except (json.JSONDecodeError, TypeError):
        return value
    except RecursionError:
        raise _UndecodableError("is nested too deeply") from None


def _decode_string(value: str) -> Any:
    """A plain-text key: the text itself, unless it is a JSON mapping or list."""
    if value[:1] in ("{", "["):
        decoded = _decode(value)
        if isinstance(decoded, dict | list):
            return decoded
    return value


def _decode_bool(value: str) -> Any:
    return {"true": True, "false": False}.get(value, value)


def _namespace_problem(full_key: str) -> str | None:
    """A key outside our namespaces: another provider's (fine) or a typo of ours."""
    ns, sep, key = full_key.partition(":")
    if not sep:
        key = full_key
        guess = (
            f"{PROJECT}:{key}" if key in PROJECT_KEYS else f"{RANCHER}:{key}" if key in RANCHER_KEYS else None
        )
        hint = f"; did you mean {guess}?" if guess else f"; e.g. {PROJECT}:{short_name(key)}"
        return f"{short_name(full_key)}: no namespace (config keys are namespace:name){hint}"
    if ns in (PROJECT, RANCHER):
        return None
    folded = re.sub(r"[^a-z0-9]", "", ns.lower())
    candidates = {re.sub(r"[^a-z0-9]", "", n): n for n in (PROJECT, RANCHER)}
    match = candidates.get(folded) or next(
        iter(difflib.get_close_matches(ns.lower(), (PROJECT, RANCHER), n=1, cutoff=0.75)), None
    )
    if match is None:
        return None  # other providers' settings (kubernetes:, docker:) are theirs
    return f"{short_name(full_key)}: unknown namespace {show(ns)}; did you mean {match}:{short_name(key)}?"


def _loc(ns: str, key: str) -> tuple[str, ...]:
    """Where pydantic puts a config key's value: `rancher2:` keys in `rancher`."""
    return ("rancher", key) if ns == RANCHER else (key,)


def parse_settings(raw: RawConfig) -> Settings:
    """Turn engine config into Settings, or raise SettingsError with every problem."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    rancher: dict[str, Any] = {}
    # pydantic reports a value's location by its alias, which is the key's name.
    key_of: dict[str, str] = {"rancher": f"{RANCHER}:"}
    refused: set[tuple[str, ...]] = set()  # reported here: not "missing" as well

    for full_key, value in sorted(raw.values.items()):
        wrong_ns = _namespace_problem(full_key)
        if wrong_ns:
            problems.append(wrong_ns)
            continue
        ns, _, key = full_key.partition(":")
        if ns not in (PROJECT, RANCHER) or (ns == RANCHER and key not in RANCHER_KEYS):
            continue
        if ns == PROJECT and key not in PROJECT_KEYS:
            problems.append(
                f"{short_name(full_key)}: unknown key; expected one of: {', '.join(sorted(PROJECT_KEYS))}"
            )
            continue
        if full_key in raw.secret_keys and full_key not in SECRET_KEYS_ALLOWED:
            problems.append(
                f"{full_key}: holds a secret, but this setting reaches the cluster in plain text; "
                f"{SECRET_RULE}"
            )
            refused.add(_loc(ns, key))
            continue
        try:
            if ns == RANCHER:
                rancher[key] = _decode_bool(value) if key == "insecure" else value
                continue
            if key in SECRET_PROJECT_KEYS:
                data[key] = value
            elif key in STRING_PROJECT_KEYS:
                data[key] = _decode_string(value)
            else:
                data[key] = _decode(value)
        except _UndecodableError as why:
            problems.append(f"{full_key}: {why}")
            refused.add(_loc(ns, key))
            continue
        key_of[key] = full_key

    data["rancher"] = rancher
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += problems_from(
            exc, key_of, secret_env=f"{PROJECT}:services" in raw.secret_keys, refused=frozenset(refused)
        )
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    if f"{PROJECT}:services" in raw.secret_keys:
        settings = secret_env(settings)
    problems += plain_passwords(settings, raw)
    problems += rule_problems(settings)
    if problems:
        raise SettingsError(problems)
    return settings


def secret_env(s: Settings) -> Settings:
    """A secret `services` key: the engine does not say which leaf was `secure:`,
    and only env values may be (see SECRET_RULE), so every env value is a secret."""
    services = tuple(
        svc.model_copy(
            update={"env": {k: v if isinstance(v, SecretStr) else SecretStr(v) for k, v in svc.env.items()}}
        )
        for svc in s.services
    )
    return s.model_copy(update={"services": services})


def plain_passwords(s: Settings, raw: RawConfig) -> list[str]:
    """A BGP password in plain text would sit in the stack file and in state for anyone to read."""
    if s.bgp is None or f"{PROJECT}:bgp" in raw.secret_keys:
        return []
    return [
        f"{PROJECT}:bgp.peers[{i}].password: in plain text; set it as a secret: "
        f"pulumi config set --secure --path 'bgp.peers[{i}].password' <password>"
        for i, p in enumerate(s.bgp.peers)
        if p.password is not None
    ]
