"""The Pulumi SDK's private names this project leans on, checked in one place.

The recording mocks (halb/mockrun.py) drive the real program in-process, and
that needs names no release promises to keep: `_sync_await`, the runtime's
`SETTINGS`, the wire format's secret marker. The program's config reader
(components/stack_config.py) uses the runtime config module's globals. They
are a contract with the pinned pulumi (requirements.txt): `require()` checks
all of them and says in one message what is gone, instead of an ImportError
or AttributeError deep in a render.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

# The SDK the mocks are tested with; requirements.txt pins the same.
PINNED = "3.272.0"

# module: attribute paths (a dotted path reaches into an object).
NEEDED: dict[str, tuple[str, ...]] = {
    "pulumi.runtime.sync_await": ("_sync_await", "_ensure_event_loop"),
    "pulumi.runtime.settings": (
        "SETTINGS.rpc_manager.rpcs",
        "SETTINGS.rpc_manager.clear",
        "SETTINGS.lock",
        "SETTINGS.outputs",
        "get_root_resource",
        "set_root_resource",
    ),
    "pulumi.runtime.stack": ("run_pulumi_func",),
    "pulumi.runtime.rpc": ("_special_sig_key", "_special_secret_sig", "deserialize_properties"),
    "pulumi.runtime.mocks": ("MockMonitor", "MockCallArgs", "MockResourceArgs", "Mocks"),
    "pulumi.runtime.config": (
        "CONFIG",
        "_SECRET_KEYS",
        "get_config_env",
        "get_config_secret_keys_env",
        "is_config_secret",
    ),
}


class SdkDriftError(Exception):
    """The installed pulumi lacks a name this project needs."""


def installed() -> str:
    try:
        return version("pulumi")
    except PackageNotFoundError:
        return "(not installed)"


def missing() -> list[str]:
    """Every needed `module.attribute` the installed SDK does not have."""
    gone = []
    for module_name, paths in NEEDED.items():
        try:
            module: object = importlib.import_module(module_name)
        except ImportError:
            gone += [f"{module_name}.{p}" for p in paths]
            continue
        for path in paths:
            obj = module
            for part in path.split("."):
                if not hasattr(obj, part):
                    gone.append(f"{module_name}.{path}")
                    break
                obj = getattr(obj, part)
    return gone


def require() -> None:
    """Raise SdkDriftError, one line, when a needed private name is gone."""
    gone = missing()
    if gone:
        raise SdkDriftError(
            f"pulumi {installed()} lacks what the mocks and the program use ({', '.join(gone)}); "
            f"they are tested with pulumi=={PINNED}: `make deps` (or `pip install -r requirements.txt`) "
            "installs it"
        )
