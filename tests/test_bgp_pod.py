"""A `bgp` stack's edge pod as rendered (issue 23): FRR in keepalived's place,
its flags as halb-bgp parses them, its capabilities exactly FRR's, its Secret.

The lab runs the same pod (tests/test_lab_bgp.py once the lab's router exists);
here the manifest and halb-bgp's pure parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, cached, lab_value, load_script, rendered, run_halb, stack_raw, with_overrides

from components.edge_firewall import render_edge_nft
from components.settings import RawConfig, parse_settings
from halb.mockrun import Run, run_program
from halb.render import manifests

SCRIPT = ROOT / "images" / "frr" / "halb-bgp"
VIP = {"address": "203.0.113.10/32", "interface": "eth0", "routerId": 51}
PEERS = [{"address": "192.0.2.1", "asn": 65000}, {"address": "192.0.2.2", "asn": 65000}]


def load() -> ModuleType:
    return load_script(SCRIPT)


hb = load()


def bgp_raw(**changes: Any) -> RawConfig:
    changes.setdefault("vip", VIP)
    changes.setdefault("monitoring", {"enabled": False})
    changes.setdefault("bgp", {"asn": 65001, "peers": PEERS})
    return with_overrides(stack_raw("lab"), **changes)


@cached
def bgp_run(watch: bool = True) -> Run:
    raw = bgp_raw() if watch else bgp_raw(vrrp={"check": {"watch": False}})
    return run_program(raw, "lab")


def edge(run: Run) -> dict[str, Any]:
    (ds,) = [d for d in manifests(run) if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "edge"]
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in items}


def test_frr_takes_keepalived_and_the_exporters_place() -> None:
    assert [c["name"] for c in edge(bgp_run())["containers"]] == [
        "haproxy",
        "haproxy-reload",
        "frr",
        "steer",
        "haproxy-watch",
    ]
    assert [c["name"] for c in edge(bgp_run(watch=False))["containers"]] == [
        "haproxy",
        "haproxy-reload",
        "frr",
        "steer",
    ]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in manifests(bgp_run())}
    assert ("Secret", "frr-config") in kinds and ("Secret", "keepalived-config") not in kinds
    assert ("Secret", "edge-handoff-key") in kinds  # a withdrawal's steering message is signed
    assert ("Secret", "edge-cookie-key") in kinds  # sticky cookies still hold across hosts


def test_frr_has_exactly_the_capabilities_frr_demands() -> None:
    frr = by_name(edge(bgp_run())["containers"])["frr"]
    ctx = frr["securityContext"]
    assert ctx["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN"],
    }
    assert ctx["runAsUser"] == 0 and ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    # FRR writes only where the pod gives it room.
    mounts = {m["mountPath"]: m for m in frr["volumeMounts"]}
    assert set(mounts) == {"/etc/halb/frr", "/etc/frr", "/run/frr", "/run/halb"}
    assert mounts["/etc/halb/frr"].get("readOnly") is True


def test_halb_bgp_parses_the_rendered_flags_as_the_settings_say() -> None:
    s = parse_settings(bgp_raw())
    frr = by_name(edge(bgp_run())["containers"])["frr"]
    assert "command" not in frr  # the image's entrypoint: halb-bgp run
    args = hb.parser().parse_args(["run", *frr["args"]])
    chk = s.vrrp.check
    assert (args.vip, args.asn, args.listen, args.bfd) == ("203.0.113.10", 65001, "$(HOST_IP)", True)
    assert (args.interval, args.timeout, args.fall, args.rise) == (
        chk.interval,
        chk.timeout,
        chk.fall,
        chk.rise,
    )
    assert args.health_url == f"http://127.0.0.1:{s.load_balancer.stats_port}/healthz"
    assert args.down_file == "/run/halb/haproxy-down" and args.drain_file == "/run/halb/draining"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in frr["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}
    no_watch = by_name(edge(bgp_run(watch=False))["containers"])["frr"]
    assert hb.parser().parse_args(["run", *no_watch["args"]]).down_file is None


def test_the_prestop_withdraws_then_drains_as_long_as_a_vrrp_handoff() -> None:
    s = parse_settings(bgp_raw())
    frr = by_name(edge(bgp_run())["containers"])["frr"]
    command = frr["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/usr/local/bin/halb-bgp", "withdraw"]
    args = hb.parser().parse_args(command[1:])
    assert args.drain_seconds == s.vrrp.handoff.drain_seconds
    # HAProxy's preStop waits for these very files before it stops serving.
    haproxy = by_name(edge(bgp_run())["containers"])["haproxy"]
    stop = haproxy["lifecycle"]["preStop"]["exec"]["command"]
    assert stop[stop.index("--started-file") + 1] == args.started_file
    assert stop[stop.index("--done-file") + 1] == args.done_file


def test_the_bgp_firewall_lets_only_the_routers_speak_bgp_and_bfd() -> None:
    s = parse_settings(bgp_raw(loadBalancer={**lab_value("loadBalancer"), "bindVipOnly": True}))
    table = render_edge_nft(s, "lb-1")
    assert "elements = { 192.0.2.1, 192.0.2.2 }" in table
    assert 'tcp dport 179 ip saddr != @peers counter name "bgp_refused" drop' in table
    assert "udp dport 3784 ip saddr @peers ip ttl 255 accept" in table
    assert 'udp dport 3784 counter name "bfd_refused" drop' in table
    assert "ip protocol 112" not in table
    # Handoffs only from the other load-balancer hosts, not from the routers.
    assert "set hosts {\n    type ipv4_addr\n    elements = { 192.0.2.12 }" in table
    assert 'udp dport 9166 ip saddr != @hosts counter name "handoff_refused" drop' in table
    assert 'tcp dport { 80 } ip daddr != 203.0.113.10 counter name "off_vip_refused" drop' in table


def test_nft_accepts_the_bgp_table(tmp_path: Path) -> None:
    """`nft -c` (a dry run, no table touched) where nft exists."""
    nft = subprocess.run(
        ["sh", "-c", "command -v nft"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not nft:
        pytest.skip("needs nft")
    path = tmp_path / "t.nft"
    path.write_text(render_edge_nft(parse_settings(bgp_raw()), "lb-2"))
    done = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_health_count_is_keepaliveds() -> None:
    """fall misses down, rise answers up, from a start that announces nothing."""
    h = hb.Health("http://127.0.0.1:8404/healthz", 0.8, 2, 3)
    answers = iter([True, True, True, False, True, False, False, True])
    h.probe = lambda: next(answers)
    seen = [h.poll() for _ in range(8)]
    assert seen == [False, False, True, True, True, True, False, False]


def test_the_combined_config_adds_the_announcement_and_keeps_the_hosts_forwarding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "lb-1.conf"
    conf.write_text("router bgp 65001\n address-family ipv4 unicast\n  neighbor 192.0.2.1 activate\n"
                    " exit-address-family\nexit\n")  # fmt: skip
    args = hb.parser().parse_args(["run", "--vip", "203.0.113.10", "--asn", "65001", "--config", str(conf),
                                   "--health-url", "http://127.0.0.1:8404/healthz", "--interval", "1",
                                   "--timeout", "1", "--fall", "2", "--rise", "2", "--drain-file", "d",
                                   "--state-file", "s"])  # fmt: skip
    a = hb.Announcer(args)
    running = (
        "frr version 8.4.4\nno ip forwarding\nip forwarding\nipv6 forwarding\nno ipv forwarding\nhostname x\n"
    )
    monkeypatch.setattr(hb, "run", lambda *cmd, **kw: subprocess.CompletedProcess(cmd, 0, running, ""))
    a.announced = True
    text = a.combined()
    assert " address-family ipv4 unicast\n  network 203.0.113.10/32\n" in text
    assert text.endswith("no ip forwarding\nip forwarding\nipv6 forwarding\n")
    a.announced = False
    assert "network" not in a.combined()


def test_a_bgp_stack_renders(tmp_path: Path) -> None:
    base = (
        (ROOT / "Pulumi.lab.yaml").read_text().replace("address: 192.0.2.10/24", "address: 203.0.113.10/32")
    )
    base = base.replace(
        "rancher-ha-lb:monitoring: {enabled: true,", "rancher-ha-lb:monitoring: {enabled: false,"
    )
    stack = tmp_path / "Pulumi.bgp.yaml"
    stack.write_text(
        base + "  rancher-ha-lb:bgp:\n    asn: 65001\n    peers:\n      - {address: 192.0.2.1, asn: 65000}\n"
    )
    out = tmp_path / "out"
    r = run_halb("render", "--stack", "bgp", "--config-file", str(stack), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in (out / "frr").iterdir()) == [
        "lb-1.conf",
        "lb-1.nft",
        "lb-2.conf",
        "lb-2.nft",
    ]
    assert "name: frr-config" in (out / "manifests.yaml").read_text()


def test_haproxys_own_prestop_waits_for_the_withdrawal_in_bgp_mode_only() -> None:
    """The VIP never leaves `lo` in BGP mode: HAProxy's drain follows halb-bgp's state
    file (the one frr's container writes), where with VRRP it follows the VIP."""
    frr = by_name(edge(bgp_run())["containers"])["frr"]
    state = hb.parser().parse_args(frr["lifecycle"]["preStop"]["exec"]["command"][1:]).state_file
    stop = by_name(edge(bgp_run())["containers"])["haproxy"]["lifecycle"]["preStop"]["exec"]["command"]
    assert stop[stop.index("--withdrawn-file") + 1] == state
    vrrp = by_name(edge(rendered("lab"))["containers"])["haproxy"]["lifecycle"]["preStop"]["exec"]["command"]
    assert "--withdrawn-file" not in vrrp


# Shapes as FRR 8.4's vtysh prints them (trimmed; captured from the lab's router).
BGP_SUMMARY = json.dumps({"ipv4Unicast": {"routerId": "192.0.2.11", "as": 64513, "peers": {
    "192.0.2.1": {"hostname": "router", "remoteAs": 64512, "state": "Established", "pfxSnt": 1},
    "192.0.2.2": {"hostname": "router-b", "remoteAs": 64512, "state": "Active", "pfxSnt": 0},
}}})  # fmt: skip
BFD_PEERS = json.dumps([
    {"multihop": False, "peer": "192.0.2.1", "local": "192.0.2.11", "status": "up", "detect-multiplier": 3},
    {"multihop": False, "peer": "192.0.2.2", "local": "192.0.2.11", "status": "down", "detect-multiplier": 3},
])  # fmt: skip


def test_the_metrics_read_bgpds_and_bfdds_own_session_states() -> None:
    assert hb.bgp_sessions(BGP_SUMMARY) == {"192.0.2.1": True, "192.0.2.2": False}
    assert hb.bfd_sessions(BFD_PEERS) == {"192.0.2.1": True, "192.0.2.2": False}
    # bgpd without a session yet, or an answer that is no JSON: no sessions, never a crash.
    assert hb.bgp_sessions("{}") == {} and hb.bgp_sessions("% Unknown command") == {}
    assert hb.bfd_sessions("[]") == {} and hb.bfd_sessions("") == {}


def test_the_metrics_are_prometheus_text_promtool_accepts(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (make deps installs Debian's prometheus)")
    text = hb.metrics_text("203.0.113.10", True, 3, True, False, True,
                           hb.bgp_sessions(BGP_SUMMARY), hb.bfd_sessions(BFD_PEERS))  # fmt: skip
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'halb_bgp_announced{vip="203.0.113.10"} 1' in text.splitlines()
    assert 'halb_bgp_session_up{peer="192.0.2.2"} 0' in text.splitlines()
    assert 'halb_bfd_session_up{peer="192.0.2.1"} 1' in text.splitlines()
    assert 'halb_bgp_announcement_changes_total{vip="203.0.113.10"} 3' in text.splitlines()


def test_frr_serves_metrics_on_the_host_address_and_loopback_at_the_metrics_port() -> None:
    s = parse_settings(bgp_raw())
    frr = by_name(edge(bgp_run())["containers"])["frr"]
    args = hb.parser().parse_args(["run", *frr["args"]])
    assert args.metrics_listen == ["$(HOST_IP)", "127.0.0.1"] and args.metrics_port == s.vrrp.metrics_port
    assert frr["ports"] == [{"name": "bgp-metrics", "containerPort": s.vrrp.metrics_port,
                             "hostPort": s.vrrp.metrics_port, "protocol": "TCP"}]  # fmt: skip


def _announcer(tmp_path: Path, told: bool = True) -> Any:
    flags = ["run", "--vip", "203.0.113.10", "--asn", "65001", "--config", "c",
             "--health-url", "http://127.0.0.1:8404/healthz", "--interval", "1", "--timeout", "1",
             "--fall", "2", "--rise", "2", "--drain-file", str(tmp_path / "draining"),
             "--state-file", str(tmp_path / "bgp.json")]  # fmt: skip
    if told:
        flags += ["--told-file", str(tmp_path / "told")]
    a = hb.Announcer(hb.parser().parse_args(flags))
    a.healthy, a.announced = True, True
    return a


def test_a_drain_withdraws_only_once_the_peers_steer_back_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router moves a withdrawn host's flows to its peers at once: they must steer them
    back before that, or its long-lived connections break there."""
    clock = [100.0]
    monkeypatch.setattr(hb.time, "monotonic", lambda: clock[0])
    a = _announcer(tmp_path)
    (tmp_path / "draining").write_text("1\n")
    assert a.wanted() == (True, "draining: the peers are told to steer first")
    (tmp_path / "told").write_text(f"1 {(tmp_path / 'draining').stat().st_mtime_ns}\n")  # steer told them
    clock[0] += hb.STEER_SETTLE_S / 2
    assert a.wanted()[0] is True  # their rules are still loading
    clock[0] += hb.STEER_SETTLE_S
    assert a.wanted() == (False, "draining")
    # Back from the drain, the next one waits again.
    (tmp_path / "draining").write_text("0\n")
    (tmp_path / "told").write_text("0\n")
    assert a.wanted() == (True, "healthy")
    (tmp_path / "draining").write_text("1\n")
    assert a.wanted()[0] is True
    # A `1` steer wrote for an earlier drain (it died since) is no answer to this one.
    os.utime(tmp_path / "draining", ns=(1, 1))
    (tmp_path / "told").write_text("1 2\n")
    clock[0] += hb.STEER_SETTLE_S * 2
    assert a.wanted()[0] is True


def test_a_drain_withdraws_anyway_when_steer_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(hb.time, "monotonic", lambda: clock[0])
    a = _announcer(tmp_path)
    (tmp_path / "draining").write_text("1\n")
    assert a.wanted()[0] is True
    clock[0] += hb.TELL_WAIT_S
    assert a.wanted() == (False, "draining")
    # Without --told-file (no steer container): a drain withdraws at once, as before.
    plain = _announcer(tmp_path, told=False)
    assert plain.wanted() == (False, "draining")


def test_the_rendered_frr_and_steer_agree_on_the_told_file() -> None:
    containers = by_name(edge(bgp_run())["containers"])
    args = hb.parser().parse_args(["run", *containers["frr"]["args"]])
    steer = containers["steer"]["command"]
    told = steer[steer.index("--told-file") + 1]
    assert args.told_file == told and steer[steer.index("--drain-file") + 1] == args.drain_file
    assert args.steer_state_file == steer[steer.index("--state-file") + 1]
    assert containers["steer"]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    key = [e for e in containers["steer"]["env"] if e["name"] == "HALB_HANDOFF_KEY"]
    assert key == [
        {
            "name": "HALB_HANDOFF_KEY",
            "valueFrom": {"secretKeyRef": {"name": "edge-handoff-key", "key": "key"}},
        }
    ]


def test_the_metrics_count_handoff_messages_and_refused_packets_from_steers_state(tmp_path: Path) -> None:
    steer = {"handoff_messages": {"accepted": 2, "stale": 1}, "firewall_refused": {"handoff_refused": 4}}
    text = hb.metrics_text("203.0.113.10", True, 0, True, False, True, {}, {}, steer).splitlines()
    assert 'halb_handoff_messages_total{result="accepted"} 2' in text
    assert 'halb_handoff_messages_total{result="replayed"} 0' in text
    assert 'halb_firewall_refused_packets_total{rule="handoff"} 4' in text
    assert not any(
        "halb_handoff" in line
        for line in hb.metrics_text("v", True, 0, True, False, True, {}, {}).splitlines()
    )
    path = tmp_path / "steer.json"
    assert hb.steer_state(str(path)) is None
    path.write_text("{not json")
    assert hb.steer_state(str(path)) is None
    path.write_text(json.dumps(steer))
    assert hb.steer_state(str(path)) == steer
    promtool = shutil.which("promtool")
    if promtool is not None:
        body = "\n".join(text) + "\n"
        done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
