"""Typed, validated stack settings.

The one schema for everything the program reads from a stack: the Pulumi
program, the offline render and the lab all go through `parse_settings`, so
a setting means the same thing everywhere. Every problem is reported with its
config key path (`rancher-ha-lb:vip.routerId`) and what is allowed.
"""

from __future__ import annotations

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
from pydantic_core import PydanticCustomError

PROJECT = "rancher-ha-lb"
RANCHER = "rancher2"

# Keys this program reads from the `rancher2:` namespace (the provider's own
# settings); any other `rancher2:` key is the provider's business, not ours.
RANCHER_KEYS = ("apiUrl", "tokenKey", "insecure", "caCerts")
SECRET_PROJECT_KEYS = ("vrrpAuthPass", "registryPassword")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Linux IFNAMSIZ is 16 including the NUL; '/', ':' and whitespace are refused.
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_K8S_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Prometheus durations as prometheus-operator and rule files take them: 1h30m, 15s, 500ms.
_PROM_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class SettingsError(Exception):
    """All problems found in one stack's settings, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    # Formatted here (pydantic's templates know no !r); no context is passed,
    # so braces in a user's value are never read as a template.
    return PydanticCustomError(kind, message.format(**ctx))


def _in_range(lo: int, hi: int) -> AfterValidator:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise _fail("range", "{value} is not in {lo}..{hi}", value=value, lo=lo, hi=hi)
        return value

    return AfterValidator(check)


def _strict_int(value: Any) -> Any:
    # YAML `port: "80"` or `replicas: 1.5` are typos, not numbers to coerce.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise _fail("int", "{value!r} is not a whole number", value=value)
    if isinstance(value, float):
        return int(value)
    return value


def _dns_label(value: str) -> str:
    if not _DNS1123_LABEL.match(value):
        raise _fail(
            "dns",
            "{value!r} is not a DNS-1123 label (lower-case a-z, 0-9 and '-', "
            "starting and ending alphanumeric, at most 63 characters)",
            value=value,
        )
    return value


def _dns_name(value: str) -> str:
    if len(value) > 253 or not _DNS_NAME.match(value):
        raise _fail("dns", "{value!r} is not a lower-case DNS host name", value=value)
    return value


def _ifname(value: str) -> str:
    if not _IFNAME.match(value):
        raise _fail(
            "ifname",
            "{value!r} is not a Linux interface name (1-15 characters of A-Z a-z 0-9 _ . @ -)",
            value=value,
        )
    return value


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration ('1m30s' -> 90); ValueError if it is not one."""
    m = _PROM_DURATION.match(text)
    if not text or m is None:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS, strict=True) if g)


def _duration(value: str) -> str:
    try:
        seconds = duration_seconds(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise _fail(
            "duration",
            "{value!r} is not a positive Prometheus duration (e.g. 15s, 10m, 1h30m)",
            value=value,
        )
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _DNS_NAME.match(prefix))):
        raise _fail(
            "label",
            "{value!r} is not a Kubernetes label key ([prefix/]name, name up to 63 of A-Z a-z 0-9 - _ .)",
            value=value,
        )
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise _fail(
            "label",
            "{value!r} is not a Kubernetes label value (up to 63 of A-Z a-z 0-9 - _ ., alphanumeric ends)",
            value=value,
        )
    return value


Int = Annotated[int, BeforeValidator(_strict_int)]
Port = Annotated[Int, _in_range(1, 65535)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsName = Annotated[str, AfterValidator(_dns_name)]
Duration = Annotated[str, AfterValidator(_duration)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


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
        raise _fail("role", "{value!r} is not a role (allowed: 'load-balancer', 'apps')", value=value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Host(_Model):
    """A cluster node: its role and, for load-balancer hosts, its VRRP address."""

    role: Annotated[Role, BeforeValidator(_role)]
    address: ipaddress.IPv4Address | None = None
    # Election order on a cold start; distinct per host. Default: by name.
    priority: Annotated[Int, _in_range(1, 254)] | None = None


class Vip(_Model):
    """The virtual IP that keepalived moves between load-balancer hosts."""

    address: ipaddress.IPv4Interface
    interface: Annotated[str, AfterValidator(_ifname)] = "eth0"
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
    watch: bool = True


class Handoff(_Model):
    """A planned move of the VIP (the edge pod's preStop): no connection lost."""

    # The peers' steering listeners (UDP, on each node's own address).
    port: Port = 9166
    # How long connections begun on the old node keep being served there.
    drain_seconds: Annotated[float, Field(ge=0.0, le=300.0, allow_inf_nan=False)] = Field(
        2.0, alias="drainSeconds"
    )


class Vrrp(_Model):
    """VRRP timers and transport; see docs on failover for the trade-off."""

    version: Literal[2, 3] = 3
    advert_interval: float = Field(0.05, alias="advertInterval", allow_inf_nan=False)
    unicast: bool = True
    garp_refresh: Annotated[Int, _in_range(0, 86400)] = Field(60, alias="garpRefresh")
    check: Check = Check()
    # The VRRP exporter beside keepalived (images/keepalived/vrrp-exporter);
    # 9165 is the port keepalived exporters customarily use.
    metrics_port: Port = Field(9165, alias="metricsPort")
    handoff: Handoff = Handoff()


class Resources(_Model):
    """Requests and limits for one container (Kubernetes quantities)."""

    cpu: str = "100m"
    memory: str = "128Mi"
    cpu_limit: str | None = Field(None, alias="cpuLimit")
    memory_limit: str = Field("256Mi", alias="memoryLimit")


def _replicas(value: int) -> int:
    if not 2 <= value <= 1000:
        raise _fail(
            "range",
            "{value} is not in 2..1000 (every service runs on 2+ hosts: with one replica, "
            "each restart or node drain is an outage)",
            value=value,
        )
    return value


class Service(_Model):
    """One app service behind the load balancer."""

    name: DnsLabel
    image: Annotated[str, Field(min_length=1)]
    port: Port
    replicas: Annotated[Int, AfterValidator(_replicas)] = 2
    hostnames: tuple[DnsName, ...] = ()
    health_path: Annotated[str, Field(pattern=r"^/\S*$")] = Field("/", alias="healthPath")
    env: dict[str, str] = {}
    resources: Resources = Resources()


class Toleration(_Model):
    """A taint the edge pods tolerate: dedicated LB hosts are often tainted to
    keep other workloads off them."""

    key: Annotated[str, Field(min_length=1, max_length=316)] | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[str, Field(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class LoadBalancer(_Model):
    """The HAProxy tier on the load-balancer hosts."""

    # Built from images/haproxy (Debian's HAProxy 2.6) and pushed as `image`
    # when `build` is true; `false` runs `image` as is.
    image: str = "registry.example.com/edge/haproxy:2.6.12"
    build: bool = True
    http_port: Port = Field(80, alias="httpPort")
    # Serves /healthz (keepalived and kubelet probes) and /metrics (Prometheus),
    # on the node's own address and loopback only, never on the VIP.
    stats_port: Port = Field(8404, alias="statsPort")
    max_conn: Annotated[Int, _in_range(1, 1_000_000)] = Field(20000, alias="maxConn")
    resources: Resources = Resources(cpu="200m", memory="128Mi", memory_limit="512Mi")
    # Taints of the load-balancer hosts that the edge pod tolerates.
    tolerations: tuple[Toleration, ...] = ()


class KeepalivedImage(_Model):
    """Where the keepalived image comes from."""

    image: str = "registry.example.com/edge/keepalived:2.2.7"
    # True: build images/keepalived and push it as `image`. False: use as is.
    build: bool = True
    resources: Resources = Resources(cpu="20m", memory="32Mi", memory_limit="64Mi")


class Monitoring(_Model):
    """Rancher Monitoring (prometheus-operator) objects for the edge tier.

    Rancher Monitoring's Prometheus selects PodMonitors and PrometheusRules in
    every namespace, and its Grafana loads ConfigMaps labelled
    `grafana_dashboard: "1"` from `cattle-dashboards`; `labels` is for a
    Prometheus that selects by label (kube-prometheus-stack's `release: ...`).
    """

    enabled: bool = False
    scrape_interval: Duration = Field("15s", alias="scrapeInterval")
    # "A failover happened" stays firing this long after a host became MASTER.
    failover_window: Duration = Field("10m", alias="failoverWindow")
    dashboards_namespace: DnsLabel = Field("cattle-dashboards", alias="dashboardsNamespace")
    labels: dict[LabelKey, LabelValue] = {}


class Registry(_Model):
    """A private registry: push target for the build, pull secret for the pods."""

    server: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]


class Rancher(_Model):
    """The `rancher2:` provider settings this program passes on."""

    api_url: Annotated[str, Field(pattern=r"^https?://\S+$")] = Field(alias="apiUrl")
    token_key: SecretStr | None = Field(None, alias="tokenKey")
    insecure: bool = False
    ca_certs: str | None = Field(None, alias="caCerts")


class Settings(_Model):
    """Everything one stack configures."""

    rancher: Rancher
    cluster: Annotated[str, Field(min_length=1)]
    namespace: DnsLabel
    edge_namespace: DnsLabel | None = Field(None, alias="edgeNamespace")
    project: str | None = None
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
    image_platform: Annotated[str, Field(pattern=r"^linux/(amd64|arm64|arm/v7|ppc64le|s390x)$")] = Field(
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


def _decode(value: str) -> Any:
    # Structured config arrives JSON-encoded; plain strings stay strings.
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 0 and prefix.endswith(":"):
            out += str(part)
        else:
            out += f".{part}"
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
        return f"{value!r} is not a whole number"
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return f"{value!r} is not a (finite) number"
    if kind in {"bool_type", "bool_parsing"}:
        return f"{value!r} is not true or false"
    if kind in {"string_type"}:
        return f"{value!r} is not a string"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"{value!r} is not a mapping of keys to values"
    if kind in {"tuple_type", "list_type"}:
        return f"{value!r} is not a list"
    if kind == "literal_error":
        return f"{value!r} is not allowed ({err['ctx']['expected']})"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {err['ctx']['pattern']}"
    if kind.startswith("ip_v4"):
        what = "an IPv4 address with prefix (a.b.c.d/n)" if "interface" in kind else "an IPv4 address"
        return f"{value!r} is not {what}"
    return str(err["msg"])


def _problems_from(exc: ValidationError, key_of: Mapping[str, str]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        top = str(loc[0]) if loc else ""
        full_key = key_of.get(top, f"{PROJECT}:{top}")
        path = _path(full_key, loc[1:]) if loc else PROJECT
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            if model is not None:
                msg += f"; expected one of: {_expected(model)}"
        problems.append(f"{path}: {msg}")
    return problems


def parse_settings(raw: RawConfig) -> Settings:
    """Turn engine config into Settings, or raise SettingsError with every problem."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    rancher: dict[str, Any] = {}
    key_of: dict[str, str] = {"rancher": f"{RANCHER}:"}
    known_fields = {v: k for k, v in _FIELD_KEYS.items()}

    for full_key, value in sorted(raw.values.items()):
        ns, _, key = full_key.partition(":")
        if ns == RANCHER:
            if key in RANCHER_KEYS:
                rancher[key] = value if key in ("tokenKey", "caCerts") else _decode(value)
            continue
        if ns != PROJECT:
            continue  # other providers' settings (kubernetes:, docker:) are theirs
        if key not in known_fields:
            problems.append(f"{full_key}: unknown key; expected one of: {', '.join(sorted(known_fields))}")
            continue
        if key in SECRET_PROJECT_KEYS:
            data[key] = value
        else:
            data[key] = _decode(value)
        key_of[known_fields[key]] = f"{full_key}"
        key_of[key] = f"{full_key}"

    data["rancher"] = rancher
    # Pydantic reports missing rancher keys under 'rancher'; map them to rancher2:KEY.
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(exc, key_of)
        raise SettingsError(problems) from None
    problems += _semantic_problems(settings)
    if problems:
        raise SettingsError(problems)
    return settings


def _key(name: str) -> str:
    return f"{PROJECT}:{name}"


def _semantic_problems(s: Settings) -> list[str]:
    """Rules that span fields: the design's invariants."""
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
        if not _K8S_NODE_NAME.match(node):
            problems.append(f"{_key('hosts')}.{node}: not a Kubernetes node name (lower-case DNS subdomain)")

    net = s.vip.address.network
    seen: dict[ipaddress.IPv4Address, str] = {}
    for node in lb:
        host = s.hosts[node]
        where = f"{_key('hosts')}.{node}.address"
        if host.address is None:
            problems.append(f"{where}: missing (required for load-balancer hosts: VRRP peers)")
            continue
        if host.address in seen:
            problems.append(f"{where}: {host.address} is also the address of {seen[host.address]}")
        seen[host.address] = node
        if host.address not in net:
            problems.append(f"{where}: {host.address} is outside the VIP's subnet {net}")
        if host.address == s.vip.ip:
            problems.append(f"{where}: {host.address} is the VIP itself; use another address")
        if host.address in (net.network_address, net.broadcast_address):
            problems.append(f"{where}: {host.address} is the subnet's network/broadcast address")
    for node in apps:
        addr = s.hosts[node].address
        if addr is not None and addr == s.vip.ip:
            problems.append(f"{_key('hosts')}.{node}.address: {addr} is the VIP itself")
    if s.vip.ip in (net.network_address, net.broadcast_address) and net.prefixlen < 31:
        problems.append(f"{_key('vip')}.address: {s.vip.address} is the subnet's network/broadcast address")

    prios: dict[int, str] = {}
    for node in lb:
        p = s.priority(node)
        if not 1 <= p <= 254:
            problems.append(f"{_key('hosts')}.{node}.priority: default {p} is not in 1..254; set it")
        if p in prios:
            problems.append(
                f"{_key('hosts')}.{node}.priority: {p} is also {prios[p]}'s; priorities must "
                "be distinct so the cold-start election is not arbitrary"
            )
        prios[p] = node

    names: dict[str, int] = {}
    hostnames: dict[str, str] = {}
    lb_ports = {s.load_balancer.http_port, s.load_balancer.stats_port}
    for i, svc in enumerate(s.services):
        if svc.name in names:
            problems.append(
                f"{_key('services')}[{i}].name: {svc.name!r} is also services[{names[svc.name]}]'s name"
            )
        names.setdefault(svc.name, i)
        for h in svc.hostnames:
            if h in hostnames:
                problems.append(
                    f"{_key('services')}[{i}].hostnames: {h!r} is already routed to {hostnames[h]!r}"
                )
            hostnames.setdefault(h, svc.name)
    if len(lb_ports) < 2:
        problems.append(
            f"{_key('loadBalancer')}.statsPort: {s.load_balancer.stats_port} is also the httpPort"
        )
    if s.vrrp.metrics_port in lb_ports:
        # One host network: the exporter and HAProxy cannot share a port.
        problems.append(
            f"{_key('vrrp')}.metricsPort: {s.vrrp.metrics_port} is also HAProxy's "
            f"{'httpPort' if s.vrrp.metrics_port == s.load_balancer.http_port else 'statsPort'}; "
            "pick a free port (default 9165)"
        )
    if s.vrrp.handoff.port in lb_ports | {s.vrrp.metrics_port}:
        problems.append(
            f"{_key('vrrp')}.handoff.port: {s.vrrp.handoff.port} is taken by another edge port "
            "(httpPort, statsPort, metricsPort); pick a free one (default 9166)"
        )
    mon = s.monitoring
    scrape, window = duration_seconds(mon.scrape_interval), duration_seconds(mon.failover_window)
    if window < 2 * scrape:
        # increase() needs two samples inside the window.
        problems.append(
            f"{_key('monitoring')}.failoverWindow: {mon.failover_window} is shorter than two "
            f"scrapeIntervals ({mon.scrape_interval}); a failover could never be seen"
        )

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
        length = len(s.vrrp_auth_pass.get_secret_value())
        if vr.version != 2:
            problems.append(
                f"{_key('vrrpAuthPass')}: VRRPv3 has no authentication; remove it or set "
                f"{_key('vrrp')}.version to 2"
            )
        if any(c in "#!\"'" or not "!" <= c <= "~" for c in s.vrrp_auth_pass.get_secret_value()):
            problems.append(
                f"{_key('vrrpAuthPass')}: only printable ASCII without spaces or # ! \" ' "
                "(keepalived reads # and ! as comments)"
            )
        if not 1 <= length <= 8:
            problems.append(
                f"{_key('vrrpAuthPass')}: {length} characters; keepalived allows 1..8 "
                "(longer ones are cut and fail `keepalived -t`)"
            )
    for i, tol in enumerate(s.load_balancer.tolerations):
        where = f"{_key('loadBalancer')}.tolerations[{i}]"
        if tol.operator == "Exists" and tol.value is not None:
            problems.append(f"{where}.value: must be empty with operator Exists")
        if tol.operator == "Equal" and tol.key is None:
            problems.append(f"{where}.key: required with operator Equal (or use operator Exists)")
    if s.registry is None and s.registry_password is not None:
        problems.append(
            f"{_key('registryPassword')}: set without {_key('registry')}; "
            "add registry.server and registry.username"
        )
    return problems
