"""BGP settings as typed models: the VIP announced by every load-balancer host (FRR).

`rancher-ha-lb:bgp` chooses the second way to carry the VIP: instead of
keepalived moving it, each healthy load-balancer host announces it as a /32
to the upstream routers (ECMP), BFD detecting a dead host at the router.
Values are refused where FRR (bgpd, bfdd) would refuse them, in its words.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from components.values import HostAddress, Int, fail, in_range, show, strict_int

# RFC 6793's AS_TRANS stands in for a 4-byte ASN towards old speakers: never a real one.
AS_TRANS = 23456
# The Linux kernel's TCP MD5 key limit (TCP_MD5SIG_MAXKEYLEN): bgpd cannot set a longer one.
PASSWORD_MAX = 80
# FRR's well-known community names (`set community`), bgpd's community_str2com.
WELL_KNOWN_COMMUNITIES = (
    "accept-own",
    "accept-own-nexthop",
    "blackhole",
    "graceful-shutdown",
    "internet",
    "llgr-stale",
    "local-AS",
    "no-advertise",
    "no-export",
    "no-llgr",
    "no-peer",
    "route-filter-translated-v4",
    "route-filter-translated-v6",
    "route-filter-v4",
    "route-filter-v6",
)
# FRR's own BFD defaults (and MetalLB's): 300 ms x 3.
BFD_INTERVAL_MS = 300
BFD_MULTIPLIER = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _asn(value: int) -> int:
    if not 1 <= value <= 4294967295:
        raise fail("{value} is not an AS number (1..4294967295; bgpd refuses 0)", value=value)
    if value == AS_TRANS:
        raise fail("23456 is AS_TRANS (RFC 6793), a placeholder for 4-byte AS numbers; not a real ASN")
    return value


Asn = Annotated[int, BeforeValidator(strict_int), AfterValidator(_asn)]


def _password(value: Any) -> Any:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str):
        raise fail("a password is a string")
    if not 1 <= len(text) <= PASSWORD_MAX:
        raise fail(
            f"{len(text)} characters; a TCP MD5 key has 1..{PASSWORD_MAX} (the kernel's limit, "
            "which bgpd cannot pass)"
        )
    if not re.fullmatch(r"[!-~]+", text):
        raise fail("only printable ASCII without spaces (bgpd reads `password WORD`: one word)")
    return SecretStr(text)


Password = Annotated[SecretStr, BeforeValidator(_password)]


def _community(value: Any) -> Any:
    if not isinstance(value, str):
        raise fail("{value} is not a community (AA:NN or a well-known name)", value=value)
    if value in WELL_KNOWN_COMMUNITIES:
        return value
    m = re.fullmatch(r"([0-9]{1,5}):([0-9]{1,5})", value)
    if m and all(int(g) <= 65535 for g in m.groups()):
        return value
    hint = ""
    if re.fullmatch(r"[0-9]+:[0-9]+:[0-9]+", value):
        hint = "; large communities (A:B:C) are not supported"
    elif m:
        hint = "; each half is 0..65535"
    folded = {n.lower(): n for n in WELL_KNOWN_COMMUNITIES}.get(value.lower())
    if folded:
        hint = f"; did you mean {show(folded)}?"
    names = ", ".join(WELL_KNOWN_COMMUNITIES)
    raise fail("{value} is not a community: AA:NN (each 0..65535) or one of " + names + hint, value=value)


Community = Annotated[str, BeforeValidator(_community)]


class BgpPeer(_Model):
    """An upstream router every load-balancer host peers with."""

    address: HostAddress
    asn: Asn
    # TCP MD5 (RFC 2385), a Pulumi secret: `pulumi config set --secure --path 'bgp.peers[0].password'`.
    password: Password | None = None


class Bfd(_Model):
    """BFD towards every peer (bfdd): how fast a router notices a dead host."""

    # Milliseconds, both directions (bfdd's transmit-interval and receive-interval).
    interval: Annotated[Int, in_range(10, 60000)] = BFD_INTERVAL_MS
    multiplier: Annotated[Int, in_range(2, 255)] = BFD_MULTIPLIER

    @property
    def detection_ms(self) -> int:
        return self.interval * self.multiplier


class Bgp(_Model):
    """The VIP announced over BGP by every healthy load-balancer host."""

    asn: Asn
    peers: Annotated[tuple[BgpPeer, ...], Field(min_length=1)]
    bfd: Bfd = Bfd()
    communities: tuple[Community, ...] = ()

    @property
    def passwords(self) -> dict[str, str]:
        """Each peer's password by address: what frr.conf needs, kept out of every manifest."""
        return {str(p.address): p.password.get_secret_value() for p in self.peers if p.password is not None}
