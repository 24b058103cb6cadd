"""Single values: what Linux, Kubernetes, container tooling and keepalived accept.

Each rule is the consumer's own (a DNS-1035 label for a Service name, the
kernel's interface names, distribution/reference image references,
apimachinery quantities, keepalived's config parser), so a value accepted
here does not fail at deploy time. Also how values appear in messages:
shortened, escaped, one line, so a hostile value cannot flood a terminal.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_core import PydanticCustomError

# Kubernetes: DNS-1123 label (namespaces), DNS-1035 label (Service names),
# DNS-1123 subdomain (node names).
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# A host name; a wildcard only as the whole first label (one label, as in
# Kubernetes Ingress and TLS certificates).
_HOSTNAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
# Linux IFNAMSIZ is 16 including the NUL; '/', ':', '%' and whitespace are refused.
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
# The kernel refuses '.', '..', 'all' and 'default' (sysctl directories); a
# VIP on 'lo' is never announced.
_BAD_IFNAMES = (".", "..", "all", "default", "lo")
# Kubernetes IsEnvVarName; also a valid Secret data key.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# distribution/reference (what Docker, containerd and the kubelet parse); no IPv6
# registry literals, which the versions podman 4.3 and older kubelets vendor refuse.
_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REF_DOMAIN = rf"{_REF_DOMAIN_PART}(?:\.{_REF_DOMAIN_PART})*"
_IMAGE_REF = re.compile(
    rf"^(?P<name>(?:{_REF_DOMAIN}(?::[0-9]+)?/)?{_REF_COMPONENT}(?:/{_REF_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
_IMAGE_NAME_MAX = 255
# apimachinery resource.Quantity: number, then a binary, decimal or exponent suffix.
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
_QUANTITY_MAX = Decimal(2**63 - 1)
VIP_PREFIX = (8, 29)
# A health-check path both HAProxy (unquoted in `option httpchk GET <path>`,
# where # starts a comment and quotes and backslashes are syntax) and the
# kubelet take as written.
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~!&+,;=:@/?-]*")
_REGISTRY_HOST = re.compile(rf"{_REF_DOMAIN}(?::[0-9]{{1,5}})?")
_SHOW = 40


def digits(value: int) -> int:
    """Decimal digits of an int, without str(): that raises above 4300 digits."""
    n = abs(value)
    if n < 10:
        return 1
    d = int((n.bit_length() - 1) * math.log10(2)) + 1
    return d + 1 if n >= 10**d else d


def show(value: Any) -> str:
    """A value as messages print it: YAML's true/false/null, Python's repr, never long."""
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        n = digits(value)
        return str(value) if n <= 20 else f"a {n}-digit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) <= _SHOW:
            return repr(value)
        return f"{repr(value[:_SHOW])[:-1]}…' ({len(value)} characters)"
    if isinstance(value, list | tuple | dict):
        return _show_collection(value)
    return f"<{type(value).__name__}>"


def _show_collection(value: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> str:
    is_dict = isinstance(value, dict)
    items = value.items() if isinstance(value, dict) else value
    parts: list[str] = []
    used = 2
    for item in items:
        text = f"{show(item[0])}: {show(item[1])}" if is_dict else show(item)
        if used + len(text) > 2 * _SHOW:
            parts.append("…")
            break
        parts.append(text)
        used += len(text) + 2
    body = ", ".join(parts)
    return f"{{{body}}}" if is_dict else f"[{body}]"


def short_name(name: str, limit: int = 48) -> str:
    """A key (host name, env name) in a key path, shortened like values; quoted and
    escaped if it is empty or holds anything unprintable, so a message stays one line."""
    if not name or not name.isprintable():
        name = repr(name)
    return name if len(name) <= limit else f"{name[:_SHOW]}…"


# The one error kind of every refusal of ours: no code reads it (settings._message
# shows our message as it is and words pydantic's own kinds), so one name is enough.
KIND = "halb_value"


def fail(message: str, **ctx: Any) -> PydanticCustomError:
    # Formatted here with shortened values; no context is passed to pydantic,
    # so braces in a user's value are never read as a template.
    # Without values the message is final text: a brace in it is not a placeholder.
    return PydanticCustomError(
        KIND, message.format(**{k: show(v) for k, v in ctx.items()}) if ctx else message
    )


def in_range(lo: int, hi: int) -> AfterValidator:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise fail("{value} is not in {lo}..{hi}", value=value, lo=lo, hi=hi)
        return value

    return AfterValidator(check)


def _number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def strict_int(value: Any) -> Any:
    # YAML `port: "80"`, `replicas: 1.5` or `routerId: true` are typos, not numbers to coerce.
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,20}", value.strip()):
        raise fail("{value} is a string, not a whole number; remove the quotes", value=value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail("{value} is not a whole number", value=value)
    return value


def _strict_float(value: Any) -> Any:
    if isinstance(value, str) and _number_text(value):
        raise fail("{value} is a string, not a number; remove the quotes", value=value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail("{value} is not a (finite) number", value=value)
    return float(value)


_YAML11_BOOLS = {"yes": True, "y": True, "on": True, "no": False, "n": False, "off": False}


def _strict_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        raise fail("{value} is a string, not true or false; remove the quotes", value=value)
    if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        word = "true" if _YAML11_BOOLS[value.lower()] else "false"
        raise fail("{value} is not true or false (write " + word + ")", value=value)
    raise fail("{value} is not true or false", value=value)


def _dns_label(value: str) -> str:
    if not _DNS1123_LABEL.fullmatch(value):
        raise fail(
            "{value} is not a DNS-1123 label (lower-case a-z, 0-9 and '-', "
            "starting and ending alphanumeric, at most 63 characters)",
            value=value,
        )
    return value


def _dns1035_label(value: str) -> str:
    # Service names: Kubernetes wants a DNS-1035 label (a letter first).
    if not _DNS1035_LABEL.fullmatch(value):
        raise fail(
            "{value} is not a DNS-1035 label (lower-case a-z, 0-9 and '-', starting with a letter, "
            "ending alphanumeric, at most 63 characters)",
            value=value,
        )
    return value


def _dns_name(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise fail("{value} is not a lower-case DNS name", value=value)
    return value


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise fail(
            "{value} is not a lower-case DNS host name (a wildcard only as the whole first label: "
            "*.example.com)",
            value=value,
        )
    return value


def _ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise fail(
            "{value} is not a Linux interface name (1-15 characters of A-Z a-z 0-9 _ . @ -)",
            value=value,
        )
    if value in _BAD_IFNAMES:
        raise fail(
            "{value} is not a usable interface name (Linux refuses '.', '..', 'all' and 'default'; "
            "'lo' cannot carry a VIP)",
            value=value,
        )
    return value


def _host_address_class(addr: ipaddress.IPv4Address) -> str | None:
    """Why `addr` cannot be a host's (or the VIP's) address on a LAN, or None."""
    for what, test in (
        ("a multicast address", addr.is_multicast),
        ("a loopback address", addr.is_loopback),
        ("the unspecified address", addr.is_unspecified),
        ("a reserved address", addr.is_reserved),
    ):
        if test:
            return f"{addr} is {what}, not a host's"
    return None


def _host_address(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise fail("{value} is not an IPv4 address", value=value) from None
    why = _host_address_class(addr)
    if why:
        raise fail(why)
    return addr


def _vip_address(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if "/" not in value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            pass
        else:
            raise fail("{value} has no prefix length; write a.b.c.d/n (e.g. " + value + "/24)", value=value)
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise fail("{value} is not an IPv4 address with prefix (a.b.c.d/n)", value=value) from None
    lo, hi = VIP_PREFIX
    # /32: a routed VIP (a `bgp` stack); rules.py refuses it for VRRP.
    if not lo <= iface.network.prefixlen <= hi and iface.network.prefixlen != 32:
        raise fail(
            f"prefix /{iface.network.prefixlen} is not allowed (/{lo}../{hi}: a subnet the VIP shares "
            "with the load-balancer hosts; a shorter one puts a huge on-link route on every host)",
        )
    why = _host_address_class(iface.ip)
    if why:
        raise fail(why)
    return iface


def _string(value: Any) -> Any:
    """Strings only; a YAML number or boolean where text belongs gets a hint."""
    if isinstance(value, str | SecretStr):
        return value
    if isinstance(value, bool):
        raise fail("{value} is a boolean, not a string; quote it", value=value)
    if isinstance(value, int | float):
        raise fail("{value} is a number, not a string; quote it", value=value)
    raise fail("{value} is not a string", value=value)


def _one_line(value: str) -> str:
    if not value.isprintable() or not value.strip() or len(value) > 253:
        raise fail("{value} is not a one-line name (printable, at most 253 characters)", value=value)
    return value


def _health_path(value: str) -> str:
    if _HEALTH_PATH.fullmatch(value) is None or len(value) > 1024:
        raise fail(
            "{value} is not a URL path HAProxy and the kubelet both take (/, then A-Z a-z 0-9 "
            "and . _ ~ ! & + , ; = : @ / ? -)",
            value=value,
        )
    return value


def _registry_host(value: str) -> str:
    if _REGISTRY_HOST.fullmatch(value) is None:
        raise fail("{value} is not a registry host[:port] (e.g. registry.example.com:5000)", value=value)
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value) or len(value) > 253:
        raise fail(
            "not an environment variable name (letters, digits, '_', '-', '.', not starting with a digit; "
            "at most 253 characters)",
        )
    return value


def _env_value(value: Any) -> Any:
    value = _string(value)
    if isinstance(value, str) and "\0" in value:
        raise fail("contains a NUL character (a process environment cannot hold one)")
    return value


def _image(value: str) -> str:
    if not value:
        raise fail("must not be empty")
    m = _IMAGE_REF.fullmatch(value)
    if m is None or len(m.group("name")) > _IMAGE_NAME_MAX:
        raise fail(
            "{value} is not an image reference ([registry/]repository[:tag][@digest], "
            "repository in lower case)",
            value=value,
        )
    return value


def quantity(text: str) -> Decimal | None:
    """The value of a Kubernetes quantity, or None when it is not one."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        return None
    suffix = m.group("suffix") or ""
    try:
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            exp = int(suffix[1:])
            if abs(exp) > 100:
                return None
            return Decimal(m.group("num")).scaleb(exp)
        return Decimal(m.group("num")) * _SUFFIX[suffix]
    except (InvalidOperation, ValueError):
        return None


def _quantity(value: Any) -> Any:
    # `cpu: 1` or `cpu: 0.5` in YAML are numbers; Kubernetes takes them as quantities.
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise fail("{value} is not a Kubernetes quantity", value=value)
        if isinstance(value, int) and digits(value) > 20:
            raise fail("{value} is too large for a Kubernetes quantity", value=value)
        value = repr(value) if isinstance(value, float) else str(value)
    value = _string(value)
    amount = quantity(value)
    if amount is None:
        raise fail(
            "{value} is not a Kubernetes quantity (e.g. 100m, 0.5, 1; memory: 128Mi, 1Gi)",
            value=value,
        )
    if amount < 0:
        raise fail("{value} is negative", value=value)
    if amount > _QUANTITY_MAX:
        raise fail("{value} is too large for a Kubernetes quantity", value=value)
    return value


Int = Annotated[int, BeforeValidator(strict_int)]
Float = Annotated[float, BeforeValidator(_strict_float)]


def _api_token(value: SecretStr) -> SecretStr:
    # A bearer token goes into an HTTP header and the kubeconfig: an empty one
    # or one with a blank or control character only fails later, at Rancher.
    token = value.get_secret_value()
    if not token or not token.isprintable() or any(c.isspace() for c in token):
        raise fail("empty or holds a blank or control character (secret: the value is not shown)")
    return value


Bool = Annotated[bool, BeforeValidator(_strict_bool)]
Str = Annotated[str, BeforeValidator(_string)]
NonEmpty = Annotated[Str, Field(min_length=1)]
OneLine = Annotated[Str, Field(min_length=1), AfterValidator(_one_line)]
HealthPath = Annotated[Str, AfterValidator(_health_path)]
RegistryHost = Annotated[Str, Field(min_length=1), AfterValidator(_registry_host)]
Port = Annotated[Int, in_range(1, 65535)]
DnsLabel = Annotated[Str, AfterValidator(_dns_label)]
DnsName = Annotated[Str, AfterValidator(_dns_name)]
HostName = Annotated[Str, AfterValidator(_hostname)]
Image = Annotated[Str, AfterValidator(_image)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
EnvName = Annotated[str, AfterValidator(_env_name)]
ServiceName = Annotated[Str, AfterValidator(_dns1035_label)]
IfName = Annotated[Str, AfterValidator(_ifname)]
HostAddress = Annotated[ipaddress.IPv4Address, BeforeValidator(_host_address)]
VipAddress = Annotated[ipaddress.IPv4Interface, BeforeValidator(_vip_address)]
# A Rancher API token (token-xxxxx:yyyy), secret whatever the engine says.
ApiToken = Annotated[SecretStr, AfterValidator(_api_token)]
# A plain string as configured; parse_settings turns every value of a secret
# `services` key into a SecretStr (the engine says only which key is secret).
EnvValue = Annotated[str | SecretStr, BeforeValidator(_env_value)]


def auth_pass_readable(password: str) -> bool:
    """Whether keepalived reads `auth_pass <password>` as exactly this password.

    keepalived 2.2.7's parser (lib/parser.c), on the unquoted word the renderer
    writes: `#` and `!` start comments, `"` starts a quoted token, `{` and `}`
    split the line into blocks, `\\` before `#`/`!` escapes them and at the
    end of a line continues it, `$NAME` and `${NAME}` expand definitions
    (`$_PWD`, `$_HASH`, ...). tests/test_renderers.py checks the rest against a
    real keepalived: every password this accepts is read back exactly.
    """
    for i, c in enumerate(password):
        after = password[i + 1 : i + 2]
        if not " " < c <= "~" or c in '#!"{}':  # printable ASCII, no blank, no syntax
            return False
        if c == "\\" and not after:
            return False
        if c == "$" and (after.isalpha() or after == "_"):  # "${" is refused for its brace
            return False
    return True


def is_dns_subdomain(name: str) -> bool:
    """A Kubernetes DNS-1123 subdomain (node names): syntax only, length apart."""
    return _DNS_SUBDOMAIN.fullmatch(name) is not None


# Prometheus durations as prometheus-operator and rule files take them: 1h30m, 15s, 500ms.
_PROM_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration ('1m30s' -> 90); ValueError if it is not one."""
    m = _PROM_DURATION.fullmatch(text)
    if not text or m is None:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS, strict=True) if g)


def _duration(value: str) -> str:
    try:
        seconds = duration_seconds(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise fail(
            "{value} is not a positive Prometheus duration (e.g. 15s, 10m, 1h30m)",
            value=value,
        )
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or (prefix and not is_dns_subdomain(prefix)):
        raise fail(
            "{value} is not a Kubernetes label key ([prefix/]name, name up to 63 of A-Z a-z 0-9 - _ .)",
            value=value,
        )
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise fail(
            "{value} is not a Kubernetes label value (up to 63 of A-Z a-z 0-9 - _ ., alphanumeric ends)",
            value=value,
        )
    return value


Duration = Annotated[Str, AfterValidator(_duration)]
LabelKey = Annotated[Str, AfterValidator(_label_key)]
LabelValue = Annotated[Str, AfterValidator(_label_value)]


# HAProxy's time format (a whole number and a unit; HAProxy reads a bare number
# as milliseconds, a surprise we refuse).
_HAPROXY_TIME = re.compile(r"([0-9]{1,9})(us|ms|s|m|h|d)")
_HAPROXY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def haproxy_seconds(text: str) -> float:
    """Seconds in an HAProxy time ('1h' -> 3600); ValueError if it is not one."""
    m = _HAPROXY_TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not an HAProxy time")
    return int(m.group(1)) * _HAPROXY_UNITS[m.group(2)]


def haproxy_time(lo_s: float, hi_s: float, lo: str, hi: str) -> AfterValidator:
    """An HAProxy time between two bounds (given in seconds and as written)."""

    def check(value: str) -> str:
        try:
            seconds = haproxy_seconds(value)
        except ValueError:
            raise fail(
                "{value} is not an HAProxy time (a whole number and a unit: us, ms, s, m, h, d; "
                "e.g. 30s, 1h)",
                value=value,
            ) from None
        if not lo_s <= seconds <= hi_s:
            raise fail("{value} is not in " + lo + ".." + hi, value=value)
        return value

    return AfterValidator(check)


def _cidr(value: Any) -> Any:
    """A client network as HAProxy's `src` takes it; a bare address is one host."""
    if not isinstance(value, str):
        raise fail("{value} is not a CIDR (e.g. 203.0.113.0/24)", value=value)
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise fail("{value} is not a CIDR (e.g. 203.0.113.0/24, 2001:db8::/32)", value=value) from None
    raise fail("{value} has host bits set; did you mean " + str(loose) + "?", value=value)


# A path prefix as Ingress `Prefix` paths are written: no query, fragment or
# empty, '.' or '..' segments (a client's path is compared as sent).
_PATH_PREFIX = re.compile(r"/|(/[A-Za-z0-9._~!&+,;=:@%-]+)+/?")


def _path_prefix(value: str) -> str:
    segments = value.strip("/").split("/")
    if (
        _PATH_PREFIX.fullmatch(value) is None
        or len(value) > 1024
        or (value != "/" and any(seg in (".", "..") for seg in segments))
    ):
        raise fail(
            "{value} is not a path prefix (/, then segments of A-Z a-z 0-9 and . _ ~ ! & + , ; = : @ % -, "
            "no '.' or '..' segment, no '//', '?' or '#')",
            value=value,
        )
    return value.rstrip("/") or "/"


# HAProxy's `http-check expect status`: codes and ranges, comma-separated.
_STATUS_ITEM = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")


def _statuses(value: str) -> str:
    items = value.split(",")
    for item in items:
        m = _STATUS_ITEM.fullmatch(item)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise fail(
                "{value} is not a list of HTTP statuses (codes or ranges, comma-separated: 200-399, 200,204)",
                value=value,
            )
    return value


Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_cidr)]
PathPrefix = Annotated[Str, AfterValidator(_path_prefix)]
Statuses = Annotated[Str, AfterValidator(_statuses)]
