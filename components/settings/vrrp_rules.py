"""Rules across VRRP settings: what keepalived accepts, one function per topic (called from rules.RULES)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from components.settings.messages import key
from components.settings.models import Settings
from components.values import auth_pass_readable


def _advert_interval(s: Settings) -> list[str]:
    vr = s.vrrp
    adv = Decimal(str(vr.advert_interval))
    if vr.version == 2 and (adv != adv.to_integral_value() or not 1 <= adv <= 255):
        return [
            f"{key('vrrp')}.advertInterval: {vr.advert_interval:g} is not allowed with VRRPv2 "
            "(whole seconds 1..255); use version 3 for sub-second adverts"
        ]
    if vr.version == 3 and (not Decimal("0.01") <= adv <= Decimal("40.95") or adv % Decimal("0.01") != 0):
        return [
            f"{key('vrrp')}.advertInterval: {vr.advert_interval:g} is not allowed with VRRPv3 "
            "(0.01..40.95 seconds in 0.01 steps)"
        ]
    return []


def _check_timing(s: Settings) -> list[str]:
    chk = s.vrrp.check
    if chk.timeout > chk.interval:
        return [
            f"{key('vrrp')}.check.timeout: {chk.timeout} is longer than check.interval "
            f"{chk.interval}; checks would overlap"
        ]
    return []


def _auth_pass(s: Settings) -> list[str]:
    if s.vrrp_auth_pass is None:
        return []
    problems: list[str] = []
    password = s.vrrp_auth_pass.get_secret_value()
    if s.vrrp.version != 2:
        problems.append(
            f"{key('vrrpAuthPass')}: VRRPv3 has no authentication; remove it or set "
            f"{key('vrrp')}.version to 2"
        )
    if not auth_pass_readable(password):
        problems.append(
            f'{key("vrrpAuthPass")}: only printable ASCII without spaces, # ! " {{ or }}, '
            "not ending in \\, and no $ before a letter, _ or { (keepalived reads # and ! as comments, "
            "braces as blocks, a final \\ as a line continuation and $NAME as a variable)"
        )
    if not 1 <= len(password) <= 8:
        problems.append(
            f"{key('vrrpAuthPass')}: {len(password)} characters; keepalived allows 1..8 "
            "(longer ones are cut and fail `keepalived -t`)"
        )
    return problems


RULES: tuple[Callable[[Settings], list[str]], ...] = (_advert_interval, _check_timing, _auth_pass)
