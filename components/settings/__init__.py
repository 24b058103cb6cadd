"""Typed, validated stack settings.

The one schema for everything the program reads from a stack: the Pulumi
program, the offline render and the lab all go through `parse_settings`, so
a setting means the same thing everywhere. Every problem is reported with its
config key path (`rancher-ha-lb:vip.routerId`) and what is allowed.

One concern a module: `models` (what a stack may say), `engine` (engine
config decoded, which keys may be secret), `messages` (key paths, pydantic's
errors in words), `rules` (invariants across fields). Single values are
checked by their consumers' rules in components/values.py.
"""

from components.settings.engine import (
    RANCHER_KEYS,
    SECRET_KEYS_ALLOWED,
    SECRET_RULE,
    RawConfig,
    SettingsError,
    parse_settings,
)
from components.settings.messages import PROJECT, RANCHER
from components.settings.models import (
    Check,
    Handoff,
    Host,
    KeepalivedImage,
    LoadBalancer,
    Monitoring,
    Rancher,
    Registry,
    Resources,
    Role,
    Service,
    Settings,
    Toleration,
    Vip,
    Vrrp,
)

__all__ = [
    "PROJECT",
    "RANCHER",
    "RANCHER_KEYS",
    "SECRET_KEYS_ALLOWED",
    "SECRET_RULE",
    "Check",
    "Handoff",
    "Host",
    "KeepalivedImage",
    "LoadBalancer",
    "Monitoring",
    "Rancher",
    "RawConfig",
    "Registry",
    "Resources",
    "Role",
    "Service",
    "Settings",
    "SettingsError",
    "Toleration",
    "Vip",
    "Vrrp",
    "parse_settings",
]
