"""What ships, run as it ships: the edge pod's containers against the manifest.

Each container of the rendered edge DaemonSet runs from the image the repo
builds, with exactly the manifest's securityContext (read back from the
kernel: /proc/<pid>/status and the mount table). The defects the cluster
would have had (issue "The lab runs what ships", items 1-5) are shown
fixed here, and every capability is justified by taking it away.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import lab_settled, running_lab, stack_raw, with_overrides

from halb.lab.base import wait_until
from halb.lab.faults import inject, lab_images
from halb.lab.images import image_id
from halb.lab.lab import Lab
from halb.lab.podman import env as podman_env
from halb.lab.podman import podman
from halb.lab.podspec import parse_daemonset

pytestmark = pytest.mark.netns

CAP_BITS = {
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "SETGID": 6,
    "SYS_NICE": 23,
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab() as the_lab:
        yield the_lab


def manifest(lab: Lab) -> dict[str, Any]:
    (ds,) = lab.pods.daemonsets()
    return ds


def caps_of(pid: int) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    eff = int(re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    names = {bit: name for name, bit in CAP_BITS.items()}
    unknown = [bit for bit in range(64) if eff >> bit & 1 and bit not in names]
    assert not unknown, f"pid {pid} has capabilities {unknown} no manifest gives"
    return {names[bit] for bit in range(64) if eff >> bit & 1}


def mounts_of(pid: int) -> dict[str, set[str]]:
    """Mount point -> its options, in the process's own mount namespace."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        parts = line.split()
        out[parts[4]] = set(parts[5].split(","))
    return out


def test_every_container_runs_the_manifests_security_context(healthy: Lab) -> None:
    lab = healthy
    ds = manifest(lab)
    spec = parse_daemonset(ds)
    raw = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
    images = lab_images(lab)
    for node in lab.plan.lb_nodes:
        for c in spec.containers:
            pid = lab.daemon_pid(node.name, c.name)
            assert pid is not None, (node.name, c.name)
            sc = raw[c.name]["securityContext"]
            # Capabilities: exactly the manifest's add, everything else dropped.
            assert caps_of(pid) == set(sc["capabilities"].get("add", [])), (node.name, c.name)
            uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0].split()
            assert set(uids) == {str(sc["runAsUser"])}, (node.name, c.name)
            assert "NoNewPrivs:\t1" in Path(f"/proc/{pid}/status").read_text()
            mounts = mounts_of(pid)
            assert "ro" in mounts["/"], (node.name, c.name)  # readOnlyRootFilesystem
            for m in raw[c.name]["volumeMounts"]:
                vol = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == m["name"])
                ro = m.get("readOnly", False) or "secret" in vol or "configMap" in vol
                assert ("ro" if ro else "rw") in mounts[m["mountPath"]], (c.name, m)
            # The image the repo builds from images/, under the manifest's name.
            st = lab.pods.status(node.name)["containers"][c.name]
            running = podman("inspect", "--format", "{{.Image}}", st["id"]).stdout.strip()
            assert running == image_id(images[c.image]), (c.name, c.image)


def test_secret_and_config_volumes_as_the_kubelet_lays_them_out(healthy: Lab) -> None:
    lab = healthy
    pid = lab.daemon_pid("lb-1", "keepalived")
    conf_dir = Path(f"/proc/{pid}/root/etc/keepalived/nodes")
    assert (conf_dir / "..data").is_symlink() and os.readlink(conf_dir / "lb-1.conf") == "..data/lb-1.conf"
    assert (conf_dir / "lb-1.conf").stat().st_mode & 0o777 == 0o400  # the Secret's defaultMode
    rendered = (lab.dir / "render" / "keepalived" / "lb-1.conf").read_text()
    assert (conf_dir / "lb-1.conf").read_text() == rendered
    watch = Path(f"/proc/{pid}/root/run/halb")
    assert watch.stat().st_mode & 0o7777 == 0o1777  # the kubelet's Memory emptyDir: sticky


# --- items 1-5 of the issue, each shown fixed -------------------------------------


def test_watcher_owns_its_file_and_never_restarts(healthy: Lab) -> None:
    """Item 2: haproxy-watch (uid 65534) can write the file keepalived tracks."""
    lab = healthy
    master = lab.master()
    assert master is not None
    before = lab.pods.status(master)["containers"]["haproxy-watch"]["restarts"]
    inject(lab, "kill-haproxy", master)
    pid = lab.daemon_pid(master, "keepalived")
    assert pid is not None
    down_file = Path(f"/proc/{pid}/root/run/halb/haproxy-down")
    assert wait_until(lambda: down_file.read_text().strip() == "1", 2.0, poll=0.01)
    assert down_file.stat().st_uid == 65534 and down_file.stat().st_mode & 0o777 == 0o644
    assert wait_until(lambda: lab.vrrp_state(master) == "FAULT", 2.0, poll=0.01)
    assert wait_until(lambda: lab.daemon_pid(master, "haproxy") is not None, 15, poll=0.1)
    assert wait_until(lambda: down_file.read_text().strip() == "0", 5.0, poll=0.05)
    assert lab.pods.status(master)["containers"]["haproxy-watch"]["restarts"] == before
    log = lab.pods.log(master, "haproxy-watch").read_text()
    assert "cannot write" not in log and "PermissionError" not in log


def test_haproxy_death_moves_the_vip_through_the_watcher(healthy: Lab) -> None:
    """Item 3 with `vrrp.check.watch: true`: the event, not the poll.

    Not a stopwatch (a busy machine stretches any bound): keepalived logs a
    failed check before a poll-driven FAULT, so FAULT with no failed check
    before it is the tracked file's doing.
    """
    lab = healthy
    master = lab.master()
    assert master is not None
    other = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    log = lab.pods.log(master, "keepalived").resolve()
    offset = log.stat().st_size
    inject(lab, "kill-haproxy", master)
    assert wait_until(lambda: lab.holds_vip(other) and not lab.holds_vip(master), 3.0, poll=0.01), (
        lab.status()
    )
    since = log.read_bytes()[offset:].decode(errors="replace")
    assert "Entering FAULT STATE" in since, since
    before_fault = since.split("Entering FAULT STATE", 1)[0]
    assert "VRRP_Script(chk_haproxy) failed" not in before_fault, since
    assert "haproxy-watch: down (" in lab.pods.log(master, "haproxy-watch").read_text()


def test_pod_deletion_does_not_wait_out_the_grace(healthy: Lab) -> None:
    """Item 4: every container stops on its stop signal; none needs SIGKILL."""
    lab = healthy
    master = lab.master()
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    grace = parse_daemonset(manifest(lab)).grace_s
    began = time.monotonic()
    try:
        lab.pods.delete(node)
        took = time.monotonic() - began
    finally:
        lab.pods.start(node, lab_images(lab), lambda _: None)
    log = (lab.dir / "logs" / f"{node}.edge.kubelet.log").read_text()
    # HAProxy keeps serving for its `grace` (3 s), then exits; the rest at once.
    assert took < 10 < grace, (took, log)
    stopped = {c: float(s) for c, s in re.findall(r"kubelet\[\S+\]: (\S+): stopped after ([\d.]+) s", log)}
    assert stopped["haproxy-watch"] < 1.0 and stopped["haproxy-reload"] < 1.0, stopped
    assert stopped["keepalived"] < 5.0 and stopped["haproxy"] < 8.0, stopped


def test_deleting_the_masters_pod_hands_the_vip_over_first(healthy: Lab) -> None:
    """Item 5, and zero loss: the MASTER's pod goes (a rollout, a drain). Its
    preStop hands the VIP over (parked on lo, peers steer mid-stream flows
    back, priority-0 advert), HAProxy serves until that is done, and only then
    gets its stop signal. Not one request of a 20 ms probe fails."""
    lab = healthy
    master = lab.master()
    assert master is not None
    other = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    probe = lab.start_probe(100_000, 0.02, 0.2, 8.0)
    try:
        time.sleep(1.0)
        lab.pods.delete(master)
        attempts = probe.attempts(grace_s=20)
    finally:
        probe.stop()
        lab.pods.start(master, lab_images(lab), lambda _: None)
    assert lab.holds_vip(other)
    failed = [a for a in attempts if not a.ok]
    assert len(attempts) > 300 and failed == [], failed
    log = (lab.dir / "logs" / f"{master}.edge.kubelet.log").read_text()
    order = [m for m in re.findall(r"kubelet\[\S+\]: (\S+): stopped after", log)]
    assert order.index("keepalived") < order.index("haproxy"), log  # HAProxy last
    steer = lab.pods.log(other, "keepalived").read_text()
    assert "steering mid-stream flows to" in steer


def test_a_haproxy_stop_says_503_and_serves_until_the_vip_has_left(healthy: Lab) -> None:
    """Item 5 for HAProxy alone (a liveness restart runs its preStop too):
    /healthz answers 503 while HAProxy still serves; the VIP leaves; then it stops."""
    lab = healthy
    master = lab.master()
    assert master is not None
    other = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    hap = lab.pods.status(master)["containers"]["haproxy"]
    spec = parse_daemonset(manifest(lab))
    pre_stop = spec.container("haproxy").pre_stop
    assert pre_stop is not None
    drain = subprocess.Popen(["podman", "exec", hap["id"], *pre_stop], env=podman_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert wait_until(lambda: lab.holds_vip(other), 4.0, poll=0.01), lab.status()
        from halb.lab.base import in_ns, run

        old = f"http://{lab.plan.node(master).address}:{lab.plan.settings.load_balancer.http_port}/"
        served = run(in_ns(lab.plan.client_netns, "curl", "-fsS", "--max-time", "1", old), check=False)
        assert served.stdout.startswith("host=")  # the old node still serves, the VIP has gone
        out, _ = drain.communicate(timeout=30)
    finally:
        drain.kill()
    assert "503" in out and "the VIP has left" in out, out
    assert "haproxy-watch: down (not 200)" in lab.pods.log(master, "haproxy-watch").read_text()
    inject(lab, "kill-haproxy", master)  # a fresh HAProxy there again (not draining)


def test_haproxy_health_and_metrics_are_not_on_the_vip(healthy: Lab) -> None:
    lab = healthy
    st = lab.plan.settings.load_balancer.stats_port

    def get(addr: str) -> int:
        from halb.lab.base import in_ns, run

        cmd = [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            f"http://{addr}:{st}/healthz",
        ]
        return int(run(in_ns(lab.plan.client_netns, *cmd), check=False).stdout or 0)

    master = lab.master()
    assert master is not None
    assert get(str(lab.plan.node(master).address)) == 200  # where the kubelet and Prometheus ask
    assert get(str(lab.plan.vip)) == 0  # refused: nothing listens there


# --- each capability justified by taking it away ----------------------------------


def drop_capability(container: str, cap: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                add = c["securityContext"]["capabilities"]["add"]
                assert cap in add
                add.remove(cap)

    return edit


def with_edited_pod(lab: Lab, node: str, edit: Callable[[dict[str, Any]], None]) -> None:
    lab.pods.delete(node)
    lab.pods.start(node, lab_images(lab), lambda _: None, edit=edit)


def restore_pod(lab: Lab, node: str) -> None:
    lab.pods.delete(node)
    lab.pods.start(node, lab_images(lab), lambda _: None)
    assert wait_until(lambda: lab_settled(lab), 45, poll=0.2), lab.status()


def keepalived_log(lab: Lab, node: str) -> str:
    return lab.pods.log(node, "keepalived").read_text(errors="replace")


def test_without_net_admin_keepalived_cannot_take_the_vip(healthy: Lab) -> None:
    lab = healthy
    master = lab.master()
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    with_edited_pod(lab, node, drop_capability("keepalived", "NET_ADMIN"))
    try:
        # Its nftables table (VRRP only from peers) cannot be loaded: the container stops
        # rather than run unprotected, and the node never joins the election.
        assert wait_until(lambda: "cannot load" in keepalived_log(lab, node), 20, poll=0.1), lab.status()
        assert "Operation not permitted" in keepalived_log(lab, node)
        inject(lab, "stop-keepalived", master)
        time.sleep(2.0)
        assert not lab.holds_vip(node)
        assert lab.vrrp_state(node) != "MASTER"
    finally:
        restore_pod(lab, node)


def test_without_net_raw_keepalived_cannot_speak_vrrp(healthy: Lab) -> None:
    lab = healthy
    master = lab.master()
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    with_edited_pod(lab, node, drop_capability("keepalived", "NET_RAW"))
    try:
        # keepalived 2.2.7 says "cant open raw socket. errno=1" (EPERM), or names the errno.
        refused = ("Operation not permitted", "cant open raw socket. errno=1")
        assert wait_until(lambda: any(r in keepalived_log(lab, node) for r in refused), 20, poll=0.1), (
            keepalived_log(lab, node)[-3000:]
        )
        inject(lab, "stop-keepalived", master)
        time.sleep(2.0)
        assert not lab.holds_vip(node)
    finally:
        restore_pod(lab, node)


def test_without_setgid_the_health_check_never_runs(healthy: Lab) -> None:
    """Item 1: keepalived calls setgroups() before each vrrp_script run."""
    lab = healthy
    master = lab.master()
    assert master is not None
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)

    def no_setgid_no_watch(doc: dict[str, Any]) -> None:
        drop_capability("keepalived", "SETGID")(doc)
        spec = doc["spec"]["template"]["spec"]
        spec["containers"] = [c for c in spec["containers"] if c["name"] != "haproxy-watch"]

    with_edited_pod(lab, node, no_setgid_no_watch)
    try:
        assert wait_until(lambda: lab.vrrp_state(node) == "BACKUP", 20, poll=0.1), lab.status()
        assert wait_until(lambda: "Couldn't setgroups" in keepalived_log(lab, node), 5, poll=0.1)
        # Make it MASTER, then kill its HAProxy: the "check" keeps passing.
        inject(lab, "stop-keepalived", master)
        assert wait_until(lambda: lab.holds_vip(node), 5, poll=0.05)
        offset = len(keepalived_log(lab, node))
        inject(lab, "kill-haproxy", node)

        def since() -> str:
            return keepalived_log(lab, node)[offset:]

        # Wait on the event: three check runs after the kill, each refused
        # setgroups() and so never ran; the instance stayed MASTER through them.
        assert wait_until(lambda: since().count("Couldn't setgroups") >= 3, 10, poll=0.1), since()
        assert lab.holds_vip(node) and lab.vrrp_state(node) == "MASTER"
        assert "VRRP_Script(chk_haproxy) failed" not in since()
    finally:
        restore_pod(lab, node)


def vrrp_policy(lab: Lab, node: str) -> int:
    """The scheduling policy of keepalived's VRRP process (the daemon's child): 0 normal, 2 SCHED_RR."""
    pid = lab.daemon_pid(node, "keepalived")
    assert pid is not None
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    # keepalived asks for SCHED_RESET_ON_FORK too: its check scripts run at normal priority.
    policies = [
        os.sched_getscheduler(c) & ~os.SCHED_RESET_ON_FORK
        for c in children
        if Path(f"/proc/{c}/comm").read_text().strip() == "keepalived"
    ]
    assert len(policies) == 1, policies
    return policies[0]


def test_with_sys_nice_vrrp_runs_real_time_and_without_it_does_not(healthy: Lab) -> None:
    """SYS_NICE: keepalived's vrrp_rt_priority (SCHED_RR), so an overloaded host still advertises."""
    lab = healthy
    for n in lab.plan.lb_nodes:
        assert vrrp_policy(lab, n.name) == os.SCHED_RR
    master = lab.master()
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    with_edited_pod(lab, node, drop_capability("keepalived", "SYS_NICE"))
    try:
        assert wait_until(lambda: lab.vrrp_state(node) == "BACKUP", 20, poll=0.1), lab.status()
        assert vrrp_policy(lab, node) == os.SCHED_OTHER
    finally:
        restore_pod(lab, node)


def test_without_net_bind_service_haproxy_cannot_bind_port_80(healthy: Lab) -> None:
    lab = healthy
    master = lab.master()
    node = next(n.name for n in lab.plan.lb_nodes if n.name != master)
    with_edited_pod(lab, node, drop_capability("haproxy", "NET_BIND_SERVICE"))
    try:
        log = lab.dir / "logs" / f"{node}.haproxy.1.log"
        assert wait_until(lambda: log.exists() and "Permission denied" in log.read_text(), 20, poll=0.1)
        assert wait_until(
            lambda: lab.pods.status(node)["containers"]["haproxy"]["restarts"] >= 1, 20, poll=0.1
        )
    finally:
        restore_pod(lab, node)


# --- the poll alone, and multicast without NET_BROADCAST -----------------------


def test_haproxy_death_moves_the_vip_by_the_poll_alone() -> None:
    """Item 3 with `vrrp.check.watch: false`: the 1 s curl check must run (two misses: fall 2).

    A HAProxy the kubelet restarts within the two polls (first death: the next
    relist) may keep the VIP, and that is right; so it dies twice: the second
    death waits out CrashLoopBackOff (10 s), and only the poll can move the VIP.
    """
    raw = with_overrides(stack_raw("lab"), vrrp={"check": {"watch": False}})
    with running_lab(raw) as lab:
        names = [c.name for c in parse_daemonset(manifest(lab)).containers]
        assert names == ["haproxy", "haproxy-reload", "keepalived", "vrrp-exporter"]
        master = lab.master()
        assert master is not None
        other = next(n.name for n in lab.plan.lb_nodes if n.name != master)
        first = lab.daemon_pid(master, "haproxy")
        inject(lab, "kill-haproxy", master)
        assert wait_until(lambda: lab.daemon_pid(master, "haproxy") not in (None, first), 20, poll=0.05)
        inject(lab, "kill-haproxy", master)
        assert wait_until(
            lambda: "CrashLoopBackOff" in lab.pods.status(master)["containers"]["haproxy"]["reason"],
            5,
            poll=0.05,
        )
        assert wait_until(lambda: lab.holds_vip(other) and not lab.holds_vip(master), 4.0, poll=0.02)
        assert "Couldn't setgroups" not in keepalived_log(lab, master)
        assert re.search(r"VRRP_Script\(chk_haproxy\) failed", keepalived_log(lab, master))


def test_multicast_vrrp_needs_no_net_broadcast() -> None:
    raw = with_overrides(stack_raw("lab"), vrrp={"unicast": False})
    with running_lab(raw) as lab:
        assert "unicast_peer" not in (lab.dir / "render" / "keepalived" / "lb-1.conf").read_text()
        master = lab.master()
        assert master is not None
        assert "NET_BROADCAST" not in caps_of(lab.daemon_pid(master, "keepalived") or 0)
        other = next(n.name for n in lab.plan.lb_nodes if n.name != master)
        inject(lab, "kill-haproxy", master)
        assert wait_until(lambda: lab.holds_vip(other), 2.0, poll=0.02), lab.status()
        # The client follows the GARPs (sent without NET_BROADCAST).
        assert wait_until(lambda: lab.net.client_mac() == lab.net.mac(other), 3.0)
        assert all(a.ok for a in lab.request(3, timeout=1.0))
