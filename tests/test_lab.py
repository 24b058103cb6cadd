"""The local lab for real, through its command line: faults, handoff, cleanup.

The module's lab runs the edge pods from the rendered manifests under
podman (tests/test_lab_pods.py checks them against the manifests). Each
module run uses its own lab prefix, so a developer's lab is never touched;
every lab is taken down even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LAB_TOOLS, ROOT, require_root_tools, root_netns_snapshot, run_halb

from halb.lab.base import wait_until
from halb.lab.faults import inject
from halb.lab.handoff import handoff
from halb.lab.lab import Lab
from halb.lab.state import lab_dir

pytestmark = pytest.mark.netns

PREFIX = "t" + uuid.uuid4().hex[:6]
STATE = lab_dir(PREFIX)
ENV = {**os.environ, "HALB_LAB_PREFIX": PREFIX}


def halb(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
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
        n["vrrp_state"] in ("MASTER", "BACKUP") and n["haproxy_pid"] for n in nodes
    )


def our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def answers(count: int = 6) -> list[str]:
    return [line.split("ms  ", 1)[1] for line in ok("request", "--count", str(count)).splitlines()]


def lab() -> Lab:
    return Lab.load(PREFIX)


ROOT_BEFORE: dict[str, str] = {}


@pytest.fixture(scope="module")
def up() -> Iterator[None]:
    require_root_tools(*LAB_TOOLS)
    ROOT_BEFORE.update(root_netns_snapshot())
    try:
        ok("up")
        yield
    finally:
        halb("down")


@pytest.fixture
def healthy(up: None) -> Iterator[None]:
    """Each test starts from, and leaves, one MASTER and one BACKUP, both serving.

    A container restart may be in the kubelet's back-off (10 s, then 20 s):
    the bound covers two of them.
    """
    assert wait_until(settled, 45, poll=0.2), status()
    yield
    halb("fault", "restore")
    assert wait_until(settled, 45, poll=0.2), status()


def test_status_json_shape(healthy: None) -> None:
    st = status()
    assert st["vip"] == "192.0.2.10" and st["client_netns"].startswith(f"{PREFIX}-")
    nodes = lb(st)
    assert set(nodes) == {"lb-1", "lb-2"}
    for n in nodes.values():
        assert set(n) >= {
            "name", "role", "netns", "address", "vrrp_state", "holds_vip", "keepalived_pid", "haproxy_pid",
        }  # fmt: skip
        # PIDs of the daemons themselves, seen from the root PID namespace, in
        # the lab host's network namespace, inside a container.
        assert os.readlink(f"/proc/{n['keepalived_pid']}/exe") == "/usr/sbin/keepalived"
        assert os.readlink(f"/proc/{n['haproxy_pid']}/exe") == "/usr/sbin/haproxy"
        ns_inode = os.stat(f"/run/netns/{n['netns']}").st_ino
        for pid in (n["keepalived_pid"], n["haproxy_pid"]):
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == ns_inode
            assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        assert {c: (p["state"], p["ready"]) for c, p in n["pod"].items()} == {
            "haproxy": ("running", True), "keepalived": ("running", True), "haproxy-watch": ("running", True),
            "vrrp-exporter": ("running", True), "haproxy-reload": ("running", True),
        }  # fmt: skip
    assert sorted(n["vrrp_state"] for n in nodes.values()) == ["BACKUP", "MASTER"]


def test_vip_serves_both_app_hosts(healthy: None) -> None:
    got = answers(6)
    assert {a.split()[0] for a in got} == {"host=app-1", "host=app-2"}
    assert all("service=shop" in a for a in got)
    blog = ok("request", "--count", "2", "--service", "blog")
    assert "service=blog" in blog


def test_haproxy_finds_the_apps_through_cluster_dns(healthy: None) -> None:
    """The cluster's haproxy.cfg, unchanged: server-template + resolvers."""
    log = (STATE / "logs" / "lb-1.haproxy.log").read_text()
    assert "('shop.web.svc.cluster.local') is UP/READY" in log
    cfg = (STATE / "render" / "haproxy" / "haproxy.cfg").read_text()
    assert "server-template pod 3 shop.web.svc.cluster.local:8080" in cfg  # 2 replicas + a surge


def test_every_lab_namespace_has_ipv6_off(healthy: None) -> None:
    """README: IPv6 off, so nothing answers or is reached over a link-local address."""
    namespaces = lab().plan.namespaces
    assert namespaces and set(namespaces) <= set(our_namespaces())
    for ns in namespaces:
        for key in ("all", "default"):
            path = f"net.ipv6.conf.{key}.disable_ipv6"
            got = subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-n", path], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert got == "1", (ns, path)


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
    before = os.readlink(log)  # the running container's own log
    ok("fault", "kill-keepalived")

    # SIGKILL leaves the VIP; the kubelet starts a new container (a new log),
    # whose entrypoint finds that VIP and removes it: the line is printed only
    # when `ip addr del` succeeded, so the stale VIP was there.
    def removed() -> bool:
        return os.readlink(log) != before and "removed stale VIP 192.0.2.10/24 from eth0" in log.read_text()

    assert wait_until(removed, 20, poll=0.1), log.read_text()
    assert wait_until(lambda: master not in holders() and len(holders()) == 1, 10, poll=0.1), status()


def test_crashed_host_comes_back_only_through_restore(healthy: None) -> None:
    (master,) = holders()
    ok("fault", "crash", "--node", master)
    st = lb(status())[master]
    assert st["vrrp_state"] == "DOWN" and st["keepalived_pid"] is None and st["haproxy_pid"] is None
    # Plugging the cable back would bring a stale VIP with no daemon behind it.
    refused = halb("fault", "link-up", "--node", master)
    assert refused.returncode == 1 and "is crashed" in refused.stderr
    ok("fault", "restore", "--node", master)
    assert not lb(status())[master]["holds_vip"]  # the reboot took the stale VIP
    assert wait_until(lambda: lb(status())[master]["vrrp_state"] == "BACKUP", 30, poll=0.2), status()


def test_handoff_loses_no_request(healthy: None) -> None:
    (master,) = holders()
    probe = lab().start_probe(100_000, 0.02, 0.2, 4.0)
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
import socket, sys
s = socket.create_connection(("192.0.2.10", 80), timeout=2)
print("open", flush=True)
sys.stdin.readline()  # the test says when: after the client's ARP entry flipped
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""


class Straddler:
    """A connection opened before a VIP switch and used after it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab().plan.client_netns, sys.executable, "-c", STRADDLER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "open"

    def send(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> subprocess.CompletedProcess[str]:
        out, err = self.proc.communicate(timeout=15)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


def test_handoff_carries_a_connection_open_across_the_switch(healthy: None) -> None:
    (master,) = holders()
    other = next(n for n in lb(status()) if n != master)
    the_lab = lab()
    conn = Straddler()
    said: list[str] = []

    def out(line: str) -> None:
        said.append(line)
        if "draining connections" in line:
            # The client follows the new MASTER now: the open connection's next
            # packets reach a host that never saw it begin.
            assert wait_until(lambda: the_lab.net.client_mac() == the_lab.net.mac(other), 2, poll=0.01)
            conn.send()

    handoff(the_lab, out)
    result = conn.result()
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("HTTP/1.1 200"), result.stderr
    # It was carried, not merely early: the new MASTER steered it to the old one.
    assert any(re.search(r"steered [1-9]\d* packet", line) for line in said), said


def test_plain_vrrp_switch_loses_such_a_connection(healthy: None) -> None:
    # The control for the test above: without steering the connection is lost. The
    # new MASTER resets it; under load (CI) the reset can lose the race with the
    # client's 2 s timeout: lost either way, never answered.
    (master,) = holders()
    other = next(n for n in lb(status()) if n != master)
    conn = Straddler()
    ok("fault", "stop-keepalived")
    assert wait_until(lambda: lab().net.client_mac() == lab().net.mac(other), 5, poll=0.02)
    conn.send()
    result = conn.result()
    assert result.returncode != 0 and not result.stdout.strip().endswith("200 OK"), result
    assert "Connection reset" in result.stderr or "TimeoutError" in result.stderr, result.stderr


def test_split_brain_heals_to_one_master(healthy: None) -> None:
    the_lab = lab()
    inject(the_lab, "partition", None)
    # Clients still reach both hosts, so both become MASTER and both serve.
    assert wait_until(lambda: len(the_lab.vip_holders()) == 2, 5.0), status()
    assert all(a.startswith("host=") for a in answers(4))
    logs = {n.name: the_lab.pods.log(n.name, "keepalived").resolve() for n in the_lab.plan.lb_nodes}
    offsets = {name: path.stat().st_size for name, path in logs.items()}
    inject(the_lab, "heal", None)

    def one_master() -> bool:
        states = [the_lab.vrrp_state(n.name) for n in the_lab.plan.lb_nodes]
        return len(the_lab.vip_holders()) == 1 and states.count("MASTER") == 1

    assert wait_until(one_master, 5.0, poll=0.02), status()
    (winner,) = the_lab.vip_holders()
    loser = next(n for n in logs if n != winner)
    loser_address = re.escape(str(the_lab.plan.node(loser).address))
    # The mechanism: the winner hears the loser's advert (vrrp_higher_prio_send_advert)
    # and answers it with GARPs (vrrp_garp_lower_prio_repeat), not the 60 s refresh.
    answered = re.compile(
        rf"Received advert from {loser_address} with lower priority \d+, ours \d+.*\n"
        r"(?:.*\n)*?.*Sending gratuitous ARP on eth0 for 192\.0\.2\.10"
    )

    def garps_answered() -> bool:
        return bool(answered.search(logs[winner].read_bytes()[offsets[winner] :].decode(errors="replace")))

    assert wait_until(garps_answered, 5.0, poll=0.05), logs[winner].read_text(errors="replace")[-3000:]
    assert wait_until(lambda: the_lab.net.client_mac() == the_lab.net.mac(winner), 5.0), (
        the_lab.net.client_mac()
    )
    assert all(a.startswith("host=") for a in answers(4))


def test_heal_without_partition_says_so_and_partition_takes_no_node(healthy: None) -> None:
    assert "nothing to heal" in ok("fault", "heal")
    refused = halb("fault", "partition", "--node", "lb-1")
    assert refused.returncode == 2 and "leave --node out" in refused.stderr


def test_fault_rejects_unknown_node(healthy: None) -> None:
    result = halb("fault", "link-down", "--node", "nope")
    assert result.returncode == 2 and "--node nope: no such host" in result.stderr


def test_second_up_says_so_and_keeps_the_first(healthy: None) -> None:
    result = halb("up")
    assert result.returncode == 2
    assert "a lab is already up" in result.stderr
    assert all(a.startswith("host=") for a in answers(2))


# --- whole-lab lifecycle (after the module's lab is down) ----------------------


def test_down_removes_everything_and_is_idempotent(up: None) -> None:
    the_lab = lab()
    kubelets = [pid for pid, _, _ in the_lab.pods.kubelets()]
    containers = [e["name"] for e in the_lab.journal.entries("container")]
    assert our_namespaces() and kubelets and containers
    ok("down")
    assert our_namespaces() == []
    assert not STATE.exists()
    for pid in kubelets:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or "Z" in stat.read_text().split(")")[1][:3]
    from halb.lab.podman import podman

    names = set(podman("ps", "--all", "--format", "{{.Names}}").stdout.split())
    assert not names & set(containers)
    assert "nothing to remove" in ok("down")


def test_down_cleans_up_after_a_killed_up() -> None:
    require_root_tools(*LAB_TOOLS)
    up = subprocess.Popen(
        [sys.executable, "-m", "halb", "lab", "up"], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: any((STATE / "pods").glob("*/status.json")), 120, poll=0.1)
        time.sleep(0.5)
        assert up.poll() is None, "`lab up` finished before it was killed: nothing was cut short"
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
    # The lab command died mid-way; its state file is lost too: the journal is enough.
    (STATE / "state.json").unlink(missing_ok=True)
    assert our_namespaces()
    ok("down")
    assert our_namespaces() == []
    assert not STATE.exists()


def test_lab_refuses_addresses_outside_test_nets() -> None:
    result = halb("up", "--stack", "prod")
    assert result.returncode == 2
    assert "outside the lab's TEST-NET ranges" in result.stderr
    assert our_namespaces() == []


def test_the_root_namespace_is_as_it_was() -> None:
    """Links, addresses, routes, rules, the nft ruleset, ip_forward: untouched by
    `up`, every fault, a handoff and `down` above (and by the demo below)."""
    require_root_tools(*LAB_TOOLS)
    assert ROOT_BEFORE, "runs after the module's lab"
    assert root_netns_snapshot() == ROOT_BEFORE


def test_demo_runs_and_leaves_the_root_namespace_as_it_was() -> None:
    require_root_tools(*LAB_TOOLS)
    before = root_netns_snapshot()
    env = {**os.environ, "HALB_LAB_PREFIX": "d" + uuid.uuid4().hex[:6]}
    result = run_halb("demo", env=env, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "measured outage" in result.stdout and "lab down: removed" in result.stdout
    assert root_netns_snapshot() == before
