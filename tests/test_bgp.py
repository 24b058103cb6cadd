"""The `bgp` stack (issue 23): its settings refused where FRR would refuse them,
its passwords kept secret, and frr.conf as FRR's own parser reads it (`vtysh -C`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import frr_check, run_halb, stack_raw, with_overrides

from components.frr_conf import IN_MAP, OUT_MAP, render_frr_conf
from components.settings import Settings, SettingsError, parse_settings
from halb.stackfile import StackFileError, load_stack_file

PEER = {"address": "192.0.2.1", "asn": 65000}
BGP: dict[str, Any] = {"asn": 65001, "peers": [PEER]}
VIP = {"address": "203.0.113.10/32", "interface": "eth0", "routerId": 51}
PUNCTUATION = "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"  # every printable non-alphanumeric but '"'


def raw(secret: bool = False, **changes: Any) -> Any:
    changes.setdefault("bgp", BGP)
    changes.setdefault("vip", VIP)
    return with_overrides(stack_raw("lab"), secret=secret, **changes)


def settings(secret: bool = False, **changes: Any) -> Settings:
    return parse_settings(raw(secret, **changes))


def problems(secret: bool = False, **changes: Any) -> list[str]:
    with pytest.raises(SettingsError) as err:
        parse_settings(raw(secret, **changes))
    return err.value.problems


def one(secret: bool = False, **changes: Any) -> str:
    found = problems(secret, **changes)
    assert len(found) == 1, found
    return found[0]


def bgp(**changes: Any) -> dict[str, Any]:
    return {**BGP, **changes}


def test_defaults_are_frrs_own() -> None:
    s = settings()
    assert s.bgp is not None
    assert (s.bgp.asn, s.bgp.bfd.interval, s.bgp.bfd.multiplier, s.bgp.communities) == (65001, 300, 3, ())
    assert s.bgp.bfd.detection_ms == 900
    assert [str(p.address) for p in s.bgp.peers] == ["192.0.2.1"]


def test_a_vrrp_stack_has_no_bgp() -> None:
    assert parse_settings(stack_raw("lab")).bgp is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"asn": 0}, r"^rancher-ha-lb:bgp\.asn: 0 is not an AS number \(1\.\.4294967295; bgpd refuses 0\)$"),
        ({"asn": 4294967296}, r"^rancher-ha-lb:bgp\.asn: 4294967296 is not an AS number"),
        ({"asn": 23456}, r"^rancher-ha-lb:bgp\.asn: 23456 is AS_TRANS \(RFC 6793\)"),
        ({"asn": "65001"}, r"^rancher-ha-lb:bgp\.asn: '65001' is a string, not a whole number"),
        ({"peers": []}, r"^rancher-ha-lb:bgp\.peers: "),
        ({"peers": [{"address": "192.0.2.300", "asn": 65000}]},
         r"^rancher-ha-lb:bgp\.peers\[0\]\.address: '192\.0\.2\.300' is not an IPv4 address$"),
        ({"peers": [{"address": "192.0.2.1"}]}, r"^rancher-ha-lb:bgp\.peers\[0\]\.asn: "),
        ({"peers": [PEER, PEER]},
         r"^rancher-ha-lb:bgp\.peers\[1\]\.address: 192\.0\.2\.1 is listed twice; one entry per router$"),
        ({"peers": [{"address": "192.0.2.11", "asn": 65000}]},
         r"^rancher-ha-lb:bgp\.peers\[0\]\.address: 192\.0\.2\.11 is the address of host lb-1; "),
        ({"peers": [{"address": "203.0.113.10", "asn": 65000}]},
         r"^rancher-ha-lb:bgp\.peers\[0\]\.address: 203\.0\.113\.10 is the VIP itself"),
        ({"peers": [{**PEER, "holdTime": 3}]}, r"^rancher-ha-lb:bgp\.peers\[0\]\.holdTime: unknown"),
        ({"bfd": {"interval": 9}}, r"^rancher-ha-lb:bgp\.bfd\.interval: 9 is not in 10\.\.60000$"),
        ({"bfd": {"interval": 60001}}, r"^rancher-ha-lb:bgp\.bfd\.interval: 60001 is not in 10\.\.60000$"),
        ({"bfd": {"multiplier": 1}}, r"^rancher-ha-lb:bgp\.bfd\.multiplier: 1 is not in 2\.\.255$"),
        ({"bfd": {"multiplier": 256}}, r"^rancher-ha-lb:bgp\.bfd\.multiplier: 256 is not in 2\.\.255$"),
        ({"communities": ["65536:1"]},
         r"^rancher-ha-lb:bgp\.communities\[0\]: '65536:1' is not a community: AA:NN .*; "
         r"each half is 0\.\.65535$"),
        ({"communities": ["1:2:3"]}, r"large communities \(A:B:C\) are not supported$"),
        ({"communities": ["No-Export"]}, r"did you mean 'no-export'\?$"),
        ({"communities": ["65000:100", "65000:100"]},
         r"^rancher-ha-lb:bgp\.communities: 65000:100 listed more than once$"),
    ],
)  # fmt: skip
def test_bad_bgp_settings_get_one_message(change: dict[str, Any], expected: str) -> None:
    assert re.search(expected, one(bgp=bgp(**change)))


def test_the_vip_is_a_host_route() -> None:
    msg = one(vip={**VIP, "address": "203.0.113.10/24"})
    assert msg == (
        "rancher-ha-lb:vip.address: 203.0.113.10/24; with rancher-ha-lb:bgp the VIP is announced "
        "as a /32 on each host's lo, write 203.0.113.10/32"
    )


def test_a_vrrp_stack_refuses_a_host_route_vip() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(with_overrides(stack_raw("lab"), vip=VIP))
    assert err.value.problems == [
        "rancher-ha-lb:vip.address: prefix /32 is not allowed (/8../29: a subnet the VIP shares with the "
        "load-balancer hosts); a /32 VIP is routed: set rancher-ha-lb:bgp"
    ]


def test_hosts_need_not_share_the_vips_subnet() -> None:
    """A routed VIP: the hosts sit on their own subnet (VRRP would refuse this)."""
    s = settings()
    assert all(s.hosts[n].address not in s.vip.address.network for n in s.lb_nodes)


def test_vrrp_password_with_bgp_is_refused() -> None:
    msg = one(vrrpAuthPass="pass1234", vrrp={"version": 2, "advertInterval": 1})
    assert msg.startswith(
        "rancher-ha-lb:vrrpAuthPass: a VRRP password, but with rancher-ha-lb:bgp no VRRP runs"
    )


def test_a_plain_password_is_refused_with_the_command_that_fixes_it() -> None:
    msg = one(bgp=bgp(peers=[{**PEER, "password": "s3cret"}]))
    assert msg == (
        "rancher-ha-lb:bgp.peers[0].password: in plain text; set it as a secret: "
        "pulumi config set --secure --path 'bgp.peers[0].password' <password>"
    )


def test_a_secret_password_is_a_secret() -> None:
    peers = [{**PEER, "password": "s3cret"}, {"address": "192.0.2.2", "asn": 65000}]
    s = settings(secret=True, bgp=bgp(peers=peers))
    assert s.bgp is not None
    assert "s3cret" not in repr(s.bgp) and "s3cret" not in str(s.bgp.model_dump())
    assert s.bgp.passwords == {"192.0.2.1": "s3cret"}


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("a" * 81, "81 characters; a TCP MD5 key has 1..80"),
        ("two words", "only printable ASCII without spaces"),
        ("caf\u00e9", "only printable ASCII without spaces"),
        ("", "0 characters; a TCP MD5 key has 1..80"),
    ],
)
def test_bad_passwords(password: str, expected: str) -> None:
    msg = one(secret=True, bgp=bgp(peers=[{**PEER, "password": password}]))
    assert msg.startswith("rancher-ha-lb:bgp.peers[0].password: ") and expected in msg
    if password:
        assert password not in msg


def _stack(tmp: Path, bgp_yaml: str) -> Path:
    base = (Path(__file__).resolve().parent.parent / "Pulumi.lab.yaml").read_text()
    base = base.replace("address: 192.0.2.10/24", "address: 203.0.113.10/32")
    path = tmp / "Pulumi.bgp.yaml"
    path.write_text(base + "  rancher-ha-lb:bgp:\n" + bgp_yaml)
    return path


def test_a_stack_file_may_hold_a_secure_password_only(tmp_path: Path) -> None:
    peers = "    peers:\n      - address: 192.0.2.1\n        asn: 65000\n"
    peers += "        password: {secure: AAABAxyz}\n"
    ok = load_stack_file(_stack(tmp_path, "    asn: 65001\n" + peers))
    assert "rancher-ha-lb:bgp" in ok.secret_keys
    s = parse_settings(ok)
    assert s.bgp is not None and set(s.bgp.passwords) == {"192.0.2.1"}
    with pytest.raises(StackFileError) as err:
        load_stack_file(_stack(tmp_path, "    asn: {secure: AAABAxyz}\n    peers: []\n"))
    assert "rancher-ha-lb:bgp.asn: a secure value here would reach the cluster in plain text" in str(
        err.value
    )


def _conf(s: Settings, node: str = "lb-1") -> str:
    assert s.bgp is not None
    return render_frr_conf(s, node, s.bgp.passwords)


def _block(conf: str, header: str) -> list[str]:
    """The lines of a top-level block (`router bgp 65001`, `bfd`), as FRR nests them."""
    lines = conf.splitlines()
    start = lines.index(header)
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "exit")
    return [line.strip() for line in lines[start + 1 : end]]


def test_frr_conf_pinned() -> None:
    s = settings(
        secret=True,
        bgp=bgp(peers=[{**PEER, "password": "s3cret"}, {"address": "192.0.2.2", "asn": 65002}],
                bfd={"interval": 100, "multiplier": 3}, communities=["65000:100", "no-export"]),
    )  # fmt: skip
    conf = _conf(s, "lb-2")
    router = _block(conf, "router bgp 65001")
    assert router[:2] == ["bgp router-id 192.0.2.12", "no bgp default ipv4-unicast"]
    assert "neighbor 192.0.2.1 remote-as 65000" in router and "neighbor 192.0.2.2 remote-as 65002" in router
    assert "neighbor 192.0.2.1 password s3cret" in router
    assert not any(line.startswith("neighbor 192.0.2.2 password") for line in router)
    for peer in ("192.0.2.1", "192.0.2.2"):
        assert f"neighbor {peer} bfd profile halb" in router
        # As bgpd shows it: frr-reload.py would otherwise remove `bfd` (a session reset) on each change.
        assert f"neighbor {peer} bfd" in router
        assert f"neighbor {peer} update-source 192.0.2.12" in router
        assert f"neighbor {peer} route-map {IN_MAP} in" in router
        assert f"neighbor {peer} route-map {OUT_MAP} out" in router
    # Nothing announced at start: the announcer adds the VIP while HAProxy is healthy.
    assert not any(line.startswith("network") for line in router)
    assert _block(conf, "bfd") == ["profile halb", "transmit-interval 100", "receive-interval 100",
                                   "detect-multiplier 3", "exit"]  # fmt: skip
    assert _block(conf, f"route-map {OUT_MAP} permit 10") == [
        "match ip address prefix-list halb-vip", "set community 65000:100 no-export",
    ]  # fmt: skip
    assert "ip prefix-list halb-vip seq 5 permit 203.0.113.10/32" in conf.splitlines()
    assert _block(conf, f"route-map {IN_MAP} deny 10") == []


def test_frr_conf_needs_exactly_the_passwords() -> None:
    s = settings(secret=True, bgp=bgp(peers=[{**PEER, "password": "s3cret"}]))
    with pytest.raises(ValueError, match="exactly"):
        render_frr_conf(s, "lb-1", {})
    with pytest.raises(ValueError, match="bgp set"):
        render_frr_conf(parse_settings(stack_raw("lab")), "lb-1", {})


@pytest.mark.parametrize(
    "bgp_setting",
    [
        BGP,
        bgp(asn=4294967295, peers=[{**PEER, "asn": 1, "password": PUNCTUATION + "x" * 49}],
            bfd={"interval": 10, "multiplier": 255},
            communities=["0:0", "65535:65535", "no-export", "local-AS"]),
        bgp(peers=[PEER, {"address": "198.51.100.1", "asn": 65001}],
            bfd={"interval": 60000, "multiplier": 2}),
    ],
)  # fmt: skip
def test_frr_accepts_every_rendered_conf(bgp_setting: dict[str, Any], tmp_path: Path) -> None:
    s = settings(secret=True, bgp=bgp_setting)
    for node in s.lb_nodes:
        result = frr_check(_conf(s, node), tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_frr_check_can_fail(tmp_path: Path) -> None:
    conf = _conf(settings()).replace("detect-multiplier 3", "detect-multiplier 300")
    result = frr_check(conf, tmp_path)
    assert result.returncode != 0 and "detect-multiplier 300" in result.stdout + result.stderr


def test_halb_renders_a_bgp_stack_with_monitoring(tmp_path: Path) -> None:
    """The lab stack monitors: with bgp its PodMonitor scrapes halb-bgp (at vrrp.metricsPort,
    the exporter's place) and its rules are the BGP group."""
    stack = _stack(tmp_path, "    asn: 65001\n    peers:\n      - {address: 192.0.2.1, asn: 65000}\n")
    out = tmp_path / "out"
    r = run_halb("render", "--stack", "bgp", "--config-file", str(stack), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all((out / "manifests.yaml").read_text()) if d]
    monitors = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PodMonitor"}
    assert sorted(monitors) == ["halb-bgp", "halb-haproxy"]
    assert monitors["halb-bgp"]["spec"]["podMetricsEndpoints"][0]["port"] == "bgp-metrics"
    (rule,) = [d for d in docs if d.get("kind") == "PrometheusRule"]
    assert [g["name"] for g in rule["spec"]["groups"]] == ["rancher-ha-lb.bgp", "rancher-ha-lb.haproxy"]
