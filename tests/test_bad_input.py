"""Bad input, table-driven, grouped by class: wrong settings, hostile YAML, wrong CLI calls.

Every case: exit code 2, exactly the expected `error:` lines (each naming the
key path or flag and what is allowed), no traceback, nothing written.
Settings cases edit the lab stack in one place; YAML cases edit its text,
because what they test (tags, aliases, duplicate keys, bytes) does not
survive a round trip through a YAML dumper; CLI cases call the CLI as a user
would.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, plain_id, run_halb

from components.settings import Settings, parse_settings
from halb.cli import main
from halb.stackfile import load_stack_file

Edit = Callable[[dict[str, object]], None]
P = "rancher-ha-lb:"


def cfg(doc: dict[str, object]) -> dict[str, object]:
    config = doc["config"]
    assert isinstance(config, dict)
    return config


def setting(key: str, value: object) -> Edit:
    def edit(doc: dict[str, object]) -> None:
        cfg(doc)[key if ":" in key else P + key] = value

    return edit


def raw_key(key: str, value: object) -> Edit:
    """Set a config key exactly as written, namespace or not."""

    def edit(doc: dict[str, object]) -> None:
        cfg(doc)[key] = value

    return edit


def remove(key: str) -> Edit:
    def edit(doc: dict[str, object]) -> None:
        cfg(doc).pop(key if ":" in key else P + key)

    return edit


def nested(key: str, path: list[str | int], value: object) -> Edit:
    """Set one leaf below a top-level key (value None removes it)."""

    def edit(doc: dict[str, object]) -> None:
        node: object = cfg(doc)[P + key]
        for part in path[:-1]:
            node = node[part]  # type: ignore[index]
        if value is None:
            del node[path[-1]]  # type: ignore[attr-defined]
        else:
            node[path[-1]] = value  # type: ignore[index]

    return edit


def both(*edits: Edit) -> Edit:
    def edit(doc: dict[str, object]) -> None:
        for e in edits:
            e(doc)

    return edit


def vrrp(**values: object) -> Edit:
    return setting("vrrp", values)


def v2_auth(password: str) -> Edit:
    return both(vrrp(version=2, advertInterval=1), setting("vrrpAuthPass", password))


@dataclass(frozen=True)
class Case:
    name: str  # "class: example"
    edit: Edit
    expect: list[str]  # line i must contain expect[i]; exactly this many lines


def shown(text: str) -> str:
    """A value as messages show it: quoted, long ones cut at 40 characters."""
    return repr(text) if len(text) <= 40 else f"'{text[:40]}…' ({len(text)} characters)"


SVC = "services"


def dotted(length: int, ch: str) -> str:
    """A DNS subdomain of `length` characters: 63-character labels and a shorter last one."""
    labels, left = [], length
    while left > 64:
        labels.append(ch * 63)
        left -= 64
    return ".".join([*labels, ch * left])


LONG_LB, LONG_APPS = dotted(249, "n"), dotted(254, "a")
AUTH_RULE = f"{P}vrrpAuthPass: only printable ASCII without spaces"
CASES = [
    # --- types: what YAML or JSON gives must be the type the key takes --------------
    Case(
        "type: routerId word",
        nested("vip", ["routerId"], "one"),
        [f"{P}vip.routerId: 'one' is not a whole number"],
    ),
    Case(
        "type: hosts list",
        setting("hosts", ["lb-1", "lb-2"]),
        [f"{P}hosts: ['lb-1', 'lb-2'] is not a mapping of keys to values"],
    ),
    Case(
        "type: port float",
        nested(SVC, [0, "port"], 80.5),
        [f"{P}services[0].port: 80.5 is not a whole number"],
    ),
    Case(
        "type: port quoted",
        nested(SVC, [0, "port"], "8080"),
        [f"{P}services[0].port: '8080' is a string, not a whole number; remove the quotes"],
    ),
    Case(
        "type: port true",
        nested(SVC, [0, "port"], True),
        [f"{P}services[0].port: true is not a whole number"],
    ),
    Case(
        "type: routerId true",
        nested("vip", ["routerId"], True),
        [f"{P}vip.routerId: true is not a whole number"],
    ),
    Case(
        "type: advertInterval true",
        vrrp(advertInterval=True),
        [f"{P}vrrp.advertInterval: true is not a (finite) number"],
    ),
    Case(
        "type: advertInterval quoted",
        vrrp(advertInterval="0.05"),
        [f"{P}vrrp.advertInterval: '0.05' is a string, not a number; remove the quotes"],
    ),
    Case(
        "type: unicast list",
        setting("vrrp", {"unicast": [1]}),
        [f"{P}vrrp.unicast: [1] is not true or false"],
    ),
    Case(
        "type: unicast quoted",
        vrrp(unicast="true"),
        [f"{P}vrrp.unicast: 'true' is a string, not true or false; remove the quotes"],
    ),
    Case(
        "type: unicast yes",
        vrrp(unicast="yes"),
        [f"{P}vrrp.unicast: 'yes' is not true or false (write true)"],
    ),
    Case(
        "type: check.watch 1",
        vrrp(check={"watch": 1}),
        [f"{P}vrrp.check.watch: 1 is not true or false"],
    ),
    Case(
        "type: name true",
        nested(SVC, [0, "name"], True),
        [f"{P}services[0].name: true is a boolean, not a string; quote it"],
    ),
    Case(
        "type: env number",
        nested(SVC, [0, "env"], {"PORT": 8080}),
        [f"{P}services[0].env.PORT: 8080 is a number, not a string; quote it"],
    ),
    Case(
        "type: cluster mapping",
        setting("cluster", {"name": "lab"}),
        [f"{P}cluster: {{'name': 'lab'}} is not a string"],
    ),
    Case(
        "type: insecure yes",
        setting("rancher2:insecure", "yes"),
        ["rancher2:insecure: 'yes' is not true or false (write true)"],
    ),
    Case(
        "type: 400-digit routerId",
        nested("vip", ["routerId"], 10**400),
        [f"{P}vip.routerId: a 401-digit number; numbers must fit in 64 bits (quote it if it is text)"],
    ),
    # --- missing and unknown keys ---------------------------------------------------
    Case("missing: namespace", remove("namespace"), [f"{P}namespace: missing (required)"]),
    Case("missing: apiUrl", remove("rancher2:apiUrl"), ["rancher2:apiUrl: missing (required)"]),
    Case(
        "missing: service port",
        nested(SVC, [0, "port"], None),
        [f"{P}services[0].port: missing (required)"],
    ),
    Case(
        "unknown: top", setting("colour", "blue"), [f"{P}colour: unknown key; expected one of: bgp, cluster,"]
    ),
    Case(
        "unknown: nested",
        nested("vip", ["iface"], "eth1"),
        [f"{P}vip.iface: unknown key; expected one of: address, interface, routerId"],
    ),
    Case(
        "unknown: service",
        nested(SVC, [1, "replica"], 3),
        [f"{P}services[1].replica: unknown key; expected one of:"],
    ),
    Case(
        "unknown: misspelled namespace",
        setting("rancher_ha_lb:cluster", "lab"),
        ["rancher_ha_lb:cluster: unknown namespace 'rancher_ha_lb'; did you mean rancher-ha-lb:cluster?"],
    ),
    Case(
        "unknown: misspelled rancher2",
        setting("rancher:apiUrl", "https://x.invalid"),
        ["rancher:apiUrl: unknown namespace 'rancher'; did you mean rancher2:apiUrl?"],
    ),
    Case(
        "unknown: no namespace",
        raw_key("cluster", "lab"),
        ["cluster: no namespace (config keys are namespace:name); did you mean rancher-ha-lb:cluster?"],
    ),
    Case(
        "unknown: empty namespace",
        raw_key(":cluster", "lab"),
        [":cluster: not a config key (namespace:name)"],
    ),
    Case("unknown: empty key", raw_key("", "lab"), ["'': not a config key (namespace:name)"]),
    # --- addresses ----------------------------------------------------------------------
    Case(
        "address: bad CIDR",
        nested("vip", ["address"], "192.0.2.10/33"),
        [f"{P}vip.address: '192.0.2.10/33' is not an IPv4 address with prefix"],
    ),
    Case(
        "address: VIP without prefix",
        nested("vip", ["address"], "192.0.2.10"),
        [f"{P}vip.address: '192.0.2.10' has no prefix length; write a.b.c.d/n (e.g. 192.0.2.10/24)"],
    ),
    *[
        Case(
            f"address: VIP prefix /{n}",
            nested("vip", ["address"], f"192.0.2.10/{n}"),
            [f"{P}vip.address: prefix /{n} is not allowed (/8../29: a subnet the VIP shares with"],
        )
        for n in (0, 7, 30, 31, 32)
    ],
    Case(
        "address: VIP multicast",
        both(
            nested("vip", ["address"], "224.0.0.10/24"),
            nested("hosts", ["lb-1", "address"], "224.0.0.11"),
            nested("hosts", ["lb-2", "address"], "224.0.0.12"),
        ),
        [
            f"{P}hosts.lb-1.address: 224.0.0.11 is a multicast address, not a host's",
            f"{P}hosts.lb-2.address: 224.0.0.12 is a multicast address, not a host's",
            f"{P}vip.address: 224.0.0.10 is a multicast address, not a host's",
        ],
    ),
    Case(
        "address: VIP loopback",
        both(
            nested("vip", ["address"], "127.0.0.10/24"),
            nested("hosts", ["lb-1", "address"], "127.0.0.11"),
            nested("hosts", ["lb-2", "address"], "127.0.0.12"),
        ),
        [
            f"{P}hosts.lb-1.address: 127.0.0.11 is a loopback address, not a host's",
            f"{P}hosts.lb-2.address: 127.0.0.12 is a loopback address, not a host's",
            f"{P}vip.address: 127.0.0.10 is a loopback address, not a host's",
        ],
    ),
    Case(
        "address: host address bad",
        nested("hosts", ["lb-1", "address"], "192.0.2.300"),
        [f"{P}hosts.lb-1.address: '192.0.2.300' is not an IPv4 address"],
    ),
    Case(
        "address: LB outside VIP subnet",
        nested("hosts", ["lb-2", "address"], "198.51.100.12"),
        [f"{P}hosts.lb-2.address: 198.51.100.12 is outside the VIP's subnet 192.0.2.0/24"],
    ),
    Case(
        "address: VIP is a host address",
        nested("vip", ["address"], "192.0.2.12/24"),
        [f"{P}hosts.lb-2.address: 192.0.2.12 is the VIP itself"],
    ),
    Case(
        "address: duplicate LB addresses",
        nested("hosts", ["lb-2", "address"], "192.0.2.11"),
        [f"{P}hosts.lb-2.address: 192.0.2.11 is also the address of lb-1"],
    ),
    Case(
        "address: apps host on an LB address",
        nested("hosts", ["app-1", "address"], "192.0.2.11"),
        [f"{P}hosts.app-1.address: 192.0.2.11 is also the address of lb-1"],
    ),
    Case(
        "address: two apps hosts on one address",
        nested("hosts", ["app-2", "address"], "192.0.2.21"),
        [f"{P}hosts.app-2.address: 192.0.2.21 is also the address of app-1"],
    ),
    # --- hosts ------------------------------------------------------------------------
    Case(
        "hosts: single LB host",
        nested("hosts", ["lb-2"], None),
        [f"{P}hosts: 1 load-balancer host(s); at least 2"],
    ),
    Case(
        "hosts: no apps host",
        both(nested("hosts", ["app-1"], None), nested("hosts", ["app-2"], None)),
        [f"{P}hosts: no 'apps' host"],
    ),
    Case(
        "hosts: role app",
        nested("hosts", ["app-1", "role"], "app"),
        [f"{P}hosts.app-1.role: 'app' is not a role; did you mean 'apps'?"],
    ),
    Case(
        "hosts: priority 255",
        nested("hosts", ["lb-1", "priority"], 255),
        [f"{P}hosts.lb-1.priority: 255 is not in 1..254"],
    ),
    # --- names: what Linux, Kubernetes and DNS accept -------------------------------------
    *[
        Case(
            f"name: host {name!r}",
            nested("hosts", [name], {"role": "apps"}),
            [f"{P}hosts.{name}: not a Kubernetes node name (lower-case DNS subdomain:"],
        )
        for name in ("a..b", "a.-b", "-a", "a-", "A1", "a_b", "a.b.")
    ],
    Case(
        "name: LB host too long for its Secret key",
        both(
            nested("hosts", ["lb-2"], None),
            nested("hosts", [LONG_LB], {"role": "load-balancer", "address": "192.0.2.12"}),
        ),
        [f"{P}hosts.{LONG_LB[:40]}…: 249 characters; a load-balancer host's name may have at most 248"],
    ),
    Case(
        "name: apps host too long",
        nested("hosts", [LONG_APPS], {"role": "apps"}),
        [f"{P}hosts.{LONG_APPS[:40]}…: 254 characters; a node name may have at most 253"],
    ),
    *[
        Case(
            f"name: interface {name!r}",
            nested("vip", ["interface"], name),
            [f"{P}vip.interface: '{name}' is not a usable interface name (Linux refuses '.', '..', 'all'"],
        )
        for name in (".", "..", "lo", "all", "default")
    ],
    *[
        Case(
            f"name: interface {name!r}",
            nested("vip", ["interface"], name),
            [f"{P}vip.interface: '{name}' is not a Linux interface name"],
        )
        for name in ("averyverylongname0", "eth0/1", "eth 0", "eth%d", "", "eth:0")
    ],
    Case(
        "name: service not DNS-1123",
        nested(SVC, [0, "name"], "Shop_1"),
        [f"{P}services[0].name: 'Shop_1' is not a DNS-1035 label"],
    ),
    Case(
        "name: service starting with a digit",
        nested(SVC, [0, "name"], "1shop"),
        [
            f"{P}services[0].name: '1shop' is not a DNS-1035 label (lower-case a-z, 0-9 and '-', starting with a letter"
        ],
    ),
    Case(
        "name: duplicate service names",
        nested(SVC, [1, "name"], "shop"),
        [f"{P}services[1].name: 'shop' is also services[0]'s name"],
    ),
    # A trailing newline: Python's `$` matches before it, the consumer does not.
    Case(
        "name: service name with newline",
        nested(SVC, [0, "name"], "shop\n"),
        [f"{P}services[0].name: 'shop\\n' is not a DNS-1035 label"],
    ),
    Case(
        "name: namespace with newline",
        setting("namespace", "web\n"),
        [f"{P}namespace: 'web\\n' is not a DNS-1123 label"],
    ),
    Case(
        "name: interface with newline",
        nested("vip", ["interface"], "eth0\n"),
        [f"{P}vip.interface: 'eth0\\n' is not a Linux interface name"],
    ),
    Case(
        "name: hostname with newline",
        nested(SVC, [0, "hostnames"], ["shop.lab.invalid\n"]),
        [f"{P}services[0].hostnames[0]: 'shop.lab.invalid\\n' is not a lower-case DNS host name"],
    ),
    Case(
        "name: host with newline",
        nested("hosts", ["app-3\n"], {"role": "apps"}),
        [f"{P}hosts.'app-3\\n': not a Kubernetes node name"],
    ),
    Case(
        "name: edgeNamespace is namespace",
        setting("edgeNamespace", "web"),
        [f"{P}edgeNamespace: 'web' is also the apps namespace; the edge tier needs its own (privileged) one"],
    ),
    Case(
        "name: default edgeNamespace too long",
        setting("namespace", "w" * 60),
        [
            f"{P}namespace: the default edgeNamespace '{'w' * 40}…' would have 65 characters (at most 63); "
            "set edgeNamespace or shorten namespace"
        ],
    ),
    *[
        Case(
            f"name: namespace {ns}",
            setting("namespace", ns),
            [
                f"{P}namespace: '{ns}' belongs to Kubernetes or Rancher (default, kube-*, cattle-*); choose another"
            ],
        )
        for ns in ("default", "kube-system", "cattle-system")
    ],
    Case(
        "name: bad hostname",
        nested(SVC, [0, "hostnames"], ["Shop.Example.com"]),
        [f"{P}services[0].hostnames[0]: 'Shop.Example.com' is not a lower-case DNS host name"],
    ),
    *[
        Case(
            f"name: hostname {h!r}",
            nested(SVC, [0, "hostnames"], [h]),
            [f"{P}services[0].hostnames[0]: '{h}' is not a lower-case DNS host name"],
        )
        for h in ("a.*.lab.invalid", "*", "**.lab.invalid", "shop.lab.invalid.", "a..b", "-a.b")
    ],
    Case(
        "name: clusterDomain wildcard",
        setting("clusterDomain", "*.cluster.local"),
        [f"{P}clusterDomain: '*.cluster.local' is not a lower-case DNS name"],
    ),
    Case(
        "name: second service without hostnames",
        nested(SVC, [1, "hostnames"], []),
        [
            f"{P}services[1].hostnames: empty; only the first HTTP service (the default backend) can do without"
        ],
    ),
    Case(
        "name: env variable name",
        nested(SVC, [0, "env"], {"A B": "x"}),
        [f"{P}services[0].env.A B: not an environment variable name"],
    ),
    Case(
        "name: env value NUL",
        nested(SVC, [0, "env"], {"A": "x\0y"}),
        [f"{P}services[0].env.A: contains a NUL character"],
    ),
    *[
        Case(
            f"name: {key} {value!r}",
            setting(key, value),
            [f"{P}{key}: {value!r} is not a one-line name (printable, at most 253 characters)"],
        )
        for key, value in (("project", "web\nx"), ("cluster", "lab\t"), ("project", " "))
    ],
    *[
        Case(
            f"name: healthPath {path!r}",
            nested(SVC, [0, "healthPath"], path),
            [f"{P}services[0].healthPath: {path!r} is not a URL path HAProxy and the kubelet both take"],
        )
        for path in ("/#x", '/"x', "/a'b", "/a\\b", "/a{b", "/\u00e9")
    ],
    Case(
        "name: registry server",
        setting("registry", {"server": "https://registry.example.com/x", "username": "ci"}),
        [f"{P}registry.server: 'https://registry.example.com/x' is not a registry host[:port]"],
    ),
    # --- images ---------------------------------------------------------------------
    Case("image: empty", nested(SVC, [0, "image"], ""), [f"{P}services[0].image: must not be empty"]),
    *[
        Case(
            f"image: {ref!r}",
            nested(SVC, [0, "image"], ref),
            [
                f"{P}services[0].image: {shown(ref)} is not an image reference ([registry/]repository[:tag][@digest]"
            ],
        )
        for ref in (
            "Shop:1",
            "shop:",
            "shop@sha256:abc",
            "ghcr.io/x/shop:1 2",
            " shop",
            "shop:" + "t" * 129,
            "//shop",
            "ghcr.io:x/shop",
        )
    ],
    Case(
        "image: loadBalancer",
        setting("loadBalancer", {"image": "haproxy::2.6"}),
        [f"{P}loadBalancer.image: 'haproxy::2.6' is not an image reference"],
    ),
    Case(
        "image: build target with digest",
        setting("keepalived", {"build": True, "image": "registry.example.com/k@sha256:" + "a" * 64}),
        [f"{P}keepalived.image: a digest cannot be a push target; with build: true give repository[:tag]"],
    ),
    # --- quantities ---------------------------------------------------------------------
    *[
        Case(
            f"quantity: {q!r}",
            nested(SVC, [0, "resources"], {"cpu": q}),
            [f"{P}services[0].resources.cpu: '{q}' is not a Kubernetes quantity (e.g. 100m, 0.5, 1"],
        )
        for q in ("lots", "", "1.2.3", "100 m", "1Ki ", "1e", "0x10", "1mi")
    ],
    Case(
        "quantity: negative",
        nested(SVC, [0, "resources"], {"cpu": "-1"}),
        [f"{P}services[0].resources.cpu: '-1' is negative"],
    ),
    Case(
        "quantity: memory in millibytes",
        nested(SVC, [0, "resources"], {"memory": "128m"}),
        [f"{P}services[0].resources.memory: '128m' is 0.128 bytes; did you mean 128Mi?"],
    ),
    Case(
        "quantity: memory request over limit",
        nested(SVC, [0, "resources"], {"memory": "512Mi", "memoryLimit": "256Mi"}),
        [
            f"{P}services[0].resources.memory: 512Mi is more than memoryLimit 256Mi (requests must not exceed limits)"
        ],
    ),
    Case(
        "quantity: cpu request over limit",
        setting("loadBalancer", {"resources": {"cpu": "2", "cpuLimit": "1500m"}}),
        [f"{P}loadBalancer.resources.cpu: 2 is more than cpuLimit 1500m (requests must not exceed limits)"],
    ),
    # --- keepalived and VRRP --------------------------------------------------------------
    Case("vrrp: routerId 0", nested("vip", ["routerId"], 0), [f"{P}vip.routerId: 0 is not in 1..255"]),
    Case("vrrp: routerId 256", nested("vip", ["routerId"], 256), [f"{P}vip.routerId: 256 is not in 1..255"]),
    Case(
        "vrrp: auth pass 9 chars",
        v2_auth("ninechars"),
        [f"{P}vrrpAuthPass: 9 characters; keepalived allows 1..8"],
    ),
    *[
        Case(f"vrrp: auth pass {pw!r}", v2_auth(pw), [AUTH_RULE])
        for pw in ("{a}", "a{b", "a}b", "a\\", "$_PWD", "${_HASH}", "a b", "a#b", 'a"b')
    ],
    Case(
        "vrrp: auth with VRRPv3",
        setting("vrrpAuthPass", "secret1"),
        [f"{P}vrrpAuthPass: VRRPv3 has no authentication"],
    ),
    Case(
        "vrrp: advert 0.005 v3",
        vrrp(advertInterval=0.005),
        [f"{P}vrrp.advertInterval: 0.005 is not allowed with VRRPv3 (0.01..40.95"],
    ),
    Case(
        "vrrp: advert 1.5 v2",
        vrrp(version=2, advertInterval=1.5),
        [f"{P}vrrp.advertInterval: 1.5 is not allowed with VRRPv2 (whole seconds"],
    ),
    Case("vrrp: version 4", vrrp(version=4), [f"{P}vrrp.version: 4 is not allowed"]),
    Case(
        "vrrp: check timeout > interval",
        vrrp(check={"interval": 1, "timeout": 2}),
        [f"{P}vrrp.check.timeout: 2 is longer than check.interval 1"],
    ),
    # --- other values -----------------------------------------------------------------------
    Case("value: empty services", setting("services", []), [f"{P}services: must not be empty"]),
    Case("value: port 0", nested(SVC, [0, "port"], 0), [f"{P}services[0].port: 0 is not in 1..65535"]),
    Case(
        "value: replicas 1",
        nested(SVC, [0, "replicas"], 1),
        [
            f"{P}services[0].replicas: 1 is not in 2..1000 (every service runs on 2+ hosts: with one replica, "
            "each restart or node drain is an outage)"
        ],
    ),
    Case(
        "value: every service wrong",
        both(nested(SVC, [0, "port"], 0), nested(SVC, [1, "port"], 0)),
        [f"{P}services[0].port: 0 is not in 1..65535", f"{P}services[1].port: 0 is not in 1..65535"],
    ),
    Case(
        "value: apiUrl not a URL",
        setting("rancher2:apiUrl", "rancher.example.com"),
        ["rancher2:apiUrl: 'rancher.example.com' does not match"],
    ),
    Case(
        "value: health path",
        nested(SVC, [0, "healthPath"], "healthz"),
        [f"{P}services[0].healthPath: 'healthz' is not a URL path HAProxy and the kubelet both take"],
    ),
    Case(
        "value: registry password alone",
        setting("registryPassword", "x"),
        [f"{P}registryPassword: set without {P}registry"],
    ),
    Case(
        "value: tokenKey with a blank",
        setting("rancher2:tokenKey", "token-ab cd:secret99"),
        ["rancher2:tokenKey: empty or holds a blank or control character (secret: the value is not shown)"],
    ),
    Case(
        "value: tokenKey empty",
        setting("rancher2:tokenKey", ""),
        ["rancher2:tokenKey: empty or holds a blank or control character (secret: the value is not shown)"],
    ),
    Case(
        "value: several at once",
        both(
            nested("vip", ["routerId"], 300),
            nested(SVC, [0, "port"], 0),
            nested("hosts", ["app-1", "role"], "app"),
        ),
        [f"{P}hosts.app-1.role", f"{P}vip.routerId", f"{P}services[0].port"],
    ),
]


def write_case(tmp: Path, edit: Edit) -> Path:
    doc = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())
    edit(doc)
    path = tmp / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def render_errors(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["render", "--stack", "bad", "--config-file", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def assert_exactly(lines: list[str], expect: list[str]) -> None:
    assert all(line.startswith("error: ") for line in lines), lines
    assert len(lines) == len(expect), lines
    for expected, line in zip(expect, lines, strict=True):
        assert expected in line, f"{expected!r} not in {line!r}"


@pytest.mark.parametrize("case", CASES, ids=[plain_id(c.name) for c in CASES])
def test_bad_setting(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(tmp_path, case.edit)
    out = tmp_path / "out"
    code, lines = render_errors(path, out, capsys)
    assert code == 2, lines
    assert_exactly(lines, case.expect)
    assert not out.exists()


def test_settings_messages_are_one_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    several = next(c for c in CASES if c.name == "value: several at once")
    code, lines = render_errors(write_case(tmp_path, several.edit), tmp_path / "o", capsys)
    assert code == 2 and len(lines) == 3


# --- hostile YAML: the stack file's text ---------------------------------------------------

LAB = (ROOT / "Pulumi.lab.yaml").read_text()
LAB_LINES = LAB.count("\n")
SHOP = "port: 8080, replicas: 2,"


def sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return edit


def add(lines: str) -> Callable[[str], str]:
    """Append top-level config keys (the lab file ends inside `config:`)."""
    return lambda text: text + lines


def shop(extra: str) -> Callable[[str], str]:
    """Add `extra` (flow-style keys) to the first service."""
    return sub(SHOP, f"{SHOP} {extra},")


BOMB = "".join(
    f"  kubernetes:l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else "  kubernetes:l0: &l0 [lol]\n"
    for i in range(10)
)


@dataclass(frozen=True)
class TextCase:
    name: str
    edit: Callable[[str], str]
    expect: list[str]


TEXT_CASES = [
    # --- YAML types that JSON (and so the Pulumi engine) does not have ---------------------
    TextCase(
        "yaml type: !!binary",
        shop("env: {BLOB: !!binary aGVsbG8=}"),
        [
            f"{P}services[0].env.BLOB: !!binary is not allowed in a stack file (strings, numbers, true/false, null"
        ],
    ),
    TextCase(
        "yaml type: !!set",
        add("  kubernetes:x: !!set {a, b}\n"),
        ["kubernetes:x: !!set is not allowed in a stack file"],
    ),
    TextCase(
        "yaml type: !!timestamp",
        shop("env: {RELEASE: !!timestamp 2024-01-01}"),
        [f"{P}services[0].env.RELEASE: !!timestamp is not allowed in a stack file"],
    ),
    TextCase(
        "yaml type: !!omap",
        add("  kubernetes:x: !!omap [a: 1]\n"),
        ["kubernetes:x: !!omap is not allowed in a stack file"],
    ),
    TextCase(
        "yaml type: python object",
        add("  kubernetes:x: !!python/object/apply:os.system [true]\n"),
        ["kubernetes:x: !!python/object/apply:os.system is not allowed in a stack file"],
    ),
    TextCase(
        "yaml type: local tag",
        shop("env: {A: !secret x}"),
        [f"{P}services[0].env.A: !secret is not allowed in a stack file"],
    ),
    TextCase(
        "yaml type: non-string key",
        sub("    app-2:", "    2:"),
        [f"{P}hosts: key 2 is not a string; quote it"],
    ),
    TextCase(
        "yaml type: 5000-digit number",
        sub("port: 8080", "port: " + "9" * 5000),
        [f"{P}services[0].port: a 5000-digit number; numbers must fit in 64 bits (quote it if it is text)"],
    ),
    TextCase(
        "yaml type: 5000-digit number in env",
        shop("env: {X: " + "9" * 5000 + "}"),
        [f"{P}services[0].env.X: a 5000-digit number; numbers must fit in 64 bits (quote it if it is text)"],
    ),
    TextCase(
        "yaml type: leading zero",
        sub("routerId: 51", "routerId: 051"),
        [
            f"{P}vip.routerId: 051 has a leading zero (YAML 1.1 reads it as octal, YAML 1.2 as decimal); "
            "drop the zero or quote it"
        ],
    ),
    TextCase(
        "yaml type: sexagesimal",
        sub("port: 8080", "port: 1_0:00"),
        [f"{P}services[0].port: '1_0:00' is not a whole number"],
    ),
    TextCase(
        "yaml type: yes",
        add("  rancher-ha-lb:vrrp: {unicast: yes}\n"),
        [f"{P}vrrp.unicast: 'yes' is not true or false (write true)"],
    ),
    TextCase(
        "yaml type: .inf",
        add("  rancher-ha-lb:vrrp: {advertInterval: .inf}\n"),
        [f"{P}vrrp.advertInterval: inf is not a (finite) number"],
    ),
    # --- duplicate keys: YAML says they are an error; the engine refuses them ----------------
    TextCase(
        "duplicate: top-level key",
        add("  rancher-ha-lb:cluster: other\n"),
        # The added line is the file's last, after the lab stack's own lines.
        [f"{P}cluster: duplicate key (line {LAB_LINES + 1}, first on line 6)"],
    ),
    TextCase(
        "duplicate: host",
        sub("    app-2: {role: apps, address: 192.0.2.22}", "    app-1: {role: apps, address: 192.0.2.22}"),
        [f"{P}hosts.app-1: duplicate key (line 12, first on line 11)"],
    ),
    TextCase(
        "duplicate: flow mapping",
        sub("routerId: 51}", "routerId: 51, routerId: 52}"),
        [f"{P}vip.routerId: duplicate key (line 13, first on line 13)"],
    ),
    # --- structure -------------------------------------------------------------------------
    TextCase(
        "structure: two documents",
        add("---\nconfig: {}\n"),
        [
            f"not valid YAML (line {LAB_LINES + 1}, column 1: expected a single document in the stream; but found another document)"
        ],
    ),
    TextCase(
        "structure: config list", lambda _: "config: [a]\n", ["expected a mapping with a `config:` mapping"]
    ),
    TextCase(
        "structure: NUL",
        add("  kubernetes:x: a\0b\n"),
        [f"not valid YAML (line {LAB_LINES + 1}, column 18: unacceptable character #x0000"],
    ),
    TextCase(
        "structure: unclosed",
        add("  kubernetes:x: [\n"),
        [
            f"not valid YAML (line {LAB_LINES + 2}, column 1: while parsing a flow node; expected the node content, but found '<stream end>')"
        ],
    ),
    TextCase(
        "structure: key with two colons",
        add("  rancher-ha-lb:vip:address: 192.0.2.10/24\n"),
        ["rancher-ha-lb:vip:address: not a config key (namespace:name)"],
    ),
    # --- secrets only where they stay secret -----------------------------------------------
    TextCase(
        "secret: image",
        sub('image: "ghcr.io/example/shop:1.4.2"', "image: {secure: v1:AAAA}"),
        [f"{P}services[0].image: a secure value here would reach the cluster in plain text; only"],
    ),
    TextCase(
        "secret: host address",
        sub(
            "lb-1: {role: load-balancer, address: 192.0.2.11}",
            "lb-1: {role: load-balancer, address: {secure: v1:AA}}",
        ),
        [f"{P}hosts.lb-1.address: a secure value here would reach the cluster in plain text; only"],
    ),
    TextCase(
        "secret: cluster",
        sub("rancher-ha-lb:cluster: lab", "rancher-ha-lb:cluster: {secure: v1:AA}"),
        [f"{P}cluster: a secure value here would reach the cluster in plain text; only"],
    ),
    # --- size and expansion: refused at once ---------------------------------------------------
    TextCase(
        "size: alias bomb",
        add(BOMB + "  rancher-ha-lb:project: x\n"),
        [
            "kubernetes:l9: YAML aliases expand it to more than 10000 values (a stack file may hold at most 10000)"
        ],
    ),
    TextCase(
        "size: alias bomb in env",
        shop(
            "env: {A: &a [x, x, x, x, x, x, x, x, x, x], B: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a],"
            " C: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], D: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c],"
            " E: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]}"
        ),
        [f"{P}services: YAML aliases expand it to more than 10000 values"],
    ),
    TextCase(
        "size: too many values",
        add("  kubernetes:x: [" + ", ".join(["1"] * 10_001) + "]\n"),
        [f"line {LAB_LINES + 1}: more than 10000 values (a stack file may hold at most 10000)"],
    ),
    TextCase(
        "size: alias chain too deep",
        add(
            "  kubernetes:a0: &a0 [x]\n"
            + "".join(f"  kubernetes:a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 40))
        ),
        ["kubernetes:a39: YAML aliases nest it more than 32 levels deep"],
    ),
    TextCase(
        "size: recursive alias",
        add("  kubernetes:x: &a [*a]\n"),
        ["kubernetes:x: a YAML alias inside its own anchor (a cycle)"],
    ),
    TextCase(
        "size: deep nesting",
        add("  kubernetes:x: " + "[" * 5000 + "]" * 5000 + "\n"),
        [f"line {LAB_LINES + 1}: nested more than 32 levels deep"],
    ),
    TextCase(
        "size: too large",
        add("#" + "x" * 300_000 + "\n"),
        ["larger than 262144 bytes; a stack file may have at most 256 KiB"],
    ),
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=[plain_id(c.name) for c in TEXT_CASES])
def test_hostile_yaml(case: TextCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(case.edit(LAB))
    out = tmp_path / "out"
    start = time.process_time()  # CPU time: other load on the machine does not count
    code, lines = render_errors(path, out, capsys)
    assert time.process_time() - start < 1.0
    assert code == 2, lines
    assert_exactly(lines, case.expect)
    assert not out.exists()


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_bytes(LAB.replace("cluster: lab", "cluster: l\xe4b").encode("latin-1"))
    code, lines = render_errors(path, tmp_path / "o", capsys)
    assert code == 2
    offset = LAB.index("cluster: lab") + len("cluster: l")
    assert lines == [f"error: {path}: not UTF-8 text (byte 0xe4 at offset {offset})"]


@pytest.mark.parametrize("kind", ["char device", "fifo", "directory"])
def test_not_a_regular_file_is_refused_at_once(kind: str, tmp_path: Path) -> None:
    if kind == "char device":
        path, what = Path("/dev/zero"), "a character device"
    elif kind == "fifo":
        path, what = tmp_path / "fifo", "a FIFO"
        os.mkfifo(path)
    else:
        path, what = tmp_path, "a directory"
    start = time.monotonic()
    result = run_halb(
        "render", "--stack", "x", "--config-file", str(path), "--out", str(tmp_path / "o"), timeout=20
    )
    assert time.monotonic() - start < 10
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {path}: not a regular file ({what})\n"
    assert stat.S_ISFIFO(path.stat().st_mode) == (kind == "fifo")


# --- values YAML 1.1 would have read differently: the engine's reading, exit 0 ------------------

MERGE = sub(
    "  rancher-ha-lb:services:\n", "  kubernetes:base: &base {replicas: 3}\n  rancher-ha-lb:services:\n"
)
Check = Callable[[Settings], bool]
GOOD_TEXT: list[tuple[str, Callable[[str], str], Check]] = [
    (
        "date in env stays text",
        shop("env: {RELEASE: 2024-01-01}"),
        lambda s: s.services[0].env == {"RELEASE": "2024-01-01"},
    ),
    (
        "date under a foreign key",
        add("  kubernetes:when: {d: 2024-01-01 10:00:00}\n"),
        lambda s: s.cluster == "lab",
    ),
    ("service named no", sub("name: shop", "name: no"), lambda s: s.services[0].name == "no"),
    ("number-like cluster", sub("cluster: lab", "cluster: 2024"), lambda s: s.cluster == "2024"),
    ("yes stays text", sub("cluster: lab", "cluster: yes"), lambda s: s.cluster == "yes"),
    (
        "sexagesimal-like env",
        shop("env: {AT: 12:30, R: 1_0:00}"),
        lambda s: s.services[0].env == {"AT": "12:30", "R": "1_0:00"},
    ),
    (
        "other providers' keys",
        add("  kubernetes:context: lab\n  docker:host: unix:///x\n  pulumi:tags: {a: b}\n"),
        lambda s: s.cluster == "lab",
    ),
    ("byte order mark", lambda t: "\ufeff" + t, lambda s: s.cluster == "lab"),
    (
        "merge key",
        lambda t: sub(SHOP, "port: 8080, <<: *base,")(MERGE(t)),
        lambda s: s.services[0].replicas == 3,
    ),
    (
        "old-style config key",
        sub("rancher-ha-lb:cluster: lab", "rancher-ha-lb:config:cluster: lab"),
        lambda s: s.cluster == "lab",
    ),
]


@pytest.mark.parametrize(
    "edit,check", [(e, c) for _, e, c in GOOD_TEXT], ids=[plain_id(n) for n, _, _ in GOOD_TEXT]
)
def test_yaml_read_as_the_engine_reads_it(edit: Callable[[str], str], check: Check, tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.good.yaml"
    path.write_text(edit(LAB))
    assert check(parse_settings(load_stack_file(path)))


# --- wrong CLI calls ------------------------------------------------------------------------

CLI_CASES: list[tuple[str, list[str], str]] = [
    (
        "unknown stack",
        ["render", "--stack", "nope", "--out", "{tmp}/o"],
        "--stack nope: unknown stack (have: dev, lab, lab-bgp, prod)",
    ),
    (
        "unreadable config",
        ["render", "--stack", "x", "--config-file", "{tmp}/missing.yaml", "--out", "{tmp}/o"],
        "no such stack file",
    ),
    (
        "config is a directory",
        ["render", "--stack", "x", "--config-file", "{tmp}", "--out", "{tmp}/o"],
        "not a regular file (a directory)",
    ),
    (
        "out not writable",
        ["render", "--stack", "lab", "--out", "/proc/sys/halb-out"],
        "--out /proc/sys/halb-out: /proc/sys is not writable",
    ),
    ("out under a file", ["render", "--stack", "lab", "--out", "{tmp}/file/o"], "is not a directory"),
    ("out empty", ["render", "--stack", "lab", "--out", ""], "--out: empty path; name a directory"),
    ("out dangling symlink", ["render", "--stack", "lab", "--out", "{tmp}/dangling"], "is a symlink to"),
    (
        "out not empty",
        ["render", "--stack", "lab", "--out", "{tmp}"],
        "is not empty and holds no previous render",
    ),
    (
        "stack name",
        ["render", "--stack", "a\nb", "--config-file", "{tmp}/file", "--out", "{tmp}/o"],
        "--stack 'a\\nb': not a stack name (1-100 of A-Z a-z 0-9 _ . -)",
    ),
    (
        "config path with a newline",
        ["render", "--stack", "x", "--config-file", "{tmp}/a\nb.yaml", "--out", "{tmp}/o"],
        "a\\nb.yaml: no such stack file",
    ),
    ("out path with a newline", ["render", "--stack", "lab", "--out", "{tmp}/file/a\nb"], "a\\nb: "),
    ("missing --out", ["render", "--stack", "lab"], "the following arguments are required: --out"),
    ("lab request count 0", ["lab", "request", "--count", "0"], "0 is not in 1..1000"),
    ("lab fault kind", ["lab", "fault", "meteor"], "invalid choice: 'meteor'"),
    ("lab up non-TEST-NET", ["lab", "up", "--stack", "prod"], "is outside the lab's TEST-NET ranges"),
    ("bench runs 0", ["bench", "failover", "--runs", "0"], "0 is not in 1..50"),
    ("bench faults", ["bench", "failover", "--faults", "meteor"], "meteor not allowed (from: host-crash"),
    ("bench json dir", ["bench", "failover", "--json", "/proc/sys/x/b.json"], "--json /proc/sys/x/b.json"),
    ("no command", [], "the following arguments are required: command"),
]


@pytest.mark.parametrize(
    "argv,expected", [(a, e) for _, a, e in CLI_CASES], ids=[plain_id(n) for n, _, _ in CLI_CASES]
)
def test_bad_cli_call(argv: list[str], expected: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = run_halb(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith(("error: ", "usage: ", "  ", "halb")) for line in result.stderr.splitlines())
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file"]
    assert (tmp_path / "file").read_text() == "x"


def test_traceback_free_for_a_settings_case(tmp_path: Path) -> None:
    path = write_case(tmp_path, CASES[0].edit)
    result = run_halb("render", "--stack", "bad", "--config-file", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: rancher-ha-lb:vip.routerId")
