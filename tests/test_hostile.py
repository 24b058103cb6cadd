"""The rogue's adverts are real: a bare keepalived obeys them; the edge's nft
table is what makes it ignore them. Two namespaces of the test's own joined by
a veth pair (198.51.100.0/24), one real keepalived, nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_root_tools

from halb.lab.base import wait_until

pytestmark = pytest.mark.netns

LB, PEER, STRANGER, VIP = "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.10"
VRID = 61

CONF = f"""
global_defs {{
    router_id lb
    enable_script_security
}}
vrrp_instance VI_{VRID} {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {VRID}
    priority 200
    advert_int 0.1
    version 3
    unicast_src_ip {LB}
    unicast_peer {{
        {PEER}
    }}
    check_unicast_src
    virtual_ipaddress {{
        {VIP}/24 dev eth0
    }}
}}
"""

# The edge table as components/edge_firewall.py renders it for a host whose one peer is PEER.
TABLE = f"""table ip halb_edge {{}}
delete table ip halb_edge
table ip halb_edge {{
  counter vrrp_refused {{}}
  set peers {{
    type ipv4_addr
    elements = {{ {PEER} }}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "eth0" ip protocol 112 ip saddr @peers ip ttl 255 accept
    ip protocol 112 counter name "vrrp_refused" drop
  }}
}}
"""


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(lb, rogue) namespaces, a keepalived MASTER of VIP in lb; all removed afterwards."""
    require_root_tools("ip", "keepalived", "nft")
    tag = uuid.uuid4().hex[:6]
    lb, rogue = f"halbt-{tag}-lb", f"halbt-{tag}-rg"
    proc: subprocess.Popen[str] | None = None
    try:
        for ns in (lb, rogue):
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", lb, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", rogue)
        for ns, addrs in ((lb, [LB]), (rogue, [PEER, STRANGER])):
            for a in addrs:
                sh("ip", "-n", ns, "addr", "add", f"{a}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        conf = tmp_path / "keepalived.conf"
        conf.write_text(CONF)
        pids = [f"{flag}{tmp_path / n}" for flag, n in (("-p", "k.pid"), ("-r", "v.pid"), ("-c", "c.pid"))]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lb, "keepalived", "--dont-fork", "--log-console", "-f", str(conf), *pids],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert wait_until(lambda: holds(lb), 10, poll=0.1), "keepalived never became MASTER alone"
        yield lb, rogue
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for ns in (lb, rogue):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def holds(ns: str) -> bool:
    return f"inet {VIP}/" in sh("ip", "-n", ns, "-4", "addr", "show", "dev", "eth0").stdout


def adverts(rogue: str, source: str, ttl: int) -> None:
    sh("ip", "netns", "exec", rogue, sys.executable, "-m", "halb.lab.rogue", "vrrp", "--vrid", str(VRID),
       "--vip", VIP, "--source", source, "--targets", LB, "--ttl", str(ttl), "--count", "20",
       "--interval", "0.05")  # fmt: skip


def refused(lb: str) -> int:
    out = sh("ip", "netns", "exec", lb, "nft", "list", "counter", "ip", "halb_edge", "vrrp_refused").stdout
    return int(out.split("packets ")[1].split()[0])


def test_a_bare_keepalived_obeys_the_rogues_adverts(pair: tuple[str, str]) -> None:
    """The control: a priority-255 advert in the peer's name sends the MASTER to BACKUP."""
    lb, rogue = pair
    adverts(rogue, PEER, ttl=255)
    assert wait_until(lambda: not holds(lb), 5, poll=0.05), "keepalived ignored well-formed adverts"


def test_the_edge_table_drops_an_off_link_spoof_of_a_peer(pair: tuple[str, str], tmp_path: Path) -> None:
    lb, rogue = pair
    (tmp_path / "edge.nft").write_text(TABLE)
    sh("ip", "netns", "exec", lb, "nft", "-f", str(tmp_path / "edge.nft"))
    adverts(rogue, PEER, ttl=254)  # as it arrives after one router: not from the link
    time.sleep(0.5)
    assert holds(lb) and refused(lb) == 20


def test_a_stranger_on_the_link_is_dropped_by_the_table_and_by_keepalived(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    lb, rogue = pair
    adverts(rogue, STRANGER, ttl=255)  # keepalived alone: check_unicast_src
    time.sleep(0.5)
    assert holds(lb)
    (tmp_path / "edge.nft").write_text(TABLE)
    sh("ip", "netns", "exec", lb, "nft", "-f", str(tmp_path / "edge.nft"))
    adverts(rogue, STRANGER, ttl=255)
    time.sleep(0.5)
    assert holds(lb) and refused(lb) == 20
