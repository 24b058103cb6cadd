"""Every numeric bound of the settings, on both sides, and every character vrrpAuthPass refuses.

One row a case: the value just inside a bound parses, the value just outside
gives exactly one message, naming the key and the range. Then a bad stack
under the mocks: the program stops before it registers any resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from conftest import lab_value, stack_raw, with_overrides

import halb.mockrun
from components.settings import RawConfig, Settings, SettingsError, parse_settings
from components.values import short_name, show
from halb.mockcluster import Rancher
from halb.mockrun import RecordingMonitor, run_program

P = "rancher-ha-lb:"
BASE = stack_raw("lab")
DNS_253 = ".".join(["a" * 61, "b" * 63, "c" * 63, "d" * 63])
V2 = {"version": 2, "advertInterval": 1}


def vrrp(**values: Any) -> dict[str, Any]:
    return {"vrrp": values}


def check(**values: Any) -> dict[str, Any]:
    return {"vrrp": {"check": values}}


def lb(**values: Any) -> dict[str, Any]:
    return {"loadBalancer": {**lab_value("loadBalancer"), **values}}


def vip(**values: Any) -> dict[str, Any]:
    return {"vip": {**lab_value("vip"), **values}}


def service(**values: Any) -> dict[str, Any]:
    services = lab_value("services")
    return {"services": [{**services[0], **values}, services[1]]}


def host(name: str, **values: Any) -> dict[str, Any]:
    hosts = lab_value("hosts")
    hosts[name] = {**hosts[name], **values}
    return {"hosts": hosts}


def node_name(length: int) -> str:
    """A valid node name (63-character labels) of `length` characters."""
    name = ".".join(["n" * 63] * 5)[:length]
    assert not name.endswith(".")
    return name


def extra_host(name: str, role: str) -> dict[str, Any]:
    hosts = lab_value("hosts")
    hosts[name] = {"role": role, "address": "192.0.2.13"} if role == "load-balancer" else {"role": role}
    return {"hosts": hosts}


def lb_hosts(count: int) -> dict[str, Any]:
    """`count` load-balancer hosts, lb-01..., default priorities 200, 190, ..."""
    hosts: dict[str, Any] = {
        f"lb-{i:02d}": {"role": "load-balancer", "address": f"192.0.2.{100 + i}"} for i in range(1, count + 1)
    }
    hosts["app-1"] = {"role": "apps"}
    return {"hosts": hosts}


@dataclass(frozen=True)
class Bound:
    """`changes` at `key` with `ok` values inside and `bad` values just outside."""

    key: str
    lo: int | float
    hi: int | float
    set: Any  # value -> overrides

    def cases(self) -> list[tuple[str, dict[str, Any], str | None]]:
        step = 1 if isinstance(self.lo, int) else 0.01
        out: list[tuple[str, dict[str, Any], str | None]] = []
        for value in (self.lo, self.hi):
            out.append((f"{self.key}={value}", self.set(value), None))
        lo_out = round(self.lo - step, 2)
        hi_out = round(self.hi + step, 2)
        for value in (lo_out, hi_out):
            out.append(
                (
                    f"{self.key}={value}",
                    self.set(value),
                    f"{P}{self.key}: {value} is not in {self.lo}..{self.hi}",
                )
            )
        return out


def advert(version: int, value: float, ok: bool) -> tuple[str, dict[str, Any], str | None]:
    expected = f"{P}vrrp.advertInterval: {value} is not allowed with VRRPv{version}"
    return f"v{version} advert={value}", vrrp(version=version, advertInterval=value), None if ok else expected


BOUNDS = [
    Bound("vip.routerId", 1, 255, lambda v: vip(routerId=v)),
    Bound("hosts.lb-1.priority", 1, 254, lambda v: host("lb-1", priority=v)),
    # timeout <= interval is a rule of its own: raise interval with it.
    Bound("vrrp.check.interval", 1, 3600, lambda v: check(interval=v)),
    Bound("vrrp.check.timeout", 1, 3600, lambda v: check(interval=3600, timeout=v)),
    Bound("vrrp.check.fall", 1, 255, lambda v: check(fall=v)),
    Bound("vrrp.check.rise", 1, 255, lambda v: check(rise=v)),
    Bound("vrrp.garpRefresh", 0, 86400, lambda v: vrrp(garpRefresh=v)),
    Bound("vrrp.metricsPort", 1, 65535, lambda v: vrrp(metricsPort=v)),
    Bound("loadBalancer.httpPort", 1, 65535, lambda v: lb(httpPort=v)),
    Bound("loadBalancer.statsPort", 1, 65535, lambda v: lb(statsPort=v)),
    Bound("loadBalancer.maxConn", 1, 1_000_000, lambda v: lb(maxConn=v)),
    Bound("services[0].port", 1, 65535, lambda v: service(port=v)),
]
ROWS: list[tuple[str, dict[str, Any], str | None]] = [c for b in BOUNDS for c in b.cases()]
ROWS += [
    ("replicas=2", service(replicas=2), None),
    ("replicas=1000", service(replicas=1000), None),
    ("replicas=1", service(replicas=1), f"{P}services[0].replicas: 1 is not in 2..1000 (every"),
    ("replicas=1001", service(replicas=1001), f"{P}services[0].replicas: 1001 is not in 2..1000 (every"),
    # VRRPv3: 0.01..40.95 s in 0.01 steps; VRRPv2: whole seconds 1..255.
    *[advert(3, v, ok=True) for v in (0.01, 40.95)],
    *[advert(3, v, ok=False) for v in (0.009, 40.96, 0.015)],
    *[advert(2, v, ok=True) for v in (1, 255)],
    *[advert(2, v, ok=False) for v in (0, 256, 1.5)],
    # The check may take its whole interval, not more.
    ("timeout=interval", check(interval=3, timeout=3), None),
    ("timeout=interval+1", check(interval=3, timeout=4),
     f"{P}vrrp.check.timeout: 4 is longer than check.interval 3; checks would overlap"),
    # Two load balancers at least; default priorities 200, 190, ... down to 10 (20 hosts).
    ("2 load balancers", lb_hosts(2), None),
    ("1 load balancer", lb_hosts(1), f"{P}hosts: 1 load-balancer host(s); at least 2 are needed"),
    ("20 default priorities", lb_hosts(20), None),
    ("21 default priorities", lb_hosts(21), f"{P}hosts.lb-21.priority: default 0 is not in 1..254; set it"),
    # Names Kubernetes takes: a DNS subdomain and an env var name, at most 253 characters.
    ("clusterDomain 253 chars", {"clusterDomain": DNS_253}, None),
    ("clusterDomain 254 chars", {"clusterDomain": "a" + DNS_253},
     f"{P}clusterDomain: {show('a' + DNS_253)} is not a lower-case DNS name"),
    ("env name 253 chars", service(env={"E" * 253: "x"}), None),
    ("env name 254 chars", service(env={"E" * 254: "x"}),
     f"{P}services[0].env.{short_name('E' * 254)}: not an environment variable name (letters, digits, "
     "'_', '-', '.', not starting with a digit; at most 253 characters)"),
    # A word is not a number, whatever the quotes.
    ("advertInterval word", vrrp(advertInterval="fast"),
     f"{P}vrrp.advertInterval: 'fast' is not a (finite) number"),
    ("advertInterval quoted", vrrp(advertInterval="0.5"),
     f"{P}vrrp.advertInterval: '0.5' is a string, not a number; remove the quotes"),
    # An unknown key lists the keys of the model it sits in, however deep.
    ("unknown key in a service's resources", service(resources={"cpu": "1", "bogus": 1}),
     f"{P}services[0].resources.bogus: unknown key; expected one of: cpu, cpuLimit, memory, memoryLimit"),
    ("unknown key in a toleration", lb(tolerations=[{"key": "a", "bogus": 1}]),
     f"{P}loadBalancer.tolerations[0].bogus: unknown key; expected one of: effect, key, operator, value"),
    ("unknown key in the check", check(bogus=1),
     f"{P}vrrp.check.bogus: unknown key; expected one of: fall, interval, rise, timeout, watch"),
    # Every edge port its own: they share the host's network namespace.
    ("statsPort=httpPort", lb(statsPort=80), f"{P}loadBalancer.statsPort: 80 is also the httpPort"),
    ("metricsPort=statsPort", vrrp(metricsPort=8404),
     f"{P}vrrp.metricsPort: 8404 is also HAProxy's statsPort; pick a free port (default 9165)"),
    ("metricsPort=httpPort", vrrp(metricsPort=80),
     f"{P}vrrp.metricsPort: 80 is also HAProxy's httpPort; pick a free port (default 9165)"),
    *[(f"handoff.port={port}", vrrp(handoff={"port": port}),
       f"{P}vrrp.handoff.port: {port} is taken by another edge port (httpPort, statsPort, metricsPort); "
       "pick a free one (default 9166)") for port in (80, 8404, 9165)],
    ("handoff.port free", vrrp(handoff={"port": 9167}), None),
    # Tolerations as the API server validates them.
    ("toleration Exists with a value", lb(tolerations=[{"key": "a", "operator": "Exists", "value": "x"}]),
     f"{P}loadBalancer.tolerations[0].value: must be empty with operator Exists"),
    ("toleration Equal without a key",
     lb(tolerations=[{"operator": "Exists"}, {"operator": "Equal", "value": "x"}]),
     f"{P}loadBalancer.tolerations[1].key: required with operator Equal (or use operator Exists)"),
    ("tolerations valid",
     lb(tolerations=[{"operator": "Exists"}, {"key": "k", "operator": "Equal", "value": "v"}]), None),
    # Neither a host nor the VIP on the subnet's network or broadcast address.
    *[(f"lb-1 on {a}", host("lb-1", address=a),
       f"{P}hosts.lb-1.address: {a} is the subnet's network/broadcast address")
      for a in ("192.0.2.0", "192.0.2.255")],
    ("VIP on the broadcast address", vip(address="192.0.2.255/24"),
     f"{P}vip.address: 192.0.2.255/24 is the subnet's network/broadcast address"),
    ("lb-1 on the last host address", host("lb-1", address="192.0.2.254"), None),
    # Numbers JSON gives the program: at most 4000 digits (4001 is refused before pydantic).
    ("routerId with 4001 digits", vip(routerId=10**4000),
     f"{P}vip: holds a 4001-digit number (at most 4000 digits)"),
    # Quantities up to 2^63-1 (the API server's int64), however written.
    ("cpu 2^63-1", service(resources={"cpu": 2**63 - 1}), None),
    ("cpu 2^63", service(resources={"cpu": 2**63}),
     f"{P}services[0].resources.cpu: '9223372036854775808' is too large for a Kubernetes quantity"),
    ("cpu 21 digits", service(resources={"cpu": 10**20}),
     f"{P}services[0].resources.cpu: a 21-digit number is too large for a Kubernetes quantity"),
    ("cpu 9E", service(resources={"cpu": "9E"}), None),
    ("cpu 10E", service(resources={"cpu": "10E"}),
     f"{P}services[0].resources.cpu: '10E' is too large for a Kubernetes quantity"),
    ("cpu infinite", service(resources={"cpu": float("inf")}),
     f"{P}services[0].resources.cpu: inf is not a Kubernetes quantity"),
    # Node names: 253 characters, 248 for a load balancer (its `<node>.conf` is a Secret key).
    ("lb host name 248 chars", extra_host(node_name(248), "load-balancer"), None),
    ("lb host name 249 chars", extra_host(node_name(249), "load-balancer"),
     f"{P}hosts.{short_name(node_name(249))}: 249 characters; a load-balancer host's name may have at most "
     "248 (its keepalived config is the Secret key '<node>.conf', at most 253)"),
    ("apps host name 253 chars", extra_host(node_name(253), "apps"), None),
    ("apps host name 254 chars", extra_host(node_name(254), "apps"),
     f"{P}hosts.{short_name(node_name(254))}: 254 characters; a node name may have at most 253"),
    # Every apps host is checked, also after one without an address.
    ("apps host on the VIP after one without address",
     {"hosts": {**lab_value("hosts"), "app-1": {"role": "apps"},
                "app-2": {"role": "apps", "address": "192.0.2.10"}}},
     f"{P}hosts.app-2.address: 192.0.2.10 is the VIP itself"),
    ("loadBalancer build with a digest",
     lb(build=True, image="registry.example.com/edge/haproxy@sha256:" + "a" * 64),
     f"{P}loadBalancer.image: a digest cannot be a push target; with build: true give repository[:tag]"),
    ("equal priorities", {"hosts": {**lab_value("hosts"),
                                    "lb-1": {**lab_value("hosts")["lb-1"], "priority": 100},
                                    "lb-2": {**lab_value("hosts")["lb-2"], "priority": 100}}},
     f"{P}hosts.lb-2.priority: 100 is also lb-1's; priorities must be distinct so the cold-start election "
     "is not arbitrary"),
    ("requests equal to limits",
     service(resources={"cpu": "1", "cpuLimit": "1", "memory": "64Mi", "memoryLimit": "64Mi"}), None),
    ("cpu request above its limit", service(resources={"cpu": "2", "cpuLimit": "1"}),
     f"{P}services[0].resources.cpu: 2 is more than cpuLimit 1 (requests must not exceed limits)"),
    ("healthPath 1024 chars", service(healthPath="/" + "a" * 1023), None),
    ("healthPath 1025 chars", service(healthPath="/" + "a" * 1024),
     f"{P}services[0].healthPath: {show('/' + 'a' * 1024)} is not a URL path HAProxy and the kubelet "
     "both take"),
    # Exponent notation, as Kubernetes reads it: 1e3 is 1000.
    ("cpu 1e3 within limit 2e3", service(resources={"cpu": "1e3", "cpuLimit": "2e3"}), None),
    ("cpu 2e3 above limit 1500", service(resources={"cpu": "2e3", "cpuLimit": "1500"}),
     f"{P}services[0].resources.cpu: 2e3 is more than cpuLimit 1500 (requests must not exceed limits)"),
    # The whole message where it tells the fix.
    ("unicast no", vrrp(unicast="no"), f"{P}vrrp.unicast: 'no' is not true or false (write false)"),
    ("unicast yes", vrrp(unicast="yes"), f"{P}vrrp.unicast: 'yes' is not true or false (write true)"),
    ("healthPath without slash", service(healthPath="healthz"),
     f"{P}services[0].healthPath: 'healthz' is not a URL path HAProxy and the kubelet both take "
     "(/, then A-Z a-z 0-9 and . _ ~ ! & + , ; = : @ / ? -)"),
    # Addresses no host can have, each named.
    ("lb-1 on 0.0.0.0", host("lb-1", address="0.0.0.0"),
     f"{P}hosts.lb-1.address: 0.0.0.0 is the unspecified address, not a host's"),
    ("lb-1 on a reserved address", host("lb-1", address="240.0.0.1"),
     f"{P}hosts.lb-1.address: 240.0.0.1 is a reserved address, not a host's"),
    # A quoted boolean is a string, whatever its case.
    *[(f"unicast {word!r}", vrrp(unicast=word),
       f"{P}vrrp.unicast: {word!r} is a string, not true or false; remove the quotes")
      for word in ("false", "True")],
    # Increase() needs two scrapes inside the failover window.
    ("window=2 scrapes", {"monitoring": {"scrapeInterval": "15s", "failoverWindow": "30s"}}, None),
    ("window<2 scrapes", {"monitoring": {"scrapeInterval": "15s", "failoverWindow": "29s"}},
     f"{P}monitoring.failoverWindow: 29s is shorter than two scrapeIntervals (15s)"),
]  # fmt: skip

# vrrpAuthPass: keepalived reads `#` and `!` as comments, `"` as a quote,
# braces as blocks, a final `\` as a continuation and `$NAME`/`${NAME}` as a
# definition; blanks split a word; 1..8 characters. Neighbours stay allowed.
AUTH_BAD = {
    "hash": "ab#cd",
    "bang": "ab!cd",
    "double-quote": 'ab"cd',
    "open-brace": "ab{cd",
    "close-brace": "ab}cd",
    "final-backslash": "abcd\\",
    "dollar-letter": "ab$cd",
    "dollar-underscore": "ab$_cd",
    "dollar-brace": "ab${c}",
    "space": "ab cd",
    "tab": "ab\tcd",
    "del": "ab\x7fcd",
    "newline": "ab\ncd",
    "non-ascii": "abécd",
}
AUTH_OK = {
    "single-quote": "ab'cd",
    "dollar-digit": "ab$1d",
    "final-dollar": "abcd$",
    "inner-backslash": "ab\\cd",
    "ampersand": "ab&cd",
    "paren": "ab(cd",
    "tilde": "ab~cd",
    "upper-case": "abXcd",
    "1 char": "x",
    "8 chars": "abcdefgh",
}
CHARS_MSG = (
    f'{P}vrrpAuthPass: only printable ASCII without spaces, # ! " {{ or }}, not ending in \\, '
    "and no $ before a letter, _ or { (keepalived reads # and ! as comments, braces as blocks, "
    "a final \\ as a line continuation and $NAME as a variable)"
)
ROWS += [
    (f"vrrpAuthPass {name}", {"vrrpAuthPass": pw, **vrrp(**V2)}, CHARS_MSG) for name, pw in AUTH_BAD.items()
]
ROWS += [(f"vrrpAuthPass {name}", {"vrrpAuthPass": pw, **vrrp(**V2)}, None) for name, pw in AUTH_OK.items()]
ROWS += [
    ("vrrpAuthPass empty", {"vrrpAuthPass": "", **vrrp(**V2)},
     f"{P}vrrpAuthPass: 0 characters; keepalived allows 1..8 (longer ones are cut and fail `keepalived -t`)"),
    ("vrrpAuthPass 9 chars", {"vrrpAuthPass": "abcdefghi", **vrrp(**V2)},
     f"{P}vrrpAuthPass: 9 characters; keepalived allows 1..8 (longer ones are cut and fail `keepalived -t`)"),
    ("vrrpAuthPass with v3", {"vrrpAuthPass": "abc"},
     f"{P}vrrpAuthPass: VRRPv3 has no authentication; remove it or set {P}vrrp.version to 2"),
]  # fmt: skip


def parse(changes: dict[str, Any]) -> Settings:
    secret = "vrrpAuthPass" in changes
    return parse_settings(with_overrides(stack_raw("lab"), secret=secret, **changes))


@pytest.mark.parametrize(("changes", "expected"), [(c, e) for _, c, e in ROWS], ids=[n for n, _, _ in ROWS])
def test_bound(changes: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        parse(changes)
        return
    with pytest.raises(SettingsError) as err:
        parse(changes)
    (problem,) = err.value.problems  # exactly one message, and it is this one
    assert problem.startswith(expected), problem


def test_values_inside_the_bounds_reach_the_settings() -> None:
    s = parse({**check(interval=3600, timeout=3600, fall=255, rise=255), **vip(routerId=255)})
    assert (s.vrrp.check.interval, s.vrrp.check.timeout, s.vrrp.check.fall, s.vrrp.check.rise) == (
        3600, 3600, 255, 255,
    )  # fmt: skip
    assert s.vip.router_id == 255
    twenty = parse(lb_hosts(20))
    assert [twenty.priority(n) for n in twenty.lb_nodes] == list(range(200, 0, -10))


def test_check_defaults_are_the_documented_ones() -> None:
    """README: a 1 s poll with a 1 s timeout, down after 2 failures (one slow answer is busy), up after 2."""
    c = parse({}).vrrp.check
    assert (c.interval, c.timeout, c.fall, c.rise, c.watch) == (1, 1, 2, 2, True)
    v = parse({}).vrrp
    assert (v.version, v.advert_interval, v.unicast, v.garp_refresh, v.metrics_port) == (
        3,
        0.05,
        True,
        60,
        9165,
    )
    lb_ = parse({}).load_balancer
    assert (lb_.http_port, lb_.stats_port, lb_.max_conn) == (80, 8404, 4096)  # the lab stack's maxConn


# --- a bad stack under the mocks: nothing registered --------------------------------


def test_a_bad_stack_stops_the_program_before_any_resource(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monitors: list[RecordingMonitor] = []

    class Watched(RecordingMonitor):
        def __init__(self, mocks: Any) -> None:
            super().__init__(mocks)
            monitors.append(self)

    monkeypatch.setattr(halb.mockrun, "RecordingMonitor", Watched)
    raw = with_overrides(stack_raw("lab"), **vip(routerId=0), **check(fall=0))
    rancher = Rancher.with_nodes("lab", lab_value("hosts"))
    with pytest.raises(pulumi.RunError, match=r"^2 problem\(s\) in the stack configuration; see above$"):
        run_program(raw, "lab", rancher)
    (monitor,) = monitors
    assert [r.type for r in monitor.recorded] == ["pulumi:pulumi:Stack"]
    assert monitor.reads == []
    assert rancher.created == [] and rancher.token is None  # not even the provider was configured
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{P}vip.routerId: 0 is not in 1..255", f"{P}vrrp.check.fall: 0 is not in 1..255"]
    # The same stack, fixed, registers everything: the check above can fail.
    monitors.clear()
    run_program(stack_raw("lab"), "lab", Rancher.with_nodes("lab", lab_value("hosts")))
    assert len(monitors[0].recorded) > 20


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            RawConfig({**BASE.values, f"{P}services": "[" * 100_000 + "]" * 100_000}, BASE.secret_keys),
            f"{P}services: is nested too deeply",
        ),
        (
            RawConfig(BASE.values, BASE.secret_keys | {f"{P}cluster"}),
            f"{P}cluster: holds a secret, but this setting reaches the cluster in plain text; only ",
        ),
        (
            RawConfig(BASE.values, BASE.secret_keys | {"rancher2:apiUrl"}),
            "rancher2:apiUrl: holds a secret, but this setting reaches the cluster in plain text; only ",
        ),
    ],
    ids=["nested too deeply", "secret cluster", "secret apiUrl"],
)
def test_a_key_refused_before_validation_is_not_called_missing_too(raw: RawConfig, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    (problem,) = err.value.problems  # not also "<key>: missing (required)"
    assert problem.startswith(expected), problem


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "cluster",
            "cluster: no namespace (config keys are namespace:name); did you mean rancher-ha-lb:cluster?",
        ),
        ("apiUrl", "apiUrl: no namespace (config keys are namespace:name); did you mean rancher2:apiUrl?"),
        ("colour", "colour: no namespace (config keys are namespace:name); e.g. rancher-ha-lb:colour"),
        # Misspelt: the same letters and digits (any case, any punctuation), or close enough.
        (
            "r.a.n.c.h.e.r.H.A.l.b:colour",
            "r.a.n.c.h.e.r.H.A.l.b:colour: unknown namespace 'r.a.n.c.h.e.r.H.A.l.b'; "
            "did you mean rancher-ha-lb:colour?",
        ),
        (
            "rancher-ha-lbb:colour",
            "rancher-ha-lbb:colour: unknown namespace 'rancher-ha-lbb'; did you mean rancher-ha-lb:colour?",
        ),
    ],
)
def test_a_key_without_namespace_gets_the_one_it_belongs_to(key: str, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(RawConfig({**BASE.values, key: "x"}, BASE.secret_keys))
    assert err.value.problems == [expected]
