"""The one place the program reads stack config from the Pulumi engine."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import SecretStr

from components.settings import RawConfig, Settings, SettingsError, parse_settings


def raw_from_engine() -> RawConfig:
    """Every key the engine gives the program: ours, and the others, so that a
    misspelled namespace (`rancher_ha_lb:`) is an error rather than ignored."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {k: str(v) for k, v in merged.items()}
    secret = {k for k in values if runtime_config.is_config_secret(k)}
    secret |= set(runtime_config.get_config_secret_keys_env()) & set(values)
    return RawConfig(values, frozenset(secret))


def load_settings() -> Settings:
    """Settings for this stack; bad config stops the run before any resource."""
    try:
        return parse_settings(raw_from_engine())
    except SettingsError as err:
        for problem in err.problems:
            pulumi.log.error(problem)
        # RunError: Pulumi shows the message without a traceback.
        raise pulumi.RunError(
            f"{len(err.problems)} problem(s) in the stack configuration; see above"
        ) from None


def secret(value: SecretStr | None) -> pulumi.Output[str] | None:
    """A secret setting as a Pulumi secret from the start (None stays None)."""
    if value is None:
        return None
    return pulumi.Output.secret(value.get_secret_value())
