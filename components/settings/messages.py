"""Config key paths, and pydantic's errors in the words a stack's author reads.

A problem reads `rancher-ha-lb:vip.routerId: 300 is not in 1..255`: the key
as `pulumi config` names it, the path inside its value, what is wrong and
what is allowed, on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from components.settings.models import Settings
from components.values import short_name, show

PROJECT = "rancher-ha-lb"
RANCHER = "rancher2"


def key(name: str) -> str:
    """A project config key: `rancher-ha-lb:<name>`."""
    return f"{PROJECT}:{name}"


def path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "the key itself", already in the path
        elif i == 0 and prefix.endswith(":"):
            out += short_name(str(part))
        else:
            out += f".{short_name(str(part))}"
    return out


def _expected(model: type[BaseModel]) -> str:
    return ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model whose field set `loc` (minus its last part) names."""
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if field is None:  # a dict key such as a host name
            continue
        ann = field.annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def message(err: Any) -> str:
    """One pydantic error as the rest of a problem line (after `key: `)."""
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in {"int_type", "int_parsing"}:
        return f"{show(value)} is not a whole number"
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return f"{show(value)} is not a (finite) number"
    if kind in {"bool_type", "bool_parsing"}:
        return f"{show(value)} is not true or false"
    if kind in {"string_type"}:
        return f"{show(value)} is not a string"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"{show(value)} is not a mapping of keys to values"
    if kind in {"tuple_type", "list_type"}:
        return f"{show(value)} is not a list"
    if kind == "literal_error":
        return f"{show(value)} is not allowed ({err['ctx']['expected']})"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"{show(value)} does not match {err['ctx']['pattern']}"
    if kind.startswith("ip_v4"):
        what = "an IPv4 address with prefix (a.b.c.d/n)" if "interface" in kind else "an IPv4 address"
        return f"{show(value)} is not {what}"
    return str(err["msg"])


def _hide_value(msg: str, value: Any) -> str:
    """A message about a secret value, without the value."""
    shown = f"{show(value)} "
    if not msg.startswith(shown):
        return msg
    return msg[len(shown) :].removeprefix("is ") + " (secret: the value is not shown)"


def problems_from(
    exc: ValidationError,
    key_of: Mapping[str, str],
    secret_env: bool = False,
    refused: frozenset[tuple[str, ...]] = frozenset(),
) -> list[str]:
    """One line per error; `key_of`: the config key each top-level field came from;
    `refused`: keys already reported and left out, not to be called missing too."""
    errors = exc.errors()
    # pydantic adds "too short after validation" when every item failed: noise
    # beside the items' own errors.
    failed_inside = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and loc in failed_inside:
            continue
        if err["type"] == "missing" and loc in refused:
            continue
        top = str(loc[0]) if loc else ""
        full_key = key_of.get(top, f"{PROJECT}:{top}")
        where = path(full_key, loc[1:]) if loc else PROJECT
        msg = message(err)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            if model is not None:
                msg += f"; expected one of: {_expected(model)}"
        if secret_env and loc[:1] == ("services",) and "env" in loc[2:4]:
            msg = _hide_value(msg, err.get("input"))
        problems.append(f"{where}: {msg}")
    return problems
