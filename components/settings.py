"""Typed, validated stack settings.

The one schema for everything the program reads from a stack: the Pulumi
program, the offline render and the lab all go through `parse_settings`, so
a setting means the same thing everywhere. Every problem is reported with its
config key path (`rancher-ha-lb:vip.routerId`) and what is allowed.

Single values are checked by their consumers' rules (components/values.py);
here are the models, the reading of engine config (namespaces, which keys may
be secret) and the rules that span fields.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
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

from components.values import (
    ApiToken,
    Bool,
    DnsLabel,
    DnsName,
    Duration,
    EnvName,
    EnvValue,
    Float,
    HealthPath,
    HostAddress,
    HostName,
    IfName,
    Image,
    Int,
    LabelKey,
    LabelValue,
    OneLine,
    Port,
    Quantity,
    RegistryHost,
    ServiceName,
    Str,
    VipAddress,
    auth_pass_readable,
    duration_seconds,
    fail,
    in_range,
    is_dns_subdomain,
    quantity,
    short_name,
    show,
    strict_int,
)

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

# Namespaces every cluster already has, or Rancher manages.
_RESERVED_NAMESPACE = re.compile(r"^(default|kube-.*|cattle-.*)$")
_MAX_DIGITS = 4000  # below Python's int/str conversion limit (4300)


class SettingsError(Exception):
    """All problems found in one stack's settings, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Role(StrEnum):
    LOAD_BALANCER = "load-balancer"
    APPS = "apps"


def _role(value: Any) -> Any:
    if value == "app":
        raise fail(
            "'app' is not a role; did you mean 'apps'? (allowed: 'load-balancer', 'apps')",
        )
    if not isinstance(value, str) or value not in {r.value for r in Role}:
        raise fail("{value} is not a role (allowed: 'load-balancer', 'apps')", value=value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Host(_Model):
    """A cluster node: its role and, for load-balancer hosts, its VRRP address."""

    role: Annotated[Role, BeforeValidator(_role)]
    address: HostAddress | None = None
    # Election order on a cold start; distinct per host. Default: by name.
    priority: Annotated[Int, in_range(1, 254)] | None = None


class Vip(_Model):
    """The virtual IP that keepalived moves between load-balancer hosts."""

    address: VipAddress
    interface: IfName = "eth0"
    router_id: Annotated[Int, in_range(1, 255)] = Field(1, alias="routerId")

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip


class Check(_Model):
    """The keepalived poll of this node's HAProxy health endpoint."""

    # keepalived's vrrp_script interval/timeout are whole seconds >= 1.
    interval: Annotated[Int, in_range(1, 3600)] = 1
    timeout: Annotated[Int, in_range(1, 3600)] = 1
    fall: Annotated[Int, in_range(1, 255)] = 1
    rise: Annotated[Int, in_range(1, 255)] = 2
    # The event-driven watcher (images/keepalived/haproxy-watch) beside
    # keepalived: HAProxy's death is known in milliseconds, not at the next poll.
    watch: Bool = True


class Handoff(_Model):
    """A planned move of the VIP (the edge pod's preStop): no connection lost."""

    # The peers' steering listeners (UDP, on each node's own address).
    port: Port = 9166
    # How long connections begun on the old node keep being served there.
    drain_seconds: Annotated[Float, Field(ge=0.0, le=300.0)] = Field(2.0, alias="drainSeconds")


class Vrrp(_Model):
    """VRRP timers and transport; see docs on failover for the trade-off."""

    version: Annotated[Literal[2, 3], BeforeValidator(strict_int)] = 3
    advert_interval: Float = Field(0.05, alias="advertInterval")
    unicast: Bool = True
    garp_refresh: Annotated[Int, in_range(0, 86400)] = Field(60, alias="garpRefresh")
    check: Check = Check()
    # The VRRP exporter beside keepalived (images/keepalived/vrrp-exporter);
    # 9165 is the port keepalived exporters customarily use.
    metrics_port: Port = Field(9165, alias="metricsPort")
    handoff: Handoff = Handoff()


class Resources(_Model):
    """Requests and limits for one container (Kubernetes quantities)."""

    cpu: Quantity = "100m"
    memory: Quantity = "128Mi"
    cpu_limit: Quantity | None = Field(None, alias="cpuLimit")
    memory_limit: Quantity = Field("256Mi", alias="memoryLimit")


def _replicas(value: int) -> int:
    if not 2 <= value <= 1000:
        raise fail(
            "{value} is not in 2..1000 (every service runs on 2+ hosts: with one replica, "
            "each restart or node drain is an outage)",
            value=value,
        )
    return value


class Service(_Model):
    """One app service behind the load balancer."""

    name: ServiceName
    image: Image
    port: Port
    replicas: Annotated[Int, AfterValidator(_replicas)] = 2
    hostnames: tuple[HostName, ...] = ()
    health_path: HealthPath = Field("/", alias="healthPath")
    env: dict[EnvName, EnvValue] = {}
    resources: Resources = Resources()

    @property
    def plain_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if isinstance(v, str)}

    @property
    def secret_env(self) -> dict[str, str]:
        """Values that must reach the pod through a Kubernetes Secret."""
        return {k: v.get_secret_value() for k, v in self.env.items() if isinstance(v, SecretStr)}


class Toleration(_Model):
    """A taint the edge pods tolerate: dedicated LB hosts are often tainted to
    keep other workloads off them."""

    key: Annotated[Str, Field(min_length=1, max_length=316)] | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[Str, Field(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class LoadBalancer(_Model):
    """The HAProxy tier on the load-balancer hosts."""

    # Built from images/haproxy (Debian's HAProxy 2.6) and pushed as `image`
    # when `build` is true; `false` runs `image` as is.
    image: Image = "registry.example.com/edge/haproxy:2.6.12"
    build: Bool = True
    http_port: Port = Field(80, alias="httpPort")
    # Serves /healthz (keepalived and kubelet probes) and /metrics (Prometheus),
    # on the node's own address and loopback only, never on the VIP.
    stats_port: Port = Field(8404, alias="statsPort")
    max_conn: Annotated[Int, in_range(1, 1_000_000)] = Field(20000, alias="maxConn")
    resources: Resources = Resources(cpu="200m", memory="128Mi", memory_limit="512Mi")
    # Taints of the load-balancer hosts that the edge pod tolerates.
    tolerations: tuple[Toleration, ...] = ()


class KeepalivedImage(_Model):
    """Where the keepalived image comes from."""

    image: Image = "registry.example.com/edge/keepalived:2.2.7"
    # True: build images/keepalived and push it as `image`. False: use as is.
    build: Bool = True
    resources: Resources = Resources(cpu="20m", memory="32Mi", memory_limit="64Mi")


class Registry(_Model):
    """A private registry: push target for the build, pull secret for the pods."""

    server: RegistryHost
    username: OneLine


class Monitoring(_Model):
    """Rancher Monitoring (prometheus-operator) objects for the edge tier.

    Rancher Monitoring's Prometheus selects PodMonitors and PrometheusRules in
    every namespace, and its Grafana loads ConfigMaps labelled
    `grafana_dashboard: "1"` from `cattle-dashboards`; `labels` is for a
    Prometheus that selects by label (kube-prometheus-stack's `release: ...`).
    """

    enabled: Bool = False
    scrape_interval: Duration = Field("15s", alias="scrapeInterval")
    # "A failover happened" stays firing this long after a host became MASTER.
    failover_window: Duration = Field("10m", alias="failoverWindow")
    dashboards_namespace: DnsLabel = Field("cattle-dashboards", alias="dashboardsNamespace")
    labels: dict[LabelKey, LabelValue] = {}


class Rancher(_Model):
    """The `rancher2:` provider settings this program passes on."""

    api_url: Annotated[Str, Field(pattern=r"^https?://\S+$")] = Field(alias="apiUrl")
    token_key: ApiToken | None = Field(None, alias="tokenKey")
    insecure: Bool = False
    ca_certs: Str | None = Field(None, alias="caCerts")


class Settings(_Model):
    """Everything one stack configures."""

    rancher: Rancher
    cluster: OneLine
    namespace: DnsLabel
    edge_namespace: DnsLabel | None = Field(None, alias="edgeNamespace")
    project: OneLine | None = None
    cluster_domain: DnsName = Field("cluster.local", alias="clusterDomain")
    hosts: dict[str, Host]
    vip: Vip
    vrrp: Vrrp = Vrrp()
    services: Annotated[tuple[Service, ...], Field(min_length=1)]
    load_balancer: LoadBalancer = Field(LoadBalancer(), alias="loadBalancer")
    keepalived: KeepalivedImage = KeepalivedImage()
    monitoring: Monitoring = Monitoring()
    registry: Registry | None = None
    # The platform images are built for (`docker build --platform`).
    image_platform: Annotated[Str, Field(pattern=r"^linux/(amd64|arm64|arm/v7|ppc64le|s390x)$")] = Field(
        "linux/amd64", alias="imagePlatform"
    )
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


def _problems_from(
    exc: ValidationError,
    key_of: Mapping[str, str],
    secret_env: bool = False,
    refused: frozenset[tuple[str, ...]] = frozenset(),
) -> list[str]:
    """`refused`: keys already reported and left out, not to be called missing too."""
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


def _loc(ns: str, key: str) -> tuple[str, ...]:
    """Where pydantic puts a config key's value: `rancher2:` keys in `rancher`."""
    return ("rancher", key) if ns == RANCHER else (key,)


def parse_settings(raw: RawConfig) -> Settings:
    """Turn engine config into Settings, or raise SettingsError with every problem."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    rancher: dict[str, Any] = {}
    key_of: dict[str, str] = {"rancher": f"{RANCHER}:"}
    known_fields = {v: k for k, v in _FIELD_KEYS.items()}
    refused: set[tuple[str, ...]] = set()  # reported here: not "missing" as well

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
        key_of[known_fields[key]] = full_key
        key_of[key] = full_key

    data["rancher"] = rancher
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(
            exc, key_of, secret_env=f"{PROJECT}:services" in raw.secret_keys, refused=frozenset(refused)
        )
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
        elif not is_dns_subdomain(node):
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
    problems += _edge_problems(s)
    return problems


def _edge_problems(s: Settings) -> list[str]:
    """The edge pod's ports (one host network), images, tolerations, monitoring."""
    problems: list[str] = []
    lb = s.load_balancer
    lb_ports = {lb.http_port, lb.stats_port}
    if lb.http_port == lb.stats_port:
        problems.append(f"{_key('loadBalancer')}.statsPort: {lb.stats_port} is also the httpPort")
    if s.vrrp.metrics_port in lb_ports:
        problems.append(
            f"{_key('vrrp')}.metricsPort: {s.vrrp.metrics_port} is also HAProxy's "
            f"{'httpPort' if s.vrrp.metrics_port == lb.http_port else 'statsPort'}; "
            "pick a free port (default 9165)"
        )
    if s.vrrp.handoff.port in lb_ports | {s.vrrp.metrics_port}:
        problems.append(
            f"{_key('vrrp')}.handoff.port: {s.vrrp.handoff.port} is taken by another edge port "
            "(httpPort, statsPort, metricsPort); pick a free one (default 9166)"
        )
    for key, img in (("keepalived", s.keepalived), ("loadBalancer", s.load_balancer)):
        if img.build and "@" in img.image:
            problems.append(
                f"{_key(key)}.image: a digest cannot be a push target; with build: true give repository[:tag]"
            )
    for i, tol in enumerate(lb.tolerations):
        where = f"{_key('loadBalancer')}.tolerations[{i}]"
        if tol.operator == "Exists" and tol.value is not None:
            problems.append(f"{where}.value: must be empty with operator Exists")
        if tol.operator == "Equal" and tol.key is None:
            problems.append(f"{where}.key: required with operator Equal (or use operator Exists)")
    mon = s.monitoring
    scrape, window = duration_seconds(mon.scrape_interval), duration_seconds(mon.failover_window)
    if window < 2 * scrape:
        # increase() needs two samples inside the window.
        problems.append(
            f"{_key('monitoring')}.failoverWindow: {mon.failover_window} is shorter than two "
            f"scrapeIntervals ({mon.scrape_interval}); a failover could never be seen"
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
        if not auth_pass_readable(password):
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
