"""Typed, validated stack settings.

The one schema for everything the program reads from a stack: the Pulumi
program, the offline render and the lab all go through `parse_settings`, so
a setting means the same thing everywhere. Every problem is reported with its
config key path (`rancher-ha-lb:vip.routerId`) and what is allowed; values in
messages are shortened, so a hostile value cannot flood the terminal.

A value is accepted only when the daemon, Kubernetes or Linux will accept it
the same way: names, addresses, image references and quantities are checked by
the rules of whoever consumes them, not left to fail at deploy time.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_core import PydanticCustomError

PROJECT = "rancher-ha-lb"
RANCHER = "rancher2"

# Keys this program reads from the `rancher2:` namespace (the provider's own
# settings); any other `rancher2:` key is the provider's business, not ours.
RANCHER_KEYS = ("apiUrl", "tokenKey", "insecure", "caCerts")
SECRET_PROJECT_KEYS = ("vrrpAuthPass", "registryPassword")
# Project keys whose value is a plain string: taken as the engine gives it, so
# `cluster: 2024` or `namespace: no` mean the text, as for `pulumi config get`.
STRING_PROJECT_KEYS = ("cluster", "namespace", "edgeNamespace", "project", "clusterDomain")
# The only keys that may hold a `secure:` value: everything else reaches the
# cluster (labels, ConfigMaps, manifests) in plain text. `services` may hold
# secrets only in its `env` values, which then go through a Kubernetes Secret.
SECRET_KEYS_ALLOWED = (
    f"{RANCHER}:tokenKey",
    f"{PROJECT}:vrrpAuthPass",
    f"{PROJECT}:registryPassword",
    f"{PROJECT}:services",
)
SECRET_RULE = (
    f"only {RANCHER}:tokenKey, {PROJECT}:vrrpAuthPass, {PROJECT}:registryPassword and "
    f"values of {PROJECT}:services[].env may be secure"
)

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
# Namespaces every cluster already has, or Rancher manages.
_RESERVED_NAMESPACE = re.compile(r"^(default|kube-.*|cattle-.*)$")
_VIP_PREFIX = (8, 29)
_SHOW = 40
_MAX_DIGITS = 4000  # below Python's int/str conversion limit (4300)


class SettingsError(Exception):
    """All problems found in one stack's settings, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def digits(value: int) -> int:
    """Decimal digits of an int, without str(): that raises above 4300 digits."""
    n = abs(value)
    if n < 10:
        return 1
    d = int((n.bit_length() - 1) * math.log10(2)) + 1
    return d + 1 if n >= 10**d else d


def show(value: Any, limit: int = _SHOW) -> str:
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
        if len(value) <= limit:
            return repr(value)
        return f"{repr(value[:limit])[:-1]}…' ({len(value)} characters)"
    if isinstance(value, list | tuple | dict):
        return _show_collection(value, limit)
    return f"<{type(value).__name__}>"


def _show_collection(value: list[Any] | tuple[Any, ...] | dict[Any, Any], limit: int) -> str:
    is_dict = isinstance(value, dict)
    items = value.items() if isinstance(value, dict) else value
    parts: list[str] = []
    used = 2
    for item in items:
        text = f"{show(item[0], limit)}: {show(item[1], limit)}" if is_dict else show(item, limit)
        if used + len(text) > 2 * limit:
            parts.append("…")
            break
        parts.append(text)
        used += len(text) + 2
    body = ", ".join(parts)
    return f"{{{body}}}" if is_dict else f"[{body}]"


def short_name(name: str, limit: int = 48) -> str:
    """A key (host name, env name) in a key path, shortened like values; quoted and
    escaped if it holds anything unprintable, so a message stays one line."""
    if not name.isprintable():
        name = repr(name)
    return name if len(name) <= limit else f"{name[:_SHOW]}…"


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    # Formatted here with shortened values; no context is passed to pydantic,
    # so braces in a user's value are never read as a template.
    return PydanticCustomError(kind, message.format(**{k: show(v) for k, v in ctx.items()}))


def _in_range(lo: int, hi: int) -> AfterValidator:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise _fail("range", "{value} is not in {lo}..{hi}", value=value, lo=lo, hi=hi)
        return value

    return AfterValidator(check)


def _number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _strict_int(value: Any) -> Any:
    # YAML `port: "80"`, `replicas: 1.5` or `routerId: true` are typos, not numbers to coerce.
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,20}", value.strip()):
        raise _fail("int", "{value} is a string, not a whole number; remove the quotes", value=value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("int", "{value} is not a whole number", value=value)
    return value


def _strict_float(value: Any) -> Any:
    if isinstance(value, str) and _number_text(value):
        raise _fail("float", "{value} is a string, not a number; remove the quotes", value=value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail("float", "{value} is not a (finite) number", value=value)
    return float(value)


_YAML11_BOOLS = {"yes": True, "y": True, "on": True, "no": False, "n": False, "off": False}


def _strict_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        raise _fail("bool", "{value} is a string, not true or false; remove the quotes", value=value)
    if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        word = "true" if _YAML11_BOOLS[value.lower()] else "false"
        raise _fail("bool", "{value} is not true or false (write " + word + ")", value=value)
    raise _fail("bool", "{value} is not true or false", value=value)


def _dns_label(value: str) -> str:
    if not _DNS1123_LABEL.fullmatch(value):
        raise _fail(
            "dns",
            "{value} is not a DNS-1123 label (lower-case a-z, 0-9 and '-', "
            "starting and ending alphanumeric, at most 63 characters)",
            value=value,
        )
    return value


def _dns1035_label(value: str) -> str:
    # Service names: Kubernetes wants a DNS-1035 label (a letter first).
    if not _DNS1035_LABEL.fullmatch(value):
        raise _fail(
            "dns",
            "{value} is not a DNS-1035 label (lower-case a-z, 0-9 and '-', starting with a letter, "
            "ending alphanumeric, at most 63 characters)",
            value=value,
        )
    return value


def _dns_name(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise _fail("dns", "{value} is not a lower-case DNS name", value=value)
    return value


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise _fail(
            "dns",
            "{value} is not a lower-case DNS host name (a wildcard only as the whole first label: "
            "*.example.com)",
            value=value,
        )
    return value


def _ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise _fail(
            "ifname",
            "{value} is not a Linux interface name (1-15 characters of A-Z a-z 0-9 _ . @ -)",
            value=value,
        )
    if value in _BAD_IFNAMES:
        raise _fail(
            "ifname",
            "{value} is not a usable interface name (Linux refuses '.', '..', 'all' and 'default'; "
            "'lo' cannot carry a VIP)",
            value=value,
        )
    return value


def _host_address_class(addr: ipaddress.IPv4Address) -> str | None:
    """Why `addr` cannot be a host's (or the VIP's) address on a LAN, or None."""
    for kind, test in (
        ("multicast", addr.is_multicast),
        ("loopback", addr.is_loopback),
        ("unspecified", addr.is_unspecified),
        ("reserved", addr.is_reserved),
    ):
        if test:
            return f"{addr} is a {kind} address, not a host's"
    return None


def _host_address(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail("ip", "{value} is not an IPv4 address", value=value) from None
    why = _host_address_class(addr)
    if why:
        raise PydanticCustomError("ip", why)
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
            raise _fail(
                "ip", "{value} has no prefix length; write a.b.c.d/n (e.g. " + value + "/24)", value=value
            )
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise _fail("ip", "{value} is not an IPv4 address with prefix (a.b.c.d/n)", value=value) from None
    lo, hi = _VIP_PREFIX
    if not lo <= iface.network.prefixlen <= hi:
        raise PydanticCustomError(
            "ip",
            f"prefix /{iface.network.prefixlen} is not allowed (/{lo}../{hi}: a subnet the VIP shares "
            "with the load-balancer hosts; a shorter one puts a huge on-link route on every host)",
        )
    why = _host_address_class(iface.ip)
    if why:
        raise PydanticCustomError("ip", why)
    return iface


def _string(value: Any) -> Any:
    """Strings only; a YAML number or boolean where text belongs gets a hint."""
    if isinstance(value, str | SecretStr):
        return value
    if isinstance(value, bool):
        raise _fail("str", "{value} is a boolean, not a string; quote it", value=value)
    if isinstance(value, int | float):
        raise _fail("str", "{value} is a number, not a string; quote it", value=value)
    raise _fail("str", "{value} is not a string", value=value)


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value) or len(value) > 253:
        raise PydanticCustomError(
            "env",
            "not an environment variable name (letters, digits, '_', '-', '.', not starting with a digit)",
        )
    return value


def _env_value(value: Any) -> Any:
    value = _string(value)
    if isinstance(value, str) and "\0" in value:
        raise PydanticCustomError("env", "contains a NUL character (a process environment cannot hold one)")
    return value


def _image(value: str) -> str:
    if not value:
        raise PydanticCustomError("image", "must not be empty")
    m = _IMAGE_REF.fullmatch(value)
    if m is None or len(m.group("name")) > _IMAGE_NAME_MAX:
        raise _fail(
            "image",
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
            raise _fail("quantity", "{value} is not a Kubernetes quantity", value=value)
        if isinstance(value, int) and digits(value) > 20:
            raise _fail("quantity", "{value} is too large for a Kubernetes quantity", value=value)
        value = repr(value) if isinstance(value, float) else str(value)
    value = _string(value)
    amount = quantity(value)
    if amount is None:
        raise _fail(
            "quantity",
            "{value} is not a Kubernetes quantity (e.g. 100m, 0.5, 1; memory: 128Mi, 1Gi)",
            value=value,
        )
    if amount < 0:
        raise _fail("quantity", "{value} is negative", value=value)
    if amount > _QUANTITY_MAX:
        raise _fail("quantity", "{value} is too large for a Kubernetes quantity", value=value)
    return value


Int = Annotated[int, BeforeValidator(_strict_int)]
Float = Annotated[float, BeforeValidator(_strict_float)]
Bool = Annotated[bool, BeforeValidator(_strict_bool)]
Str = Annotated[str, BeforeValidator(_string)]
NonEmpty = Annotated[Str, Field(min_length=1)]
Port = Annotated[Int, _in_range(1, 65535)]
DnsLabel = Annotated[Str, AfterValidator(_dns_label)]
DnsName = Annotated[Str, AfterValidator(_dns_name)]
HostName = Annotated[Str, AfterValidator(_hostname)]
Image = Annotated[Str, AfterValidator(_image)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
EnvName = Annotated[str, AfterValidator(_env_name)]
# A plain string as configured; parse_settings turns every value of a secret
# `services` key into a SecretStr (the engine says only which key is secret).
EnvValue = Annotated[str | SecretStr, BeforeValidator(_env_value)]


class Role(StrEnum):
    LOAD_BALANCER = "load-balancer"
    APPS = "apps"


def _role(value: Any) -> Any:
    if value == "app":
        raise _fail(
            "role",
            "'app' is not a role; did you mean 'apps'? (allowed: 'load-balancer', 'apps')",
        )
    if not isinstance(value, str) or value not in {r.value for r in Role}:
        raise _fail("role", "{value} is not a role (allowed: 'load-balancer', 'apps')", value=value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Host(_Model):
    """A cluster node: its role and, for load-balancer hosts, its VRRP address."""

    role: Annotated[Role, BeforeValidator(_role)]
    address: Annotated[ipaddress.IPv4Address, BeforeValidator(_host_address)] | None = None
    # Election order on a cold start; distinct per host. Default: by name.
    priority: Annotated[Int, _in_range(1, 254)] | None = None


class Vip(_Model):
    """The virtual IP that keepalived moves between load-balancer hosts."""

    address: Annotated[ipaddress.IPv4Interface, BeforeValidator(_vip_address)]
    interface: Annotated[Str, AfterValidator(_ifname)] = "eth0"
    router_id: Annotated[Int, _in_range(1, 255)] = Field(1, alias="routerId")

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip


class Check(_Model):
    """The keepalived poll of this node's HAProxy health endpoint."""

    # keepalived's vrrp_script interval/timeout are whole seconds >= 1.
    interval: Annotated[Int, _in_range(1, 3600)] = 1
    timeout: Annotated[Int, _in_range(1, 3600)] = 1
    fall: Annotated[Int, _in_range(1, 255)] = 1
    rise: Annotated[Int, _in_range(1, 255)] = 2
    # The event-driven watcher (images/keepalived/haproxy-watch) beside
    # keepalived: HAProxy's death is known in milliseconds, not at the next poll.
    watch: Bool = True


class Vrrp(_Model):
    """VRRP timers and transport; see docs on failover for the trade-off."""

    version: Annotated[Literal[2, 3], BeforeValidator(_strict_int)] = 3
    advert_interval: Float = Field(0.05, alias="advertInterval")
    unicast: Bool = True
    garp_refresh: Annotated[Int, _in_range(0, 86400)] = Field(60, alias="garpRefresh")
    check: Check = Check()


class Resources(_Model):
    """Requests and limits for one container (Kubernetes quantities)."""

    cpu: Quantity = "100m"
    memory: Quantity = "128Mi"
    cpu_limit: Quantity | None = Field(None, alias="cpuLimit")
    memory_limit: Quantity = Field("256Mi", alias="memoryLimit")


class Service(_Model):
    """One app service behind the load balancer."""

    name: Annotated[Str, AfterValidator(_dns1035_label)]
    image: Image
    port: Port
    replicas: Annotated[Int, _in_range(1, 1000)] = 2
    hostnames: tuple[HostName, ...] = ()
    health_path: Annotated[Str, Field(pattern=r"^/\S*$")] = Field("/", alias="healthPath")
    env: dict[EnvName, EnvValue] = {}
    resources: Resources = Resources()

    @property
    def plain_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if isinstance(v, str)}

    @property
    def secret_env(self) -> dict[str, str]:
        """Values that must reach the pod through a Kubernetes Secret."""
        return {k: v.get_secret_value() for k, v in self.env.items() if isinstance(v, SecretStr)}


class LoadBalancer(_Model):
    """The HAProxy tier on the load-balancer hosts."""

    image: Image = "docker.io/library/haproxy:2.6"
    http_port: Port = Field(80, alias="httpPort")
    # Serves /healthz (keepalived and kubelet probes) and /metrics (Prometheus).
    stats_port: Port = Field(8404, alias="statsPort")
    max_conn: Annotated[Int, _in_range(1, 1_000_000)] = Field(20000, alias="maxConn")
    resources: Resources = Resources(cpu="200m", memory="128Mi", memory_limit="512Mi")


class KeepalivedImage(_Model):
    """Where the keepalived image comes from."""

    image: Image = "registry.example.com/edge/keepalived:2.2.7"
    # True: build images/keepalived and push it as `image`. False: use as is.
    build: Bool = True
    resources: Resources = Resources(cpu="20m", memory="32Mi", memory_limit="64Mi")


class Registry(_Model):
    """A private registry: push target for the build, pull secret for the pods."""

    server: NonEmpty
    username: NonEmpty


class Rancher(_Model):
    """The `rancher2:` provider settings this program passes on."""

    api_url: Annotated[Str, Field(pattern=r"^https?://\S+$")] = Field(alias="apiUrl")
    token_key: SecretStr | None = Field(None, alias="tokenKey")
    insecure: Bool = False
    ca_certs: Str | None = Field(None, alias="caCerts")


class Settings(_Model):
    """Everything one stack configures."""

    rancher: Rancher
    cluster: NonEmpty
    namespace: DnsLabel
    edge_namespace: DnsLabel | None = Field(None, alias="edgeNamespace")
    project: NonEmpty | None = None
    cluster_domain: DnsName = Field("cluster.local", alias="clusterDomain")
    hosts: dict[str, Host]
    vip: Vip
    vrrp: Vrrp = Vrrp()
    services: Annotated[tuple[Service, ...], Field(min_length=1)]
    load_balancer: LoadBalancer = Field(LoadBalancer(), alias="loadBalancer")
    keepalived: KeepalivedImage = KeepalivedImage()
    registry: Registry | None = None
    vrrp_auth_pass: SecretStr | None = Field(None, alias="vrrpAuthPass")
    registry_password: SecretStr | None = Field(None, alias="registryPassword")

    @property
    def apps_namespace(self) -> str:
        return self.namespace

    @property
    def edge_ns(self) -> str:
        return self.edge_namespace or f"{self.namespace}-edge"

    @property
    def project_name(self) -> str:
        return self.project or self.namespace

    def nodes(self, role: Role) -> list[str]:
        """Node names with `role`, sorted so priorities and outputs are stable."""
        return sorted(n for n, h in self.hosts.items() if h.role == role)

    @property
    def lb_nodes(self) -> list[str]:
        return self.nodes(Role.LOAD_BALANCER)

    @property
    def app_nodes(self) -> list[str]:
        return self.nodes(Role.APPS)

    def priority(self, node: str) -> int:
        """Distinct priorities: an explicit one, else 200, 190, ... by name."""
        explicit = self.hosts[node].priority
        if explicit is not None:
            return explicit
        return 200 - 10 * self.lb_nodes.index(node)

    def address(self, node: str) -> ipaddress.IPv4Address:
        addr = self.hosts[node].address
        if addr is None:  # guaranteed by validation for load-balancer hosts
            raise KeyError(node)
        return addr


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


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
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


_FIELD_KEYS = {
    name: (field.alias or name) for name, field in Settings.model_fields.items() if name != "rancher"
}


def _expected(model: type[BaseModel]) -> str:
    return ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model whose field set `loc` (minus its last part) names."""
    model: Any = Settings
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
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _message(err: Any) -> str:
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


def _problems_from(exc: ValidationError, key_of: Mapping[str, str], secret_env: bool = False) -> list[str]:
    errors = exc.errors()
    # pydantic adds "too short after validation" when every item failed: noise
    # beside the items' own errors.
    failed_inside = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and loc in failed_inside:
            continue
        top = str(loc[0]) if loc else ""
        full_key = key_of.get(top, f"{PROJECT}:{top}")
        path = _path(full_key, loc[1:]) if loc else PROJECT
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            if model is not None:
                msg += f"; expected one of: {_expected(model)}"
        if secret_env and loc[:1] == ("services",) and "env" in loc[2:4]:
            msg = _hide_value(msg, err.get("input"))
        problems.append(f"{path}: {msg}")
    return problems


def _namespace_problem(full_key: str, known: frozenset[str]) -> str | None:
    """A key outside our namespaces: another provider's (fine) or a typo of ours."""
    ns, sep, key = full_key.partition(":")
    if not sep:
        key = full_key
        guess = f"{PROJECT}:{key}" if key in known else (f"{RANCHER}:{key}" if key in RANCHER_KEYS else None)
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


def parse_settings(raw: RawConfig) -> Settings:
    """Turn engine config into Settings, or raise SettingsError with every problem."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    rancher: dict[str, Any] = {}
    key_of: dict[str, str] = {"rancher": f"{RANCHER}:"}
    known_fields = {v: k for k, v in _FIELD_KEYS.items()}

    for full_key, value in sorted(raw.values.items()):
        wrong_ns = _namespace_problem(full_key, frozenset(known_fields))
        if wrong_ns:
            problems.append(wrong_ns)
            continue
        ns, _, key = full_key.partition(":")
        if ns not in (PROJECT, RANCHER) or (ns == RANCHER and key not in RANCHER_KEYS):
            continue
        if ns == PROJECT and key not in known_fields:
            problems.append(
                f"{short_name(full_key)}: unknown key; expected one of: {', '.join(sorted(known_fields))}"
            )
            continue
        if full_key in raw.secret_keys and full_key not in SECRET_KEYS_ALLOWED:
            problems.append(
                f"{full_key}: holds a secret, but this setting reaches the cluster in plain text; "
                f"{SECRET_RULE}"
            )
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
            continue
        key_of[known_fields[key]] = full_key
        key_of[key] = full_key

    data["rancher"] = rancher
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(exc, key_of, secret_env=f"{PROJECT}:services" in raw.secret_keys)
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    if f"{PROJECT}:services" in raw.secret_keys:
        settings = _secret_env(settings)
    problems += _semantic_problems(settings)
    if problems:
        raise SettingsError(problems)
    return settings


def _secret_env(s: Settings) -> Settings:
    """A secret `services` key: the engine does not say which leaf was `secure:`,
    and only env values may be (see SECRET_RULE), so every env value is a secret."""
    services = tuple(
        svc.model_copy(
            update={"env": {k: v if isinstance(v, SecretStr) else SecretStr(v) for k, v in svc.env.items()}}
        )
        for svc in s.services
    )
    return s.model_copy(update={"services": services})


def _key(name: str) -> str:
    return f"{PROJECT}:{name}"


def _semantic_problems(s: Settings) -> list[str]:
    """Rules that span fields: the design's invariants."""
    return [
        *_host_problems(s),
        *_address_problems(s),
        *_namespace_problems(s),
        *_service_problems(s),
        *_resource_problems(s),
        *_vrrp_problems(s),
    ]


def _host_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    lb, apps = s.lb_nodes, s.app_nodes
    if len(lb) < 2:
        problems.append(
            f"{_key('hosts')}: {len(lb)} load-balancer host(s); at least 2 are needed "
            "for the VIP to fail over"
        )
    if not apps:
        problems.append(f"{_key('hosts')}: no 'apps' host; at least 1 is needed to run services")
    for node in s.hosts:
        where = f"{_key('hosts')}.{short_name(node)}"
        # An LB host's config is the Secret key `<node>.conf`: at most 253 characters.
        limit = 248 if s.hosts[node].role == Role.LOAD_BALANCER else 253
        if len(node) > limit:
            who = "a load-balancer host's name" if limit == 248 else "a node name"
            why = (
                " (its keepalived config is the Secret key '<node>.conf', at most 253)"
                if limit == 248
                else ""
            )
            problems.append(f"{where}: {len(node)} characters; {who} may have at most {limit}{why}")
        elif not _DNS_SUBDOMAIN.fullmatch(node):
            problems.append(
                f"{where}: not a Kubernetes node name (lower-case DNS subdomain: labels of a-z, 0-9 "
                "and '-' joined by '.', each starting and ending alphanumeric)"
            )
    prios: dict[int, str] = {}
    for node in lb:
        p = s.priority(node)
        where = f"{_key('hosts')}.{short_name(node)}.priority"
        if not 1 <= p <= 254:
            problems.append(f"{where}: default {p} is not in 1..254; set it")
        if p in prios:
            problems.append(
                f"{where}: {p} is also {short_name(prios[p])}'s; priorities must "
                "be distinct so the cold-start election is not arbitrary"
            )
        prios[p] = node
    return problems


def _address_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    net = s.vip.address.network
    seen: dict[ipaddress.IPv4Address, str] = {}
    for node in s.lb_nodes:
        host = s.hosts[node]
        where = f"{_key('hosts')}.{short_name(node)}.address"
        if host.address is None:
            problems.append(f"{where}: missing (required for load-balancer hosts: VRRP peers)")
            continue
        if host.address in seen:
            problems.append(
                f"{where}: {host.address} is also the address of {short_name(seen[host.address])}"
            )
        seen.setdefault(host.address, node)
        if host.address not in net:
            problems.append(f"{where}: {host.address} is outside the VIP's subnet {net}")
        if host.address == s.vip.ip:
            problems.append(f"{where}: {host.address} is the VIP itself; use another address")
        if host.address in (net.network_address, net.broadcast_address):
            problems.append(f"{where}: {host.address} is the subnet's network/broadcast address")
    # Apps hosts after the load-balancer hosts, so the apps host is the one blamed.
    for node in s.app_nodes:
        addr = s.hosts[node].address
        where = f"{_key('hosts')}.{short_name(node)}.address"
        if addr is None:
            continue
        if addr == s.vip.ip:
            problems.append(f"{where}: {addr} is the VIP itself")
        elif addr in seen:
            problems.append(f"{where}: {addr} is also the address of {short_name(seen[addr])}")
        seen.setdefault(addr, node)
    if s.vip.ip in (net.network_address, net.broadcast_address):
        problems.append(f"{_key('vip')}.address: {s.vip.address} is the subnet's network/broadcast address")
    return problems


def _namespace_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    for key, ns in (("namespace", s.namespace), ("edgeNamespace", s.edge_namespace)):
        if ns is not None and _RESERVED_NAMESPACE.fullmatch(ns):
            problems.append(
                f"{_key(key)}: {show(ns)} belongs to Kubernetes or Rancher (default, kube-*, cattle-*); "
                "choose another"
            )
    if s.edge_namespace is None and len(s.edge_ns) > 63:
        problems.append(
            f"{_key('namespace')}: the default edgeNamespace '{short_name(s.edge_ns)}' would have "
            f"{len(s.edge_ns)} characters (at most 63); set edgeNamespace or shorten namespace"
        )
    if s.edge_ns == s.namespace:
        problems.append(
            f"{_key('edgeNamespace')}: {show(s.edge_ns)} is also the apps namespace; the edge tier "
            "needs its own (privileged) one"
        )
    return problems


def _service_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    names: dict[str, int] = {}
    hostnames: dict[str, str] = {}
    for i, svc in enumerate(s.services):
        where = f"{_key('services')}[{i}]"
        if svc.name in names:
            problems.append(f"{where}.name: {show(svc.name)} is also services[{names[svc.name]}]'s name")
        names.setdefault(svc.name, i)
        if i > 0 and not svc.hostnames:
            problems.append(
                f"{where}.hostnames: empty; only the first service (the default backend) can do without "
                "hostnames, any other would never be reached"
            )
        for h in svc.hostnames:
            if h in hostnames:
                problems.append(f"{where}.hostnames: {show(h)} is already routed to {show(hostnames[h])}")
            hostnames.setdefault(h, svc.name)
    lb = s.load_balancer
    if lb.http_port == lb.stats_port:
        problems.append(f"{_key('loadBalancer')}.statsPort: {lb.stats_port} is also the httpPort")
    kimg = s.keepalived
    if kimg.build and "@" in kimg.image:
        problems.append(
            f"{_key('keepalived')}.image: a digest cannot be a push target; with build: true give "
            "repository[:tag]"
        )
    return problems


def _resource_problems(s: Settings) -> list[str]:
    """Kubernetes refuses a container whose requests exceed its limits."""
    where = [(f"{_key('services')}[{i}].resources", svc.resources) for i, svc in enumerate(s.services)]
    where += [
        (f"{_key('loadBalancer')}.resources", s.load_balancer.resources),
        (f"{_key('keepalived')}.resources", s.keepalived.resources),
    ]
    problems: list[str] = []
    for path, r in where:
        mem = quantity(r.memory)
        if mem is not None and mem != mem.to_integral_value():
            problems.append(
                f"{path}.memory: {show(r.memory)} is {mem.normalize():f} bytes; "
                f"did you mean {r.memory[:-1]}Mi?"
            )
        pairs = [("memory", r.memory, "memoryLimit", r.memory_limit)]
        if r.cpu_limit is not None:
            pairs.append(("cpu", r.cpu, "cpuLimit", r.cpu_limit))
        for req_key, req, lim_key, lim in pairs:
            req_v, lim_v = quantity(req), quantity(lim)
            if req_v is not None and lim_v is not None and req_v > lim_v:
                problems.append(
                    f"{path}.{req_key}: {req} is more than {lim_key} {lim} (requests must not exceed limits)"
                )
    return problems


def auth_pass_problem(password: str) -> str | None:
    """Why keepalived would not read `auth_pass <password>` as exactly this password.

    keepalived 2.2.7's parser (lib/parser.c), on the unquoted word the renderer
    writes: `#` and `!` start comments, `"` starts a quoted token, `{` and `}`
    split the line into blocks, `\\` before `#`/`!` escapes them and at the
    end of a line continues it, `$NAME` and `${NAME}` expand definitions
    (`$_PWD`, `$_HASH`, ...). tests/test_renderers.py checks the rest against a
    real keepalived: every password this accepts is read back exactly.
    """
    for i, c in enumerate(password):
        after = password[i + 1 : i + 2]
        if not "!" <= c <= "~" or c in '#!"{}':
            return "character"
        if c == "\\" and not after:
            return "backslash"
        if c == "$" and (after.isalpha() or after in ("_", "{")):
            return "variable"
    return None


def _vrrp_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    vr = s.vrrp
    adv = Decimal(str(vr.advert_interval))
    if vr.version == 2 and (adv != adv.to_integral_value() or not 1 <= adv <= 255):
        problems.append(
            f"{_key('vrrp')}.advertInterval: {vr.advert_interval:g} is not allowed with VRRPv2 "
            "(whole seconds 1..255); use version 3 for sub-second adverts"
        )
    if vr.version == 3 and (not Decimal("0.01") <= adv <= Decimal("40.95") or adv % Decimal("0.01") != 0):
        problems.append(
            f"{_key('vrrp')}.advertInterval: {vr.advert_interval:g} is not allowed with VRRPv3 "
            "(0.01..40.95 seconds in 0.01 steps)"
        )
    if vr.check.timeout > vr.check.interval:
        problems.append(
            f"{_key('vrrp')}.check.timeout: {vr.check.timeout} is longer than check.interval "
            f"{vr.check.interval}; checks would overlap"
        )
    if s.vrrp_auth_pass is not None:
        password = s.vrrp_auth_pass.get_secret_value()
        if vr.version != 2:
            problems.append(
                f"{_key('vrrpAuthPass')}: VRRPv3 has no authentication; remove it or set "
                f"{_key('vrrp')}.version to 2"
            )
        if auth_pass_problem(password):
            problems.append(
                f'{_key("vrrpAuthPass")}: only printable ASCII without spaces, # ! " {{ or }}, '
                "not ending in \\, and no $ before a letter, _ or { (keepalived reads # and ! as comments, "
                "braces as blocks, a final \\ as a line continuation and $NAME as a variable)"
            )
        if not 1 <= len(password) <= 8:
            problems.append(
                f"{_key('vrrpAuthPass')}: {len(password)} characters; keepalived allows 1..8 "
                "(longer ones are cut and fail `keepalived -t`)"
            )
    if s.registry is None and s.registry_password is not None:
        problems.append(
            f"{_key('registryPassword')}: set without {_key('registry')}; "
            "add registry.server and registry.username"
        )
    return problems
