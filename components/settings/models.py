"""The stack's settings as typed models: what a stack may say, and its defaults.

Single values are checked by their consumers' rules (components/values.py);
rules spanning fields are in rules.py; reading engine config is engine.py.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from components.settings.bgp import Bgp
from components.settings.routing import HealthCheck, SecurityContext, Timeouts, TmpSize
from components.settings.tls import ServiceTls, Tls
from components.values import (
    ApiToken,
    Bool,
    Cidr,
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
    PathPrefix,
    Port,
    Quantity,
    RegistryHost,
    ServiceName,
    Str,
    VipAddress,
    fail,
    in_range,
    strict_int,
)


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
    # Two misses: one slow answer from a saturated HAProxy is "busy", not dead (a
    # fall of 1 moved the VIP under the overload drill); two in a row, about 2 s
    # unanswered, is what haproxy-watch calls hung. Death itself the watcher sees at once.
    fall: Annotated[Int, in_range(1, 255)] = 2
    rise: Annotated[Int, in_range(1, 255)] = 2
    # The event-driven watcher (images/keepalived/haproxy-watch) beside
    # keepalived: HAProxy's death is known in milliseconds, not at the next poll.
    watch: Bool = True


class Handoff(_Model):
    """A planned move of the VIP (the edge pod's preStop): no connection lost."""

    # The peers' steering listeners (UDP, on each node's own address).
    port: Port = 9166
    # How long connections begun on the old node keep being served there
    # (websockets, downloads): past it they are cut. Up to an hour, the
    # default websocket idle limit; the pod's grace period follows it.
    drain_seconds: Annotated[Float, Field(ge=0.0, le=3600.0)] = Field(2.0, alias="drainSeconds")


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
    # HTTPS: its certificate, the HTTP redirect and HSTS (components/settings/tls.py).
    tls: ServiceTls | None = None
    # Routing besides hostnames (Rancher's LB port rules): path prefixes, a
    # raw TCP port on the VIP, client networks, stickiness, PROXY protocol.
    paths: tuple[PathPrefix, ...] = ()
    tcp_port: Port | None = Field(None, alias="tcpPort")
    allow_from: tuple[Cidr, ...] | None = Field(None, alias="allowFrom")
    timeouts: Timeouts = Timeouts()
    sticky: Bool = False
    proxy_protocol: Bool = Field(False, alias="proxyProtocol")
    health_check: HealthCheck = Field(HealthCheck(), alias="healthCheck")
    security_context: SecurityContext = Field(SecurityContext(), alias="securityContext")
    # The writable /tmp (an emptyDir) every app pod gets, bounded.
    tmp_size_limit: TmpSize = Field("64Mi", alias="tmpSizeLimit")

    @property
    def http(self) -> bool:
        """Served over HTTP(S): unless it is TCP-only (a tcpPort and no hostnames or paths)."""
        return self.tcp_port is None or bool(self.hostnames or self.paths)

    @property
    def ready_path(self) -> str:
        """HAProxy's check and the readiness probe."""
        return self.health_check.path or self.health_path

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
    https_port: Port = Field(443, alias="httpsPort")
    # Serves /healthz (keepalived and kubelet probes) and /metrics (Prometheus),
    # on the node's own address and loopback only, never on the VIP.
    stats_port: Port = Field(8404, alias="statsPort")
    # Each traffic frontend's (HTTP, HTTPS, each tcpPort) HAProxy `maxconn`;
    # the process's is their sum plus the health frontend's (settings/capacity.py).
    max_conn: Annotated[Int, in_range(1, 1_000_000)] = Field(10000, alias="maxConn")
    # Connections one client address may hold at once on a traffic frontend
    # (0: no limit; clients behind one NAT share an address).
    max_conn_per_source: Annotated[Int, in_range(0, 1_000_000)] = Field(0, alias="maxConnPerSource")
    # Serve traffic only on the VIP: the edge's nftables table drops
    # connections to the traffic ports addressed to the hosts' own addresses.
    bind_vip_only: Bool = Field(False, alias="bindVipOnly")
    # memoryLimit, unless set, follows maxConn (settings/capacity.py).
    resources: Resources = Resources(cpu="200m", memory="128Mi")
    # Taints of the load-balancer hosts that the edge pod tolerates.
    tolerations: tuple[Toleration, ...] = ()


class KeepalivedImage(_Model):
    """Where the keepalived image comes from."""

    image: Image = "registry.example.com/edge/keepalived:2.2.7"
    # True: build images/keepalived and push it as `image`. False: use as is.
    build: Bool = True
    resources: Resources = Resources(cpu="20m", memory="32Mi", memory_limit="64Mi")


class FrrImage(_Model):
    """Where the FRR image comes from (a `bgp` stack's edge pod; images/frr)."""

    image: Image = "registry.example.com/edge/frr:8.4.4"
    # True: build images/frr and push it as `image`. False: use as is.
    build: Bool = True
    # zebra, bgpd and bfdd with a handful of sessions and no routes taken in.
    resources: Resources = Resources(cpu="50m", memory="64Mi", memory_limit="192Mi")


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
    # As configured (None: not set); read `edge_namespace`, which resolves the default.
    edge_namespace_setting: DnsLabel | None = Field(None, alias="edgeNamespace")
    project: OneLine | None = None
    cluster_domain: DnsName = Field("cluster.local", alias="clusterDomain")
    hosts: dict[str, Host]
    vip: Vip
    vrrp: Vrrp = Vrrp()
    # Set: every healthy load-balancer host announces the VIP over BGP (FRR), no VRRP.
    bgp: Bgp | None = None
    services: Annotated[tuple[Service, ...], Field(min_length=1)]
    load_balancer: LoadBalancer = Field(LoadBalancer(), alias="loadBalancer")
    keepalived: KeepalivedImage = KeepalivedImage()
    # Used by a `bgp` stack only.
    frr: FrrImage = FrrImage()
    monitoring: Monitoring = Monitoring()
    tls: Tls = Tls()
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
    def edge_namespace(self) -> str:
        """The edge tier's namespace: `edgeNamespace`, else `<namespace>-edge`."""
        return self.edge_namespace_setting or f"{self.namespace}-edge"

    @property
    def project_name(self) -> str:
        return self.project or self.namespace

    @property
    def tls_services(self) -> list[Service]:
        return [svc for svc in self.services if svc.tls is not None]

    @property
    def http_services(self) -> list[Service]:
        return [svc for svc in self.services if svc.http]

    @property
    def default_http_service(self) -> Service | None:
        """What a request no hostname or path routes elsewhere reaches: the first HTTP service."""
        return next(iter(self.http_services), None)

    @property
    def default_tls_service(self) -> Service | None:
        """Whose certificate answers a client that sends no SNI."""
        named = self.tls.default_certificate
        return next((svc for svc in self.tls_services if named in (None, svc.name)), None)

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
