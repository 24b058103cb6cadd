"""Issue 22, render side: VRRP only from peers, authenticated handoffs, traffic
only where asked, a health frontend overload cannot starve, memory that fits
maxConn, and the RKE2 ingress clash said. Parsed and checked by the daemons
(`haproxy -c`, `nft -c` in a namespace of the test's own)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from conftest import haproxy_check, lab_value, rendered, settings_of, stack_raw, with_overrides
from test_program import by_name, edge

from components.edge_firewall import render_edge_nft, traffic_ports
from components.haproxy_cfg import dns_backends, render_haproxy_cfg
from components.settings import SettingsError, parse_settings
from components.settings.capacity import STATS_MAXCONN, global_maxconn, memory_limit
from halb.mockcluster import Rancher
from halb.mockrun import run_program, stack_rancher

P = "rancher-ha-lb:"


def lab(tls: bool = True, **lb: Any) -> Any:
    """The lab stack with an HTTPS service (unless not `tls`), a tcpPort service, these loadBalancer keys."""
    shop, blog = lab_value("services")
    if tls:
        shop = {**shop, "tls": {"secretName": "shop-tls"}}
    echo = {"name": "echo", "image": "ghcr.io/example/echo:1", "port": 8084, "tcpPort": 7000}
    return with_overrides(
        stack_raw("lab"), services=[shop, blog, echo], loadBalancer={**lab_value("loadBalancer"), **lb}
    )


def frontends(cfg: str) -> dict[str, list[str]]:
    """Each `frontend NAME` section's lines, stripped."""
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=\S)", cfg):
        head, *body = block.splitlines()
        if head.startswith("frontend "):
            out[head.split()[1]] = [line.strip() for line in body if line.strip()]
    return out


def global_section(cfg: str) -> list[str]:
    block = next(b for b in re.split(r"\n(?=\S)", cfg) if b.startswith("global"))
    return [line.strip() for line in block.splitlines()[1:]]


# --- overload: the health frontend's own budget; memory that fits ------------------


def test_the_health_frontend_keeps_a_budget_no_traffic_frontend_reaches() -> None:
    s = parse_settings(lab(maxConn=3000))
    cfg = render_haproxy_cfg(s, dns_backends(s))
    fe = frontends(cfg)
    traffic = ["http", "https", "tcp_echo"]
    assert sorted(fe) == sorted(["stats", *traffic])
    for name in traffic:
        assert "maxconn 3000" in fe[name], name
    assert f"maxconn {STATS_MAXCONN}" in fe["stats"]
    # Every traffic frontend full at once still leaves the health frontend its own.
    assert f"maxconn {3 * 3000 + STATS_MAXCONN}" in global_section(cfg)
    assert global_maxconn(s) == 3 * 3000 + STATS_MAXCONN
    # Slow clients: a request's headers must arrive within 10 s.
    assert "timeout http-request 10s" in cfg


def test_per_source_limits_track_every_traffic_frontend_and_pass_haproxy(tmp_path: Path) -> None:
    s = parse_settings(lab(maxConn=3000, maxConnPerSource=50))
    cfg = render_haproxy_cfg(s, dns_backends(s))
    for name, lines in frontends(cfg).items():
        limited = "tcp-request connection reject if { sc0_conn_cur gt 50 }" in lines
        assert limited == (name != "stats"), name
        if limited:
            i = lines.index("tcp-request connection track-sc0 src")
            assert lines[i - 1] == "stick-table type ip size 3000 expire 30s store conn_cur"
    unlimited = render_haproxy_cfg(parse_settings(lab()), dns_backends(s))
    assert "sc0_conn_cur" not in unlimited and "stick-table" not in unlimited
    # HAProxy itself accepts it (without HTTPS: its certificates are test_tls.py's).
    plain = parse_settings(lab(tls=False, maxConn=3000, maxConnPerSource=50))
    done = haproxy_check(render_haproxy_cfg(plain, dns_backends(plain)), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr + done.stdout, done.stdout + done.stderr


def test_a_refused_source_is_rejected_before_it_takes_a_table_entry() -> None:
    shop, blog = lab_value("services")
    echo = {"name": "echo", "image": "ghcr.io/example/echo:1", "port": 8084, "tcpPort": 7000,
            "allowFrom": ["203.0.113.0/24"]}  # fmt: skip
    raw = with_overrides(stack_raw("lab"), services=[shop, blog, echo],
                         loadBalancer={**lab_value("loadBalancer"), "maxConnPerSource": 10})  # fmt: skip
    s = parse_settings(raw)
    lines = frontends(render_haproxy_cfg(s, dns_backends(s)))["tcp_echo"]
    reject = lines.index("tcp-request connection reject unless { src 203.0.113.0/24 }")
    assert reject < lines.index("tcp-request connection track-sc0 src")


def test_the_memory_limit_follows_maxconn_unless_set() -> None:
    # 2 frontends (HTTP, tcpPort) x 10000 + 100 = 20100 x 33 KiB + 64 MiB = 712 MiB.
    s = parse_settings(lab(tls=False, maxConn=10000))
    assert memory_limit(s) == "712Mi"
    # Small budgets keep the floor.
    assert memory_limit(parse_settings(lab(maxConn=100))) == "512Mi"
    run = run_program(lab(tls=False, maxConn=10000), "lab")
    assert by_name(edge(run)["containers"])["haproxy"]["resources"]["limits"]["memory"] == "712Mi"
    # Set: kept as written.
    fits = parse_settings(
        lab(maxConn=100, resources={"cpu": "200m", "memory": "128Mi", "memoryLimit": "1Gi"})
    )
    assert memory_limit(fits) == "1Gi"


def test_a_memory_limit_too_small_for_maxconn_is_one_message_with_the_arithmetic() -> None:
    raw = lab(maxConn=10000, resources={"cpu": "200m", "memory": "128Mi", "memoryLimit": "512Mi"})
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    (problem,) = err.value.problems
    assert problem == (
        f"{P}loadBalancer.maxConn: 10000 connections on each of 3 traffic frontend(s) (HTTP, HTTPS, "
        "tcpPort 7000) + 100 for /healthz = 30100 x 33 KiB + 64 MiB = 1035 MiB, more than "
        "loadBalancer.resources.memoryLimit 512Mi: HAProxy would be OOM-killed before it reached "
        "maxconn. Raise memoryLimit to 1035Mi (or remove it: it then follows maxConn), or lower "
        "maxConn to 4600"
    )
    # The suggested maxConn fits; one more does not.
    ok = lab(maxConn=4600, resources={"cpu": "200m", "memory": "128Mi", "memoryLimit": "512Mi"})
    parse_settings(ok)
    with pytest.raises(SettingsError):
        parse_settings(
            lab(maxConn=4601, resources={"cpu": "200m", "memory": "128Mi", "memoryLimit": "512Mi"})
        )


# --- VRRP only from peers -------------------------------------------------------


def nft_rules(text: str) -> list[str]:
    chain = text.split("chain input {", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in chain.splitlines() if line.strip()]


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_each_nodes_table_accepts_vrrp_only_from_its_peers_on_the_vip_link(stack: str) -> None:
    s = settings_of(stack)
    for node in s.lb_nodes:
        text = render_edge_nft(s, node)
        peers = sorted(str(s.address(n)) for n in s.lb_nodes if n != node)
        (elements,) = re.findall(r"elements = \{ (.*) \}", text)
        assert sorted(elements.split(", ")) == peers  # never itself
        rules = [r for r in nft_rules(text) if not r.startswith("#")]
        assert rules[2:] == [
            f'iifname "{s.vip.interface}" ip protocol 112 ip saddr @peers ip ttl 255 accept',
            'ip protocol 112 counter name "vrrp_refused" drop',
            f'udp dport {s.vrrp.handoff.port} ip saddr != @peers counter name "handoff_refused" drop',
        ]
        assert rules[0] == "type filter hook input priority filter; policy accept;"
        assert rules[1] == "ct state invalid counter"  # conntrack on from the start: steering needs it


@pytest.mark.parametrize("stack", ["lab", "lab-bgp"])
def test_the_edge_table_turns_conntrack_on_before_any_flow_begins(stack: str) -> None:
    """A steering table (loaded when a peer leaves) tells a flow this host never saw begin by
    `ct state new`; a namespace tracks nothing until a rule needs conntrack, so without one
    from the start every flow already open here would look new and be steered away (the BGP
    benchmark's planned removal cut 153 of 180 websockets, 27 of them on the leaving host)."""
    s = settings_of(stack)
    for node in s.lb_nodes:
        assert "    ct state invalid counter\n" in render_edge_nft(s, node)


def test_bind_vip_only_drops_every_traffic_port_not_addressed_to_the_vip() -> None:
    s = parse_settings(lab(bindVipOnly=True))
    assert traffic_ports(s) == [80, 443, 7000]
    rules = nft_rules(render_edge_nft(s, "lb-1"))
    assert (
        rules[-1]
        == f'tcp dport {{ 80, 443, 7000 }} ip daddr != {s.vip.ip} counter name "off_vip_refused" drop'
    )
    assert not any("daddr" in r for r in nft_rules(render_edge_nft(parse_settings(lab()), "lb-1")))


def test_the_table_is_in_the_keepalived_secret_and_halb_render_writes_it() -> None:
    s = settings_of("prod")
    (secret,) = [r for r in rendered("prod").resources if r.name.endswith("keepalived-config")]
    for node in s.lb_nodes:
        assert secret.inputs["stringData"][f"{node}.nft"] == render_edge_nft(s, node)


def nft_check(netns: str, text: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "edge.nft"
    path.write_text(text)
    cmd = ["ip", "netns", "exec", netns, "nft", "-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.netns
def test_nft_loads_the_table_twice_and_it_filters_what_it_says(netns: str, tmp_path: Path) -> None:
    """Loaded for real (in the test's own namespace): the first load and a reload
    both succeed, and the ruleset holds what was rendered."""
    s = parse_settings(lab(bindVipOnly=True))
    text = render_edge_nft(s, "lb-1")
    for _ in range(2):
        done = nft_check(netns, text, tmp_path)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "ip", "halb_edge"],
                            capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    items = json.loads(listed)["nftables"]
    counters = sorted(i["counter"]["name"] for i in items if "counter" in i)
    assert counters == ["handoff_refused", "off_vip_refused", "vrrp_refused"]
    rules = [i["rule"] for i in items if "rule" in i]
    assert len(rules) == 5  # the conntrack rule, three for VRRP and the handoff port, bindVipOnly's
    bad = text.replace("ip ttl 255", "ip ttl 256")
    assert nft_check(netns, bad, tmp_path).returncode != 0  # nft itself refuses, nothing half-loaded


# --- authenticated handoffs --------------------------------------------------------


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_the_handoff_key_is_a_minted_secret_read_by_keepalived_only(stack: str) -> None:
    run = rendered(stack)
    (secret,) = [r for r in run.resources if r.type == "kubernetes:core/v1:Secret"
                 and r.inputs["metadata"]["name"] == "edge-handoff-key"]  # fmt: skip
    (key,) = secret.inputs["stringData"].values()
    assert re.fullmatch(r"[A-Za-z0-9]{43}", key)
    spec = edge(run)
    readers = [c["name"] for c in spec["containers"] if "edge-handoff-key" in json.dumps(c.get("env", []))]
    assert readers == ["keepalived"]
    env = {e["name"]: e for e in by_name(spec["containers"])["keepalived"]["env"]}
    assert env["HALB_HANDOFF_KEY"] == {
        "name": "HALB_HANDOFF_KEY",
        "valueFrom": {"secretKeyRef": {"name": "edge-handoff-key", "key": "key"}},
    }
    # Never a literal anywhere in the pod spec.
    assert key not in json.dumps(spec)


def test_the_steered_ports_are_every_traffic_port() -> None:
    run = run_program(lab(), "lab")
    env = {e["name"]: e.get("value") for e in by_name(edge(run)["containers"])["keepalived"]["env"]}
    assert env["HALB_STEER_PORTS"] == "80,443,7000"
    assert env["HALB_STEER_STATE_FILE"] == "/run/halb/steer.json"


# --- RKE2 -------------------------------------------------------------------------


@pytest.mark.parametrize(("driver", "warned"), [("rke2", True), ("k3s", False), ("imported", False)])
def test_an_rke2_cluster_is_warned_about_its_bundled_ingress(
    driver: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: said.append(msg))
    raw = stack_raw("prod")
    rancher: Rancher = stack_rancher(raw)
    rancher.driver = driver
    run_program(raw, "prod", rancher)
    clash = [m for m in said if "rke2-ingress-nginx" in m]
    assert bool(clash) == warned, said
    if warned:
        assert "host ports 80 and 443" in clash[0] and "disable" in clash[0].lower()
