"""Bad input, table-driven: wrong stack settings and wrong CLI calls.

Every case: exit code 2, `error:` lines naming the key path (or flag) and
what is allowed, no traceback, nothing written. Settings cases edit the lab
stack file in one place; CLI cases call the CLI as a user would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_halb

from halb.cli import main

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


@dataclass(frozen=True)
class Case:
    name: str
    edit: Edit
    expect: list[str]  # each must appear in one of the error lines, in order of lines


SVC = "services"
CASES = [
    Case(
        "wrong type: routerId",
        nested("vip", ["routerId"], "one"),
        [f"{P}vip.routerId: 'one' is not a whole number"],
    ),
    Case(
        "wrong type: hosts list",
        setting("hosts", ["lb-1", "lb-2"]),
        [f"{P}hosts: ['lb-1', 'lb-2'] is not a mapping of keys to values"],
    ),
    Case(
        "wrong type: port float",
        nested(SVC, [0, "port"], 80.5),
        [f"{P}services[0].port: 80.5 is not a whole number"],
    ),
    Case(
        "wrong type: unicast",
        setting("vrrp", {"unicast": [1]}),
        [f"{P}vrrp.unicast: [1] is not true or false"],
    ),
    Case("missing key: namespace", remove("namespace"), [f"{P}namespace: missing (required)"]),
    Case("missing key: apiUrl", remove("rancher2:apiUrl"), ["rancher2:apiUrl: missing (required)"]),
    Case(
        "missing key: service port",
        nested(SVC, [0, "port"], None),
        [f"{P}services[0].port: missing (required)"],
    ),
    Case(
        "unknown key: top", setting("colour", "blue"), [f"{P}colour: unknown key; expected one of: cluster,"]
    ),
    Case(
        "unknown key: nested",
        nested("vip", ["iface"], "eth1"),
        [f"{P}vip.iface: unknown key; expected one of: address, interface, routerId"],
    ),
    Case(
        "unknown key: service",
        nested(SVC, [1, "replica"], 3),
        [f"{P}services[1].replica: unknown key; expected one of:"],
    ),
    Case(
        "bad CIDR",
        nested("vip", ["address"], "192.0.2.10/33"),
        [f"{P}vip.address: '192.0.2.10/33' is not an IPv4 address with prefix"],
    ),
    Case(
        "bad address",
        nested("hosts", ["lb-1", "address"], "192.0.2.300"),
        [f"{P}hosts.lb-1.address: '192.0.2.300' is not an IPv4 address"],
    ),
    Case(
        "LB outside VIP subnet",
        nested("hosts", ["lb-2", "address"], "198.51.100.12"),
        [f"{P}hosts.lb-2.address: 198.51.100.12 is outside the VIP's subnet 192.0.2.0/24"],
    ),
    Case(
        "VIP is a host address",
        nested("vip", ["address"], "192.0.2.12/24"),
        [f"{P}hosts.lb-2.address: 192.0.2.12 is the VIP itself"],
    ),
    Case(
        "duplicate addresses",
        nested("hosts", ["lb-2", "address"], "192.0.2.11"),
        [f"{P}hosts.lb-2.address: 192.0.2.11 is also the address of lb-1"],
    ),
    Case(
        "single LB host", nested("hosts", ["lb-2"], None), [f"{P}hosts: 1 load-balancer host(s); at least 2"]
    ),
    Case(
        "no apps host",
        both(nested("hosts", ["app-1"], None), nested("hosts", ["app-2"], None)),
        [f"{P}hosts: no 'apps' host"],
    ),
    Case(
        "role app",
        nested("hosts", ["app-1", "role"], "app"),
        [f"{P}hosts.app-1.role: 'app' is not a role; did you mean 'apps'?"],
    ),
    Case(
        "duplicate service names",
        nested(SVC, [1, "name"], "shop"),
        [f"{P}services[1].name: 'shop' is also services[0]'s name"],
    ),
    Case(
        "non-DNS service name",
        nested(SVC, [0, "name"], "Shop_1"),
        [f"{P}services[0].name: 'Shop_1' is not a DNS-1123 label"],
    ),
    Case("routerId 0", nested("vip", ["routerId"], 0), [f"{P}vip.routerId: 0 is not in 1..255"]),
    Case("routerId 256", nested("vip", ["routerId"], 256), [f"{P}vip.routerId: 256 is not in 1..255"]),
    Case(
        "auth pass 9 chars",
        both(vrrp(version=2, advertInterval=1), setting("vrrpAuthPass", "ninechars")),
        [f"{P}vrrpAuthPass: 9 characters; keepalived allows 1..8"],
    ),
    Case(
        "auth with VRRPv3",
        setting("vrrpAuthPass", "secret1"),
        [f"{P}vrrpAuthPass: VRRPv3 has no authentication"],
    ),
    Case(
        "advert 0.005 v3",
        vrrp(advertInterval=0.005),
        [f"{P}vrrp.advertInterval: 0.005 is not allowed with VRRPv3 (0.01..40.95"],
    ),
    Case(
        "advert 1.5 v2",
        vrrp(version=2, advertInterval=1.5),
        [f"{P}vrrp.advertInterval: 1.5 is not allowed with VRRPv2 (whole seconds"],
    ),
    Case("empty services", setting("services", []), [f"{P}services: must not be empty"]),
    Case("port 0", nested(SVC, [0, "port"], 0), [f"{P}services[0].port: 0 is not in 1..65535"]),
    Case("replicas 1", nested(SVC, [0, "replicas"], 1), [f"{P}services[0].replicas: 1 is not in 2..1000"]),
    Case(
        "bad hostname",
        nested(SVC, [0, "hostnames"], ["Shop.Example.com"]),
        [f"{P}services[0].hostnames[0]: 'Shop.Example.com' is not a lower-case DNS"],
    ),
    Case(
        "interface name",
        nested("vip", ["interface"], "averyverylongname0"),
        [f"{P}vip.interface: 'averyverylongname0' is not a Linux interface name"],
    ),
    Case("VRRP version 4", vrrp(version=4), [f"{P}vrrp.version: 4 is not allowed"]),
    Case(
        "check timeout > interval",
        vrrp(check={"interval": 1, "timeout": 2}),
        [f"{P}vrrp.check.timeout: 2 is longer than check.interval 1"],
    ),
    Case(
        "priority 255",
        nested("hosts", ["lb-1", "priority"], 255),
        [f"{P}hosts.lb-1.priority: 255 is not in 1..254"],
    ),
    Case(
        "apiUrl not a URL",
        setting("rancher2:apiUrl", "rancher.example.com"),
        ["rancher2:apiUrl: 'rancher.example.com' does not match"],
    ),
    Case(
        "health path",
        nested(SVC, [0, "healthPath"], "healthz"),
        [f"{P}services[0].healthPath: 'healthz' does not match"],
    ),
    Case(
        "registry password alone",
        setting("registryPassword", "x"),
        [f"{P}registryPassword: set without {P}registry"],
    ),
    Case(
        "several at once",
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


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_setting(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(tmp_path, case.edit)
    out = tmp_path / "out"
    code = main(["render", "--stack", "bad", "--config-file", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert all(line.startswith("error: ") for line in lines), err
    for expected, line in zip(case.expect, lines, strict=False):
        assert expected in line, f"{expected!r} not in {line!r}"
    assert len(lines) >= len(case.expect)
    assert not out.exists()


def test_settings_messages_are_one_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    several = next(c for c in CASES if c.name == "several at once")
    main(
        [
            "render",
            "--stack",
            "bad",
            "--config-file",
            str(write_case(tmp_path, several.edit)),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


CLI_CASES: list[tuple[str, list[str], str]] = [
    (
        "unknown stack",
        ["render", "--stack", "nope", "--out", "{tmp}/o"],
        "--stack nope: unknown stack (have: dev, lab, prod)",
    ),
    (
        "unreadable config",
        ["render", "--stack", "x", "--config-file", "{tmp}/missing.yaml", "--out", "{tmp}/o"],
        "no such stack file",
    ),
    (
        "config is a directory",
        ["render", "--stack", "x", "--config-file", "{tmp}", "--out", "{tmp}/o"],
        "cannot read it",
    ),
    (
        "out not writable",
        ["render", "--stack", "lab", "--out", "/proc/sys/halb-out"],
        "--out /proc/sys/halb-out: /proc/sys is not writable",
    ),
    ("out under a file", ["render", "--stack", "lab", "--out", "{tmp}/file/o"], "is not a directory"),
    ("missing --out", ["render", "--stack", "lab"], "the following arguments are required: --out"),
    ("lab request count 0", ["lab", "request", "--count", "0"], "0 is not in 1..1000"),
    ("lab fault kind", ["lab", "fault", "meteor"], "invalid choice: 'meteor'"),
    ("lab up non-TEST-NET", ["lab", "up", "--stack", "prod"], "is outside the lab's TEST-NET ranges"),
    ("bench runs 0", ["bench", "failover", "--runs", "0"], "0 is not in 1..50"),
    ("bench faults", ["bench", "failover", "--faults", "meteor"], "meteor not allowed (from: host-crash"),
    ("bench json dir", ["bench", "failover", "--json", "/proc/sys/x/b.json"], "--json /proc/sys/x/b.json"),
    ("no command", [], "the following arguments are required: command"),
]


@pytest.mark.parametrize("argv,expected", [(a, e) for _, a, e in CLI_CASES], ids=[n for n, _, _ in CLI_CASES])
def test_bad_cli_call(argv: list[str], expected: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = run_halb(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_traceback_free_for_a_settings_case(tmp_path: Path) -> None:
    path = write_case(tmp_path, CASES[0].edit)
    result = run_halb("render", "--stack", "bad", "--config-file", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: rancher-ha-lb:vip.routerId")
