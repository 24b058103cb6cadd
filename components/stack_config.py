"""The one place the program reads stack config from the Pulumi engine."""

from __future__ import annotations

import os

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import SecretStr

from components.settings import RANCHER, RawConfig, Settings, SettingsError, parse_settings

# The rancher2 provider's fallback for `rancher2:tokenKey`; the program needs
# the same token for the cluster's kubeconfig.
TOKEN_ENV = "RANCHER_TOKEN_KEY"
TOKEN_KEY = f"{RANCHER}:tokenKey"


def raw_from_engine() -> RawConfig:
    """Every key the engine gives the program: ours, and the others, so that a
    misspelled namespace (`rancher_ha_lb:`) is an error rather than ignored."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {k: str(v) for k, v in merged.items()}
    secret = {k for k in values if runtime_config.is_config_secret(k)}
    secret |= set(runtime_config.get_config_secret_keys_env()) & set(values)
    if TOKEN_KEY not in values and os.environ.get(TOKEN_ENV):
        values[TOKEN_KEY] = os.environ[TOKEN_ENV]
        secret.add(TOKEN_KEY)
    return RawConfig(values, frozenset(secret))


def load_settings() -> Settings:
    """Settings for this stack; bad config stops the run before any resource."""
    try:
        settings = parse_settings(raw_from_engine())
        if settings.rancher.token_key is None:
            raise SettingsError(
                [
                    f"{TOKEN_KEY}: not set (set it with `pulumi config set --secret {TOKEN_KEY} "
                    f"token-...` or export {TOKEN_ENV}; the program builds the cluster's kubeconfig "
                    "from it)"
                ]
            )
        return settings
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
