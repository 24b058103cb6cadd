"""The local HA lab: a stack's load-balancer tier run for real in namespaces.

Creates, for a stack: a switch namespace with a bridge, one namespace per
host (its link named like the stack's interface), a client namespace; app
replicas on apps hosts; HAProxy and keepalived (through the image's own
entrypoint) on load-balancer hosts, each under a supervisor that restarts it.
Nothing is added to the root namespace. State lives in /run/halb-lab/<prefix>.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.keepalived_conf import WATCH_DIR, WATCH_FILE
from components.settings import RawConfig, Role, parse_settings
from halb.lab.probe import Attempt
from halb.lab.topology import LabPlan, plan_lab

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "images" / "keepalived"
ENTRYPOINT = IMAGE / "entrypoint.sh"
WATCHER = IMAGE / "haproxy-watch"
STATE_ROOT = Path(os.environ.get("HALB_LAB_STATE", "/run/halb-lab"))
SUPERVISE_MARK = "=== halb-supervise:"
STATE_RE = re.compile(r"Entering (\w+) STATE|(Stopping)")
DAEMONS = ("keepalived", "haproxy", "haproxy-watch")
FAULTS = (
    "kill-keepalived",
    "stop-keepalived",
    "kill-haproxy",
    "link-down",
    "link-up",
    "crash",
    "partition",
    "heal",
    "restore",
)
UP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 6.0
POLL_S = 0.05
# The kubelet notices a dead container on its next relist (~1 s) and restarts
# it; 2 s is that, rounded up. Shorter would hide a death from keepalived's check.
RESTART_DELAY_S = 2.0
# Connections begun on the old MASTER finish there: lab requests take
# milliseconds; a real edge with long keep-alives wants longer.
HANDOFF_DRAIN_S = 1.0

Out = Callable[[str], None]


class LabError(Exception):
    """Something the user can act on; the CLI prints it and exits 1."""


def lab_prefix() -> str:
    prefix = os.environ.get("HALB_LAB_PREFIX", "halb")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", prefix):
        raise LabError(
            f"HALB_LAB_PREFIX={prefix!r}: use 1-10 lower-case letters/digits, starting with a letter"
        )
    return prefix


def run(cmd: list[str], timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:g} s: {' '.join(cmd)}") from None
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def list_netns() -> list[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def alive(pid: int | None) -> bool:
    """Running, not a zombie (a dead supervisor stays one until its parent reaps it)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = POLL_S) -> bool:
    """Bounded by time and by count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / poll) + 1):
        if pred():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return pred()


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class LabState:
    """What a later command needs to find the running lab again."""

    prefix: str
    stack: str
    config: dict[str, str]
    secret_keys: list[str]
    namespaces: list[str]
    crashed: list[str]
    partitioned_at: float | None = None

    def raw(self) -> RawConfig:
        return RawConfig(self.config, frozenset(self.secret_keys))


class Lab:
    def __init__(self, plan: LabPlan, state: LabState) -> None:
        self.plan = plan
        self.state = state
        self.dir = STATE_ROOT / plan.prefix

    # --- files -------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> Path:
        return self.dir / kind / name

    def pidfile(self, node: str, daemon: str) -> Path:
        return self._path("pids", f"{node}.{daemon}.pid")

    def supfile(self, node: str, daemon: str) -> Path:
        return self._path("pids", f"{node}.{daemon}.supervisor")

    def logfile(self, node: str, daemon: str) -> Path:
        return self._path("logs", f"{node}.{daemon}.log")

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state.__dict__, indent=2))
        os.replace(tmp, self.dir / "state.json")

    @classmethod
    def create(cls, raw: RawConfig, stack: str, prefix: str) -> Lab:
        plan = plan_lab(parse_settings(raw), prefix)
        state = LabState(prefix, stack, dict(raw.values), sorted(raw.secret_keys), plan.namespaces, [])
        return cls(plan, state)

    @classmethod
    def load(cls, prefix: str) -> Lab:
        path = STATE_ROOT / prefix / "state.json"
        try:
            state = LabState(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError("no lab is up; start one with `python -m halb lab up`") from None
        except (OSError, ValueError, TypeError) as err:
            raise LabError(
                f"{path}: unreadable lab state ({err}); `python -m halb lab down` cleans up"
            ) from None
        return cls(plan_lab(parse_settings(state.raw()), prefix), state)

    # --- build -------------------------------------------------------------------

    def _network(self) -> None:
        p = self.plan
        for ns in p.namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            run(
                in_ns(
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                )
            )
        sw = p.switch_netns
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        # VRRP multicast must reach every port; no STP delay on a lab switch.
        ip("-n", sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0", "forward_delay", "0")
        ip("-n", sw, "link", "set", "br0", "up")
        hosts = [(n.netns, n.port, n.address, p.interface) for n in p.nodes]
        hosts.append((p.client_netns, "pc", p.client_address, "eth0"))
        for ns, port, addr, ifname in hosts:
            ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
            ip("-n", sw, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/{p.prefixlen}", "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
        for n in p.lb_nodes:
            # Answer ARP only for addresses on the asking interface: a VIP parked
            # on lo during a handoff must not be announced.
            run(
                in_ns(
                    n.netns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.conf.all.arp_ignore=1",
                    "net.ipv4.conf.all.arp_announce=2",
                )
            )

    def _write_configs(self) -> None:
        (self.dir / "keepalived").mkdir(parents=True, exist_ok=True)
        for kind in ("pids", "logs"):
            (self.dir / kind).mkdir(parents=True, exist_ok=True)
        for n in self.plan.lb_nodes:
            conf = self._path("keepalived", f"{n.name}.conf")
            conf.write_text(self.plan.keepalived_conf(n.name))
            conf.chmod(0o600)
        (self.dir / "haproxy.cfg").write_text(self.plan.haproxy_cfg())

    def _node_run(self, node: str) -> list[str]:
        """The node's own /run/halb and /run/keepalived, as the pod's emptyDirs."""
        base = self.dir / "nodes" / node
        return [f"{base / 'halb'}:{WATCH_DIR}", f"{base / 'keepalived'}:/run/keepalived"]

    def _spawn(
        self,
        node: str,
        daemon: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
        binds: list[str] | None = None,
    ) -> None:
        """Start `cmd` under a supervisor inside the node's namespace."""
        ns = self.plan.node(node).netns
        sup = [
            sys.executable, "-m", "halb.lab.supervise",
            "--pidfile", str(self.pidfile(node, daemon)),
            "--log", str(self.logfile(node, daemon)),
            "--restart-delay", str(RESTART_DELAY_S),
            *[f"--bind={b}" for b in binds or []],
            "--", *cmd,
        ]  # fmt: skip
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawnp(
                "ip",
                in_ns(ns, *sup),
                full_env,
                setsid=True,  # Ctrl-C in the lab command is not for the daemons
                file_actions=[(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)],
            )
        finally:
            os.close(devnull)
        self.supfile(node, daemon).write_text(f"{pid}\n")

    def _start_node(self, node: str) -> None:
        self._start_backends(node)
        if self.plan.node(node).role is Role.LOAD_BALANCER:
            self._wait_haproxy(node)
            self._start_keepalived(node)

    def _healthy(self, node: str, port: int) -> bool:
        url = f"http://127.0.0.1:{port}/healthz"
        cmd = in_ns(self.plan.node(node).netns, "curl", "-fsS", "-o", "/dev/null", "--max-time", "0.5", url)
        return run(cmd, check=False).returncode == 0

    def _wait_healthy(self, node: str, port: int, what: str) -> None:
        if not wait_until(lambda: self._healthy(node, port), 10.0, poll=0.1):
            raise LabError(f"{what} on {node} not healthy after 10 s\n" + self.log_tails())

    def _wait_haproxy(self, node: str) -> None:
        # keepalived's first check then passes, so the cold-start election is
        # decided by start order and priority, not by who loaded faster.
        self._wait_healthy(node, self.plan.settings.load_balancer.stats_port, "HAProxy")

    def _start_backends(self, node: str) -> None:
        """App replicas on an apps host; HAProxy on a load-balancer host."""
        p = self.plan
        if p.node(node).role is Role.APPS:
            for r in p.replicas:
                if r.node == node:
                    self._spawn(
                        node,
                        f"app-{r.service}-{r.index}",
                        [sys.executable, "-m", "halb.lab.app", "--node", node, "--service", r.service,
                         "--replica", str(r.index), "--port", str(r.port)],
                    )  # fmt: skip
            return
        self._spawn(node, "haproxy", ["haproxy", "-W", "-db", "-f", str(self.dir / "haproxy.cfg")])

    def _start_keepalived(self, node: str) -> None:
        p = self.plan
        if p.settings.vrrp.check.watch:
            port = str(p.settings.load_balancer.stats_port)
            self._spawn(
                node,
                "haproxy-watch",
                [sys.executable, str(WATCHER), "--port", port, "--file", WATCH_FILE],
                binds=self._node_run(node),
            )
        self._spawn(
            node,
            "keepalived",
            ["/bin/sh", str(ENTRYPOINT)],
            {
                "NODE_NAME": node,
                "KEEPALIVED_VIP": f"{p.vip}/{p.prefixlen}",
                "KEEPALIVED_INTERFACE": p.interface,
                "KEEPALIVED_CONFIG_DIR": str(self.dir / "keepalived"),
            },
            binds=self._node_run(node),
        )

    def up(self, out: Out) -> None:
        if any(ns in list_netns() for ns in self.plan.namespaces) or (self.dir / "state.json").exists():
            raise LabError(
                f"a lab is already up (prefix {self.plan.prefix!r}); see `python -m halb lab status`, "
                "or remove it with `python -m halb lab down`"
            )
        for tool in ("ip", "keepalived", "haproxy", "curl"):
            if shutil.which(tool) is None:
                raise LabError(f"`{tool}` not found; `make deps` installs it")
        self._check_fd_limit()
        started = time.monotonic()
        self.save()  # first, so `down` finds a half-built lab
        with self._undo_on_failure(out):
            out(f"creating {len(self.plan.namespaces)} network namespaces ({self.plan.prefix}-*)")
            self._network()
            self._write_configs()
            out("starting app replicas, HAProxy and keepalived (supervised)")
            # Apps first and ready, as readiness gates would have them: HAProxy
            # then starts with every server UP instead of waiting out `rise`.
            apps = [n for n in self.plan.nodes if n.role is Role.APPS]
            for n in apps:
                self._start_backends(n.name)
            for r in self.plan.replicas:
                self._wait_healthy(r.node, r.port, f"app {r.service}")
            for n in self.plan.lb_nodes:
                self._start_backends(n.name)
            by_priority = sorted(self.plan.lb_nodes, key=lambda n: -self.plan.settings.priority(n.name))
            for n in by_priority:
                self._wait_haproxy(n.name)
            # The first node alone, then the rest: with nopreempt the first
            # MASTER keeps the VIP, so the lab always starts the same way.
            first, *rest = by_priority
            self._start_keepalived(first.name)
            wait_until(lambda: self.vrrp_state(first.name) == "MASTER", 10.0)
            for n in rest:
                self._start_keepalived(n.name)
            self._wait_ready(out, started)

    def _check_fd_limit(self) -> None:
        need = 2 * self.plan.settings.load_balancer.max_conn + 64
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < need:
            raise LabError(
                f"rancher-ha-lb:loadBalancer.maxConn: {self.plan.settings.load_balancer.max_conn} needs "
                f"{need} open files, this machine allows {hard}; lower maxConn for the lab stack"
            )
        # HAProxy raises its own soft limit up to the hard one.

    @contextmanager
    def _undo_on_failure(self, out: Out) -> Iterator[None]:
        try:
            yield
        except BaseException:
            out("failed: removing what was created")
            down(self.plan.prefix, lambda _: None)
            raise

    def _wait_ready(self, out: Out, start: float) -> None:
        last_note = 0.0
        for _ in range(int(UP_TIMEOUT_S / 0.1) + 1):
            holders = self.vip_holders()
            states = {n.name: self.vrrp_state(n.name) for n in self.plan.lb_nodes}
            settled = all(st in ("MASTER", "BACKUP") for st in states.values())
            if len(holders) == 1 and settled and self.request(1, timeout=1.0)[0].ok:
                out(f"ready in {time.monotonic() - start:.1f} s")
                return
            elapsed = time.monotonic() - start
            if elapsed > UP_TIMEOUT_S:
                break
            if elapsed - last_note >= 1.0:
                out(f"  waiting: VIP holders {holders}, VRRP {states} ({elapsed:.0f} s)")
                last_note = elapsed
            time.sleep(0.1)
        raise LabError(
            f"not ready after {UP_TIMEOUT_S:g} s (VIP holders: {self.vip_holders()})\n" + self.log_tails()
        )

    def log_tails(self, lines: int = 8) -> str:
        """The end of every daemon log: the lab's logs go when it does."""
        out = []
        for log in sorted((self.dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out += [f"--- {log.name}", *tail]
        return "\n".join(out)

    # --- observe -----------------------------------------------------------------

    def holds_vip(self, node: str) -> bool:
        n = self.plan.node(node)
        out = ip("-n", n.netns, "-4", "-o", "addr", "show", "dev", self.plan.interface, check=False).stdout
        return f" {self.plan.vip}/" in out

    def vip_holders(self) -> list[str]:
        return [n.name for n in self.plan.lb_nodes if self.holds_vip(n.name)]

    def daemon_pid(self, node: str, daemon: str) -> int | None:
        return read_pid(self.pidfile(node, daemon))

    def vrrp_state(self, node: str) -> str:
        if node in self.state.crashed:
            return "DOWN"
        if self.daemon_pid(node, "keepalived") is None:
            return "STOPPED"
        try:
            lines = self.logfile(node, "keepalived").read_text(errors="replace").splitlines()
        except OSError:
            return "UNKNOWN"
        starts = [
            i for i, line in enumerate(lines) if line.startswith(SUPERVISE_MARK) and " started " in line
        ]
        found = [
            (m.group(1) or "STOPPING").upper()
            for line in lines[starts[-1] if starts else 0 :]
            if (m := STATE_RE.search(line))
        ]
        return found[-1] if found else "INIT"

    def master(self) -> str | None:
        holders = self.vip_holders()
        masters = [n for n in holders if self.vrrp_state(n) == "MASTER"]
        return (masters or holders)[0] if holders else None

    def status(self) -> dict[str, Any]:
        nodes = []
        for n in self.plan.nodes:
            lb = n.role is Role.LOAD_BALANCER
            nodes.append(
                {
                    "name": n.name,
                    "role": n.role.value,
                    "netns": n.netns,
                    "address": str(n.address),
                    "vrrp_state": self.vrrp_state(n.name) if lb else None,
                    "holds_vip": self.holds_vip(n.name) if lb else False,
                    "keepalived_pid": self.daemon_pid(n.name, "keepalived") if lb else None,
                    "haproxy_pid": self.daemon_pid(n.name, "haproxy") if lb else None,
                    "crashed": n.name in self.state.crashed,
                }
            )
        return {
            "prefix": self.plan.prefix,
            "stack": self.state.stack,
            "vip": str(self.plan.vip),
            "url": self.plan.url,
            "client_netns": self.plan.client_netns,
            "nodes": nodes,
        }

    def start_probe(
        self, count: int, interval: float, timeout: float, duration: float, host: str | None = None
    ) -> ProbeRun:
        """The client probe (halb.lab.probe) running in the client namespace."""
        port = self.plan.settings.load_balancer.http_port
        cmd = [
            sys.executable, "-m", "halb.lab.probe", "--target", f"{self.plan.vip}:{port}",
            "--count", str(count), "--interval", str(interval), "--timeout", str(timeout),
            "--duration", str(duration), "--json",
        ]  # fmt: skip
        if host:
            cmd += ["--host-header", host]
        return ProbeRun(in_ns(self.plan.client_netns, *cmd), duration)

    def request(
        self, count: int, timeout: float = 0.5, interval: float = 0.0, host: str | None = None
    ) -> list[Attempt]:
        duration = count * (interval + timeout) + 1
        return self.start_probe(count, interval, timeout, duration, host).attempts(grace_s=10)

    # --- faults ------------------------------------------------------------------

    def _lb(self, node: str | None) -> str:
        if node is None:
            master = self.master()
            if master is None:
                raise LabError("no node holds the VIP; name one with --node")
            return master
        try:
            n = self.plan.node(node)
        except KeyError:
            names = ", ".join(x.name for x in self.plan.lb_nodes)
            raise LabError(f"--node {node}: no such host (load-balancer hosts: {names})") from None
        if n.role is not Role.LOAD_BALANCER:
            raise LabError(f"--node {node}: an apps host; faults apply to load-balancer hosts")
        return node

    def _signal_daemon(self, node: str, daemon: str, sig: signal.Signals, group: bool) -> int:
        pid = self.daemon_pid(node, daemon)
        if pid is None:
            raise LabError(f"{daemon} is not running on {node}")
        if group:
            os.killpg(pid, sig)  # the daemon's own group, as a container's cgroup
        else:
            os.kill(pid, sig)
        return pid

    def _link(self, node: str, state: str) -> None:
        # The switch-side port: like pulling the cable, the host sees no carrier.
        ip("-n", self.plan.switch_netns, "link", "set", self.plan.node(node).port, state)

    def _partition(self, cut: bool) -> str:
        """Cut (or restore) every path between load-balancer hosts, and only those.

        Isolated bridge ports cannot reach each other but still reach every
        other port: VRRP stops while clients and apps still reach both hosts.
        """
        for n in self.plan.lb_nodes:
            flag = "on" if cut else "off"
            ip(
                "-n",
                self.plan.switch_netns,
                "link",
                "set",
                "dev",
                n.port,
                "type",
                "bridge_slave",
                "isolated",
                flag,
            )
        if cut:
            self.state.partitioned_at = time.time()
            self.save()
            return "partitioned: load-balancer hosts cannot hear each other; clients reach both"
        since = self.state.partitioned_at
        self.state.partitioned_at = None
        self.save()
        lasted = f" after {time.time() - since:.1f} s" if since else ""
        return f"healed{lasted}: load-balancer hosts hear each other again"

    def partitioned(self) -> bool:
        port = self.plan.lb_nodes[0].port
        out = ip("-n", self.plan.switch_netns, "-d", "link", "show", port).stdout
        return "isolated on" in out

    def _link_is_up(self, node: str) -> bool:
        out = ip("-n", self.plan.switch_netns, "-o", "link", "show", self.plan.node(node).port).stdout
        flags = out.split("<", 1)[-1].split(">", 1)[0].split(",")
        return "UP" in flags

    def _stop_supervisors(self, node: str) -> None:
        """SIGKILL supervisors first (no restart), then their daemons' groups."""
        for daemon in DAEMONS:
            sup = read_pid(self.supfile(node, daemon))
            pid = self.daemon_pid(node, daemon)
            try:
                if sup is not None:
                    os.kill(sup, signal.SIGKILL)
                    _reap(sup)
                if pid is not None:
                    os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pidfile(node, daemon).unlink(missing_ok=True)

    def fault(self, kind: str, node: str | None) -> str:
        """Inject `kind` on `node` (default: the MASTER); returns what was done."""
        if kind not in FAULTS:
            raise LabError(f"unknown fault {kind!r} (one of: {', '.join(FAULTS)})")
        if kind in ("partition", "heal"):
            return self._partition(kind == "partition")
        if kind in ("restore", "link-up") and node is None:
            # Undo whatever is broken: crashed hosts, pulled links, a partition.
            healed = self._partition(False) if kind == "restore" and self.partitioned() else None
            broken = [n.name for n in self.plan.lb_nodes
                      if n.name in self.state.crashed or not self._link_is_up(n.name)]  # fmt: skip
            done = [healed] if healed else []
            done += [self.fault(kind, name) for name in broken]
            return "; ".join(done) or "nothing to restore"
        target = self._lb(node)
        if kind == "kill-keepalived":
            pid = self._signal_daemon(target, "keepalived", signal.SIGKILL, group=True)
            return f"SIGKILL keepalived (pid {pid}) on {target}; its supervisor restarts it"
        if kind == "stop-keepalived":
            pid = self._signal_daemon(target, "keepalived", signal.SIGTERM, group=False)
            return f"SIGTERM keepalived (pid {pid}) on {target}; its supervisor restarts it"
        if kind == "kill-haproxy":
            pid = self._signal_daemon(target, "haproxy", signal.SIGKILL, group=True)
            return f"SIGKILL haproxy (pid {pid}) on {target}; its supervisor restarts it"
        if kind == "link-down":
            self._link(target, "down")
            return f"link of {target} down"
        if kind == "link-up":
            self._link(target, "up")
            return f"link of {target} up"
        if kind == "crash":
            # Daemons first, as a power loss: keepalived gets no chance to see
            # the link go and release the VIP; it stays on the dead host.
            self._stop_supervisors(target)
            self._link(target, "down")
            if target not in self.state.crashed:
                self.state.crashed.append(target)
            self.save()
            return f"crashed {target}: link down, keepalived and haproxy killed, no restarts"
        # restore
        if self.partitioned():
            self._partition(False)
        self._link(target, "up")
        if target in self.state.crashed:
            self.state.crashed.remove(target)
            self.save()
            self._start_node(target)
            return f"restored {target}: link up, daemons started (stale VIP removed by the entrypoint)"
        return f"restored {target}: link up"

    def handoff(self, out: Out) -> str:
        """Move the VIP to another healthy LB host with no failed request.

        Two things would break a request. A client whose ARP cache still
        points at the old MASTER: the old MASTER parks the VIP on `lo` (not
        announced: arp_ignore=1) and keeps serving. A connection open at the
        moment the client's ARP entry flips: its next packets reach the new
        MASTER, which has no such socket and would reset it, so the new
        MASTER forwards such mid-stream flows to the old one (`Steering`)
        until they have drained.
        """
        old = self._lb(None)
        ready = [
            n.name
            for n in self.plan.lb_nodes
            if n.name != old
            and self.vrrp_state(n.name) == "BACKUP"
            and self.daemon_pid(n.name, "haproxy") is not None
        ]
        if not ready:
            raise LabError(f"no healthy BACKUP to hand {old}'s VIP to")
        if shutil.which("nft") is None:
            raise LabError("`nft` not found (package nftables; `make deps` installs it)")
        new = ready[0]
        old_ns, vip32 = self.plan.node(old).netns, f"{self.plan.vip}/32"
        steering = Steering(self.plan, new, old, self.dir / f"handoff-{new}.nft")
        ip("-n", old_ns, "addr", "add", vip32, "dev", "lo")
        try:
            steering.install()
            out(f"{old}: VIP parked on lo; {new}: forwards mid-stream flows back to {old}")
            self._signal_daemon(old, "keepalived", signal.SIGTERM, group=False)
            if not wait_until(lambda: self.holds_vip(new), 5.0):
                raise LabError(f"{new} did not take the VIP within 5 s")
            mac = self._mac(new)
            out(f"{new}: MASTER; waiting for the client to learn {mac}")
            if not wait_until(lambda: self._client_mac() == mac, 5.0):
                raise LabError("the client did not learn the new MAC within 5 s")
            out(f"draining connections begun on {old} for {HANDOFF_DRAIN_S:g} s")
            time.sleep(HANDOFF_DRAIN_S)
            flows, packets = steering.steered()
            out(f"{new} forwarded {flows} mid-stream flow(s), {packets} packet(s), to {old}")
        finally:
            steering.remove()
            ip("-n", old_ns, "addr", "del", vip32, "dev", "lo", check=False)
        return f"handed the VIP from {old} to {new}"

    def _mac(self, node: str) -> str:
        out = ip("-n", self.plan.node(node).netns, "-o", "link", "show", self.plan.interface).stdout
        m = re.search(r"link/ether ([0-9a-f:]+)", out)
        return m.group(1) if m else ""

    def _client_mac(self) -> str:
        out = ip("-n", self.plan.client_netns, "neigh", "show", str(self.plan.vip), check=False).stdout
        m = re.search(r"lladdr ([0-9a-f:]+)", out)
        return m.group(1) if m else ""


class ProbeRun:
    """A probe started in the background; `attempts()` waits for its JSON."""

    def __init__(self, cmd: list[str], duration: float) -> None:
        self.duration = duration
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def attempts(self, grace_s: float) -> list[Attempt]:
        """Every attempt, once the probe ends (bounded: its duration + grace_s)."""
        try:
            out, err = self.proc.communicate(timeout=self.duration + grace_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise LabError(f"the probe did not finish within {self.duration + grace_s:g} s") from None
        try:
            return [Attempt(**a) for a in json.loads(out)["attempts"]]
        except (ValueError, KeyError, TypeError):
            raise LabError(f"probe failed: {err.strip()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Steering:
    """On the new MASTER during a handoff: mid-stream flows go to the old one.

    A TCP packet to the VIP that is not a SYN and belongs to no connection
    this host knows (conntrack: new) began on the old MASTER. It, and the
    rest of its flow (conntrack mark), is routed to the old MASTER, which
    still holds the VIP on `lo`; new connections are served here.
    """

    TABLE = "halb_handoff"
    MARK = "0x4842"
    ROUTE_TABLE = "4842"

    def __init__(self, plan: LabPlan, new: str, old: str, rules: Path) -> None:
        self.ns = plan.node(new).netns
        self.old_addr = str(plan.node(old).address)
        self.vip = str(plan.vip)
        self.iface = plan.interface
        self.port = plan.settings.load_balancer.http_port
        self.rules = rules

    def _sysctl(self, forward: int) -> None:
        redirects = [f"net.ipv4.conf.{i}.send_redirects=0" for i in ("all", self.iface)]
        run(in_ns(self.ns, "sysctl", "-qw", f"net.ipv4.ip_forward={forward}", *redirects))

    def install(self) -> None:
        match = f"ip daddr {self.vip} tcp dport {self.port}"
        self.rules.write_text(
            f"table ip {self.TABLE} {{\n"
            "  chain pre {\n"
            "    type filter hook prerouting priority mangle; policy accept;\n"
            f"    {match} ct mark {self.MARK} counter meta mark set {self.MARK}\n"
            f"    {match} ct state new tcp flags & (syn|ack) != syn "
            f"counter ct mark set {self.MARK} meta mark set {self.MARK}\n"
            "  }\n"
            "}\n"
        )
        # Forwarding out the interface it came in on: no ICMP redirects to
        # the client, or it would pin the VIP to the old host's MAC.
        self._sysctl(1)
        run(in_ns(self.ns, "nft", "-f", str(self.rules)))
        ip("-n", self.ns, "route", "add", f"{self.vip}/32", "via", self.old_addr, "dev", self.iface,
           "table", self.ROUTE_TABLE)  # fmt: skip
        ip("-n", self.ns, "rule", "add", "fwmark", self.MARK, "lookup", self.ROUTE_TABLE, "priority", "10")
        # The VIP is about to be local here: the marked flows must be routed
        # before the `local` table would deliver them.
        ip("-n", self.ns, "rule", "add", "lookup", "local", "priority", "20")
        ip("-n", self.ns, "rule", "del", "priority", "0")

    def steered(self) -> tuple[int, int]:
        """(flows, packets) sent back to the old MASTER so far."""
        out = run(in_ns(self.ns, "nft", "list", "table", "ip", self.TABLE), check=False).stdout
        counts = [int(n) for n in re.findall(r"counter packets (\d+)", out)]
        if len(counts) != 2:
            return 0, 0
        later, first = counts
        return first, first + later

    def remove(self) -> None:
        ip("-n", self.ns, "rule", "add", "lookup", "local", "priority", "0", check=False)
        ip("-n", self.ns, "rule", "del", "priority", "20", check=False)
        ip("-n", self.ns, "rule", "del", "priority", "10", check=False)
        ip("-n", self.ns, "route", "flush", "table", self.ROUTE_TABLE, check=False)
        run(in_ns(self.ns, "nft", "delete", "table", "ip", self.TABLE), check=False)
        self._sysctl(0)


def down(prefix: str, out: Out) -> int:
    """Remove every namespace and process of the lab; works from any state."""
    state_dir = STATE_ROOT / prefix
    names: set[str] = set()
    with suppress(OSError, ValueError, KeyError):
        names |= set(json.loads((state_dir / "state.json").read_text())["namespaces"])
    existing = list_netns()
    # Without state (a crashed `up`), the prefix is what marks our namespaces.
    ours = [ns for ns in existing if ns in names or ns.startswith(f"{prefix}-")]
    sups = [p for f in sorted(state_dir.glob("pids/*.supervisor")) if (p := read_pid(f))]
    for pid in sups:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # supervisors stop their daemons cleanly
    wait_until(lambda: not any(alive(p) for p in sups), STOP_TIMEOUT_S)
    killed = 0
    for ns in ours:
        pids = ip("netns", "pids", ns, check=False).stdout.split()
        for pid in map(int, pids):
            try:
                os.kill(pid, signal.SIGKILL)  # only processes inside our own namespaces
                killed += 1
            except ProcessLookupError:
                pass
    for pid in sups:
        _reap(pid)
    for ns in ours:
        ip("netns", "del", ns, check=False)
    shutil.rmtree(state_dir, ignore_errors=True)
    if ours or sups:
        out(
            f"lab down: removed {len(ours)} namespaces, stopped {len(sups)} supervisors, "
            f"killed {killed} leftovers"
        )
    else:
        out("lab down: nothing to remove")
    return len(ours)
