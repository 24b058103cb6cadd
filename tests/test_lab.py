"""The local lab for real: namespaces, keepalived, HAProxy, faults, cleanup.

Each test module run uses its own lab prefix, so a developer's running lab
is never touched; every lab is taken down even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, require_root_tools, run_halb

from halb.lab.lab import STATE_ROOT, Lab, wait_until

pytestmark = pytest.mark.netns

PREFIX = "t" + uuid.uuid4().hex[:6]
STATE = STATE_ROOT / PREFIX
ENV = {**os.environ, "HALB_LAB_PREFIX": PREFIX}


def halb(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_halb("lab", *args, env=ENV, timeout=timeout)


def ok(*args: str) -> str:
    result = halb(*args)
    assert result.returncode == 0, f"lab {' '.join(args)}: {result.stderr}\n{result.stdout}"
    return result.stdout


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok("status", "--json"))
    return data


def lb(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in st["nodes"] if n["role"] == "load-balancer"}


def holders() -> list[str]:
    return [name for name, n in lb(status()).items() if n["holds_vip"]]


def live_holders() -> list[str]:
    return [name for name, n in lb(status()).items() if n["holds_vip"] and not n["crashed"]]


def settled() -> bool:
    nodes = lb(status()).values()
    return sum(n["holds_vip"] for n in nodes) == 1 and all(
        n["vrrp_state"] in ("MASTER", "BACKUP") for n in nodes
    )


def our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def answers(count: int = 6) -> list[str]:
    return [line.split("ms  ", 1)[1] for line in ok("request", "--count", str(count)).splitlines()]


@pytest.fixture(scope="module")
def lab() -> Iterator[None]:
    require_root_tools("ip", "keepalived", "haproxy", "curl")
    halb("down")
    try:
        ok("up")
        yield
    finally:
        halb("down")


@pytest.fixture
def healthy(lab: None) -> Iterator[None]:
    """Each test starts from, and leaves, one MASTER and one BACKUP."""
    assert wait_until(settled, 15, poll=0.1), status()
    yield
    halb("fault", "restore")
    assert wait_until(settled, 15, poll=0.1), status()


def test_status_json_shape(healthy: None) -> None:
    st = status()
    assert st["vip"] == "192.0.2.10" and st["client_netns"] == f"{PREFIX}-client"
    nodes = lb(st)
    assert set(nodes) == {"lb-1", "lb-2"}
    for n in nodes.values():
        assert set(n) >= {
            "name",
            "role",
            "netns",
            "address",
            "vrrp_state",
            "holds_vip",
            "keepalived_pid",
            "haproxy_pid",
        }
        # PIDs of the daemons themselves, seen from the root PID namespace.
        exe = os.readlink(f"/proc/{n['keepalived_pid']}/exe")
        assert exe.endswith("/keepalived"), exe
        assert os.readlink(f"/proc/{n['haproxy_pid']}/exe").endswith("/haproxy")
        ns_inode = os.stat(f"/run/netns/{n['netns']}").st_ino
        assert os.stat(f"/proc/{n['keepalived_pid']}/ns/net").st_ino == ns_inode
    assert sorted(n["vrrp_state"] for n in nodes.values()) == ["BACKUP", "MASTER"]


def test_vip_serves_both_app_hosts(healthy: None) -> None:
    got = answers(6)
    assert {a.split()[0] for a in got} == {"host=app-1", "host=app-2"}
    assert all("service=shop" in a for a in got)
    blog = ok("request", "--count", "2", "--service", "blog")
    assert "service=blog" in blog


def test_nothing_in_the_root_namespace(healthy: None) -> None:
    root = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert "192.0.2.10" not in root
    for n in lb(status()).values():
        assert os.stat(f"/proc/{n['haproxy_pid']}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


@pytest.mark.parametrize("kind", ["kill-keepalived", "stop-keepalived", "kill-haproxy", "link-down", "crash"])
def test_fault_moves_vip_and_service_resumes(kind: str, healthy: None) -> None:
    (master,) = holders()
    ok("fault", kind)
    other = next(n for n in lb(status()) if n != master)
    assert wait_until(lambda: lb(status())[other]["vrrp_state"] == "MASTER", 5, poll=0.1), status()
    # A crashed host keeps its stale VIP (nothing ran to remove it), unplugged.
    assert wait_until(lambda: live_holders() == [other], 10, poll=0.1), status()
    assert all(a.startswith("host=") for a in answers(3))


def test_restarted_keepalived_removes_stale_vip(healthy: None) -> None:
    (master,) = holders()
    log = STATE / "logs" / f"{master}.keepalived.log"
    before = log.read_text().count("removed stale VIP")
    ok("fault", "kill-keepalived")
    # SIGKILL: the VIP stays until the supervisor restarts keepalived.
    assert master in holders()
    assert wait_until(lambda: log.read_text().count("removed stale VIP") > before, 10, poll=0.1)
    assert wait_until(lambda: master not in holders() and len(holders()) == 1, 10, poll=0.1), status()


def test_crashed_host_keeps_stale_vip_until_restored(healthy: None) -> None:
    (master,) = holders()
    ok("fault", "crash", "--node", master)
    st = lb(status())[master]
    assert st["vrrp_state"] == "DOWN" and st["keepalived_pid"] is None and st["haproxy_pid"] is None
    ok("fault", "restore", "--node", master)
    assert wait_until(lambda: lb(status())[master]["vrrp_state"] == "BACKUP", 10, poll=0.1), status()
    assert not lb(status())[master]["holds_vip"]


def test_handoff_loses_no_request(healthy: None) -> None:
    (master,) = holders()
    probe = Lab.load(PREFIX).start_probe(100_000, 0.02, 0.2, 4.0)
    try:
        time.sleep(1)
        out = ok("handoff")
        attempts = probe.attempts(grace_s=16)
    finally:
        probe.stop()
    assert len(attempts) > 100
    assert [a for a in attempts if not a.ok] == []
    assert f"from {master}" in out
    assert wait_until(lambda: holders() != [master] and len(holders()) == 1, 5, poll=0.1)


STRADDLER = """
import socket, sys, time
s = socket.create_connection(("192.0.2.10", 80), timeout=2)
time.sleep(float(sys.argv[1]))
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""


def straddle(then: Any, wait_s: float = 1.0) -> subprocess.CompletedProcess[str]:
    """A connection opened before `then()` and used after it: it spans the switch."""
    conn = subprocess.Popen(
        ["ip", "netns", "exec", f"{PREFIX}-client", sys.executable, "-c", STRADDLER, str(wait_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.3)
    then()
    out, err = conn.communicate(timeout=10)
    return subprocess.CompletedProcess(conn.args, conn.returncode, out, err)


def test_handoff_carries_a_connection_open_across_the_switch(healthy: None) -> None:
    result = straddle(lambda: ok("handoff"))
    assert result.returncode == 0 and result.stdout.startswith("HTTP/1.1 200"), result.stderr


def test_plain_vrrp_switch_resets_such_a_connection(healthy: None) -> None:
    # The control for the test above: without steering the new MASTER resets it.
    result = straddle(lambda: ok("fault", "stop-keepalived"))
    assert result.returncode != 0 and "Connection reset" in result.stderr


def test_split_brain_heals_to_one_master_within_a_second(healthy: None) -> None:
    lab = Lab.load(PREFIX)
    lab.fault("partition", None)
    # Clients still reach both hosts, so both become MASTER and both serve.
    assert wait_until(lambda: len(lab.vip_holders()) == 2, 2.0), status()
    assert all(a.startswith("host=") for a in answers(4))
    healed = time.monotonic()
    lab.fault("heal", None)

    def one_master() -> bool:
        states = [lab.vrrp_state(n.name) for n in lab.plan.lb_nodes]
        return len(lab.vip_holders()) == 1 and states.count("MASTER") == 1

    assert wait_until(one_master, 1.0, poll=0.02), status()
    assert time.monotonic() - healed < 1.0
    (winner,) = lab.vip_holders()
    # The winner's GARPs, not the 60 s refresh, move the client's ARP entry.
    assert wait_until(lambda: lab._client_mac() == lab._mac(winner), 1.0), lab._client_mac()
    assert all(a.startswith("host=") for a in answers(4))


def test_fault_rejects_unknown_node(healthy: None) -> None:
    result = halb("fault", "link-down", "--node", "nope")
    assert result.returncode == 1 and "--node nope: no such host" in result.stderr


def test_second_up_says_so_and_keeps_the_first(healthy: None) -> None:
    result = halb("up")
    assert result.returncode == 1
    assert "a lab is already up" in result.stderr
    assert all(a.startswith("host=") for a in answers(2))


# --- whole-lab lifecycle (after the module's lab is down) ----------------------


def test_down_removes_everything_and_is_idempotent(lab: None) -> None:
    sup_pids = [int(p.read_text()) for p in (STATE / "pids").glob("*.supervisor")]
    assert our_namespaces() and sup_pids
    ok("down")
    assert our_namespaces() == []
    assert not STATE.exists()
    for pid in sup_pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
        )
    assert "nothing to remove" in ok("down")


def test_down_cleans_up_after_a_killed_lab() -> None:
    require_root_tools("ip", "keepalived", "haproxy", "curl")
    up = subprocess.Popen(
        [sys.executable, "-m", "halb", "lab", "up"], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_until(
            lambda: len(our_namespaces()) >= 6 and any((STATE / "pids").glob("*.supervisor")), 20, poll=0.1
        )
        time.sleep(0.5)
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
    # The lab command died mid-way; its state file is lost too.
    (STATE / "state.json").unlink(missing_ok=True)
    ok("down")
    assert our_namespaces() == []
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert PREFIX not in leftovers


def test_lab_refuses_addresses_outside_test_nets() -> None:
    result = halb("up", "--stack", "prod")
    assert result.returncode == 2
    assert "outside the lab's TEST-NET ranges" in result.stderr
    assert our_namespaces() == []
