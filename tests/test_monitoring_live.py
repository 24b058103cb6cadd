"""The exporter against real keepalived, and the rules' HAProxy names against real HAProxy.

Two hosts (network namespaces, one veth, the lab stack's TEST-NET
addresses), each with a pod-like mount namespace: /run and /run/halb are
tmpfs mode 1777, as the kubelet mounts a `medium: Memory` emptyDir.
keepalived runs through the image's entrypoint with the rendered config as
uid 0 with exactly NET_ADMIN, NET_RAW and SETGID (no DAC_OVERRIDE,
no FOWNER), the exporter as uid 65534 with no capability, both with
no_new_privs: the DaemonSet's security contexts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, require_root_tools, settings_of
from test_monitoring import all_exprs, haproxy_metric_names

from components.edge_pod import HAPROXY_DOWN_FILE, NOTIFY_FIFO
from components.haproxy_cfg import StaticBackend, StaticServer, render_haproxy_cfg
from components.keepalived import CAPABILITIES
from components.keepalived_conf import render_keepalived_conf
from components.monitoring import exporter_args
from halb.lab.base import wait_until as lab_wait_until
from halb.lab.metrics import Samples, parse

pytestmark = pytest.mark.netns

S = settings_of("lab")
ENTRYPOINT = ROOT / "images" / "keepalived" / "entrypoint.sh"
EXPORTER = ROOT / "images" / "keepalived" / "vrrp-exporter"
# The keepalived container's set (components/keepalived.py), as the pod gets it.
CAP_BIT = {"NET_ADMIN": 12, "NET_RAW": 13, "SETGID": 6, "SYS_NICE": 23}
VRRP_CAPS = sum(1 << CAP_BIT[c] for c in CAPABILITIES)
KEEPALIVED_CAPS = [
    "--bounding-set",
    "-all," + ",".join(f"+{c.lower()}" for c in CAPABILITIES),
    "--inh-caps",
    "-all",
]
NOBODY = [
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    "--bounding-set",
    "-all",
    "--inh-caps",
    "-all",
]
LABELS = {"iname": "VI_51", "interface": "eth0", "vrid": "51"}


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=check)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    return lab_wait_until(cond, timeout, poll=0.05)


class Host:
    """One load-balancer host: its network namespace and a pod's mount namespace."""

    def __init__(self, name: str, netns: str, tmp: Path) -> None:
        self.name, self.netns, self.tmp = name, netns, tmp
        self.address = str(S.address(name))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # The pod: a private mount namespace inside the host's network namespace.
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "sleep", "600"],
            start_new_session=True,
        )
        mine = os.readlink("/proc/self/ns/mnt")
        assert wait_until(lambda: self._mnt_ns() not in ("", mine), 5), "no pod mount namespace"
        # /run (keepalived's pid files) and /run/halb (shared with the exporter) as the kubelet mounts them.
        self.enter(
            "sh", "-c",
            "mount -t tmpfs -o mode=1777,size=4m tmpfs /run && mkdir /run/halb "
            "&& mount -t tmpfs -o mode=1777,size=1m tmpfs /run/halb",
        )  # fmt: skip
        (tmp / "conf").mkdir()
        (tmp / "conf" / f"{name}.conf").write_text(render_keepalived_conf(S, name))

    def _mnt_ns(self) -> str:
        # `ip netns exec` and `unshare` each exec the next: the holder ends as `sleep`.
        try:
            if Path(f"/proc/{self.holder.pid}/comm").read_text().strip() != "sleep":
                return ""
            return os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        except OSError:
            return ""

    def nsenter(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    def enter(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.nsenter(), *cmd, check=check)

    def start(self, what: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
        with open(self.tmp / f"{what}.log", "ab") as log:
            proc = subprocess.Popen(
                [*self.nsenter(), *cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ["PATH"], **(env or {})},
                start_new_session=True,
            )
        self.procs[what] = proc
        return proc.pid

    def start_health(self) -> int:
        """HAProxy's /healthz stand-in, so keepalived's (real, running) check passes."""
        (self.tmp / "www").mkdir(exist_ok=True)
        (self.tmp / "www" / "healthz").write_text("ok\n")
        port = str(S.load_balancer.stats_port)
        cmd = [
            "python3",
            "-m",
            "http.server",
            port,
            "--bind",
            "127.0.0.1",
            "--directory",
            str(self.tmp / "www"),
        ]
        pid = self.start("health", cmd)
        assert wait_until(lambda: self.enter("curl", "-fsS", f"http://127.0.0.1:{port}/healthz", check=False)
                          .returncode == 0), "no health stand-in"  # fmt: skip
        return pid

    def start_keepalived(self) -> int:
        if "health" not in self.procs:
            self.start_health()
        env = {
            "NODE_NAME": self.name,
            "KEEPALIVED_VIP": str(S.vip.address),
            "KEEPALIVED_INTERFACE": S.vip.interface,
            "KEEPALIVED_CONFIG_DIR": str(self.tmp / "conf"),
        }
        cmd = ["setpriv", *KEEPALIVED_CAPS, "--no-new-privs", "--", "/bin/sh", str(ENTRYPOINT)]
        return self.start("keepalived", cmd, env)

    def start_exporter(self) -> int:
        args = exporter_args(S, [self.address, "127.0.0.1"])[1:]
        cmd = ["setpriv", *NOBODY, "--no-new-privs", "--", "/usr/bin/python3", str(EXPORTER), *args]
        return self.start("exporter", cmd)

    def stop(self, what: str, sig: int = signal.SIGTERM) -> None:
        """SIGTERM to the main process, as the kubelet stops a container; SIGKILL
        to all its processes, as an OOM kill or a runtime's kill of the container."""
        proc = self.procs.pop(what)
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        proc.wait(timeout=10)

    def metrics(self, address: str | None = None) -> Samples:
        url = f"http://{address or self.address}:{S.vrrp.metrics_port}/metrics"
        result = self.enter("curl", "-fsS", "--max-time", "2", url, check=False)
        return parse(result.stdout) if result.returncode == 0 else {}

    def expect(self, timeout: float = 10.0, **want: float) -> None:
        """Wait until the metrics say `want` (state=, master=, vip=, up=, haproxy=)."""
        names = {
            "state": ("keepalived_vrrp_state", LABELS),
            "master": ("keepalived_become_master_total", {"iname": "VI_51"}),
            "vip": ("halb_vip_held", {"vip": str(S.vip.ip)}),
            "up": ("keepalived_up", {}),
            "haproxy": ("halb_haproxy_up", {}),
        }

        def now() -> dict[str, float | None]:
            m = self.metrics()
            return {k: m.get((names[k][0], tuple(sorted(names[k][1].items())))) for k in want}

        ok = wait_until(lambda: now() == want, timeout)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))
        assert ok, f"{self.name}: want {want}, have {now()}\n{logs}"

    def fifo(self) -> tuple[int, str, str]:
        uid, mode, kind = self.enter("stat", "-c", "%u %a %F", NOTIFY_FIFO).stdout.split(maxsplit=2)
        return int(uid), mode, kind.strip()

    def fifo_exists(self) -> bool:
        return self.enter("test", "-p", NOTIFY_FIFO, check=False).returncode == 0

    def close(self) -> None:
        for what in list(self.procs):
            proc = self.procs.pop(what)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(timeout=10)


def cap_eff(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no CapEff for {pid}")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Host]]:
    require_root_tools("ip", "keepalived", "setpriv", "nsenter", "unshare", "curl")
    if run("/usr/bin/python3", "-c", "import prometheus_client", check=False).returncode != 0:
        pytest.skip("needs Debian's python3-prometheus-client (make deps installs it)")
    tag = uuid.uuid4().hex[:6]
    names = {n: f"halbt-{tag}-{i}" for i, n in enumerate(S.lb_nodes)}
    made: dict[str, Host] = {}
    try:
        for ns in names.values():
            run("ip", "netns", "add", ns)
        (_, na), (_, nb) = names.items()
        # Both ends created in place: nothing touches the root namespace.
        run("ip", "-n", na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nb)
        for node, ns in names.items():
            addr = f"{S.address(node)}/{S.vip.address.network.prefixlen}"
            run("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            (tmp_path / node).mkdir()
            made[node] = Host(node, ns, tmp_path / node)
        yield made
    finally:
        for h in made.values():
            h.close()
        for ns in names.values():
            run("ip", "netns", "del", ns, check=False)


def test_exporter_follows_real_keepalived_through_failovers(hosts: dict[str, Host]) -> None:
    lb1, lb2 = hosts["lb-1"], hosts["lb-2"]

    # lb-1: the exporter first, so it creates the FIFO (uid 65534, 0666) ...
    lb1.start_exporter()
    assert wait_until(lb1.fifo_exists)
    assert lb1.fifo() == (65534, "666", "fifo")
    ka1 = lb1.start_keepalived()
    # What haproxy-watch writes once HAProxy answers (no HAProxy runs here).
    for h in (lb1, lb2):
        h.enter("sh", "-c", f"echo 0 > {HAPROXY_DOWN_FILE}")
    # ... and keepalived, root without DAC_OVERRIDE, opens it: events flow.
    lb1.expect(state=2, master=1, vip=1, up=1, haproxy=1)
    assert cap_eff(ka1) == VRRP_CAPS

    # lb-2: keepalived first; it creates the FIFO, root's, 0644 (umask 0133): readable by 65534.
    lb2.start_keepalived()
    assert wait_until(lb2.fifo_exists)
    assert lb2.fifo() == (0, "644", "fifo")
    lb2.start_exporter()
    lb2.expect(state=1, master=0, vip=0, up=1, haproxy=1)

    # Served on the node's address and on loopback, not on the VIP.
    assert lb2.metrics(lb1.address) and lb1.metrics("127.0.0.1")
    vip_url = f"http://{S.vip.ip}:{S.vrrp.metrics_port}/metrics"
    refused = lb2.enter("curl", "-sS", "--max-time", "2", vip_url, check=False)
    assert refused.returncode == 7, refused  # connection refused by the holder, lb-1

    # HAProxy down on lb-1 (haproxy-watch's file): FAULT there, lb-2 takes over.
    lb1.enter("sh", "-c", f"echo 1 > {HAPROXY_DOWN_FILE}")
    lb1.expect(state=3, vip=0, haproxy=0)
    lb2.expect(state=2, master=1, vip=1)
    lb1.enter("sh", "-c", f"echo 0 > {HAPROXY_DOWN_FILE}")
    lb1.expect(state=1, master=1, vip=0, haproxy=1)  # nopreempt: it stays BACKUP

    # keepalived on lb-2 stopped (SIGTERM: STOP, priority-0 advert): lb-1 again.
    lb2.stop("keepalived")
    lb2.expect(state=0, up=0, vip=0)
    lb1.expect(state=2, master=2, vip=1, up=1)

    # The exporter restarts; its state file in the emptyDir keeps the count.
    lb1.stop("exporter")
    lb1.start_exporter()
    lb1.expect(state=2, master=2, vip=1, up=1)

    # keepalived SIGKILLed: the kernel closes its end of the FIFO at once; the
    # VIP stays (nobody removed it), and so does the last announced state.
    lb1.stop("keepalived", signal.SIGKILL)
    lb1.expect(timeout=1.5, up=0, vip=1, state=2)


def test_rules_and_dashboard_haproxy_metrics_exist_in_haproxy(tmp_path: Path) -> None:
    """Every haproxy_* name the alerts and panels use is one HAProxy 2.6 serves."""
    require_root_tools("ip", "haproxy", "curl")
    ns = f"halbt-{uuid.uuid4().hex[:8]}"
    backends = {svc.name: StaticBackend((StaticServer("a", "127.0.0.1", svc.port),)) for svc in S.services}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(S, backends))
    run("ip", "netns", "add", ns)
    proc = None
    try:
        run("ip", "-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "env", "HOST_IP=127.0.0.1", "haproxy", "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{S.load_balancer.stats_port}/metrics"

        def scrape() -> str:
            r = run("ip", "netns", "exec", ns, "curl", "-fsS", "--max-time", "2", url, check=False)
            return r.stdout if r.returncode == 0 else ""

        assert wait_until(lambda: bool(scrape()), 10)
        served = {name for name, _ in parse(scrape())}
        used = haproxy_metric_names(all_exprs(S))
        assert len(used) >= 5
        assert used <= served, used - served
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        run("ip", "netns", "del", ns, check=False)
