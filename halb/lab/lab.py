"""The local HA lab: a stack's edge tier run for real, as the cluster would run it.

`Lab` is the facade the CLI, the demo, the benchmarks and the tests use.
What it stands on, one concern a file: the plan (topology.py), the network
(network.py), the images (images.py), the pods and their kubelet (pods.py,
kubelet.py, podspec.py, volumes.py), faults (faults.py), the planned
handoff (handoff.py), teardown (teardown.py), state and lock (state.py),
and the journal of what was made (journal.py).

`up`: render the stack (`halb render`: the manifests a `pulumi up` would
apply), build images/ with podman, build the network, start the cluster-DNS
stand-in and the app replicas, then the edge pods from the rendered
DaemonSet. The differences from a cluster are listed in docs/lab.md.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.edge_pod import BGP_STATE_FILE, HAPROXY, KEEPALIVED
from components.problems import InputError
from components.settings import RawConfig, Role, parse_settings
from halb.lab import router
from halb.lab.app import nginx_binary, nginx_conf
from halb.lab.base import LabError, LabInputError, Out, in_ns, run, wait_until
from halb.lab.certs import LabCA
from halb.lab.images import ensure_image
from halb.lab.journal import Journal, same_process
from halb.lab.limits import nofile_for
from halb.lab.metrics import VrrpView, exporter_view
from halb.lab.minted import mint_all
from halb.lab.network import Network
from halb.lab.podman import PodmanError, available
from halb.lab.pods import Pods, image_dirs
from halb.lab.probe import Attempt, ProbeError, ProbeRun
from halb.lab.prometheus import LabPrometheus
from halb.lab.rtsched import make_parent, parent_name
from halb.lab.state import ROUTER_HASHES, LabState, lab_dir
from halb.lab.topology import LabPlan, Replica, app_command, plan_lab

ROOT = Path(__file__).resolve().parents[2]
STATE_RE_MARKERS = ("Entering ", "Stopping")
UP_TIMEOUT_S = 60.0
POD_START_S = 60.0
TOOLS = ("ip", "curl", "nft", "podman", "runc", "debootstrap")


class Lab:
    def __init__(self, plan: LabPlan, state: LabState) -> None:
        self.plan = plan
        self.state = state
        self.dir = lab_dir(plan.prefix)
        self.journal = Journal(self.dir / "journal.jsonl")
        self.net = Network(plan, self.journal)
        self.pods = Pods(plan, self.dir, self.journal)
        self.prometheus = LabPrometheus(plan, self.dir)
        self.ca = LabCA(self.dir)

    @classmethod
    def create(
        cls, raw: RawConfig, stack: str, prefix: str, app: str = "python", router_hash: str = ROUTER_HASHES[0]
    ) -> Lab:
        lab_id = secrets.token_hex(3)
        plan = plan_lab(parse_settings(raw), prefix, lab_id)
        state = LabState(
            prefix, lab_id, stack, dict(raw.values), sorted(raw.secret_keys), app=app, router_hash=router_hash
        )
        return cls(plan, state)

    @classmethod
    def load(cls, prefix: str) -> Lab:
        state = LabState.load(lab_dir(prefix))
        try:
            plan = plan_lab(parse_settings(state.raw()), prefix, state.lab_id)
        except InputError as err:
            raise LabError(
                f"the running lab's stack no longer validates ({str(err).splitlines()[0]}); "
                "`halb lab down` removes it"
            ) from None
        return cls(plan, state)

    def save(self) -> None:
        self.state.save(self.dir)

    # --- up ----------------------------------------------------------------------

    def up(self, out: Out) -> None:
        """Everything of the lab, or nothing: a failure takes down what was made."""
        from halb.lab.teardown import teardown

        if (self.dir / "state.json").exists() or (self.dir / "journal.jsonl").exists():
            raise LabInputError(
                f"a lab is already up (prefix {self.plan.prefix!r}); see `halb lab status`, "
                "or remove it with `halb lab down`"
            )
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"{', '.join(missing)} not found; `make deps` installs them")
        why = available()
        if why:
            raise LabError(why)
        nofile_for(self.plan.settings)  # refuses (exit 2) before anything is made
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()  # first, so `down` finds a half-built lab
        try:
            self._render(out)
            issued = self.ca.issue_all(self.plan.settings)
            if issued:
                out(f"lab CA {self.ca.root}: issued {', '.join(issued)} (cert-manager's stand-in)")
            manifests = self.pods.manifests()
            minted = mint_all(self.dir, manifests)
            if minted:
                out(f"minted {', '.join(minted)} (pulumi_random's stand-in)")
            specs = self.pods.specs()  # refuse what the lab cannot run before making anything
            prometheus = self.prometheus.prepare(manifests)
            images = self._images(out, {c.image for _, s in specs for c in s.containers})
            ids = f"{self.plan.prefix}-{self.plan.lab_id}"
            out(f"creating {len(self.plan.namespaces)} network namespaces ({ids}-*)")
            self.net.build()
            # keepalived's real-time VRRP process only: a bgp pod has none.
            if not self.plan.bgp and make_parent(self.plan.prefix, len(self.plan.lb_nodes), self.journal):
                out(
                    f"cgroup {parent_name(self.plan.prefix)}: an RT budget for keepalived "
                    "(this kernel schedules RT per cgroup)"
                )
            out("starting the cluster DNS stand-in and the app replicas")
            self._start_dns()
            self._start_apps()
            if prometheus and self.plan.prometheus_netns:
                out(f"starting Prometheus ({self.plan.prometheus_url} from the client namespace)")
                self._spawn(self.plan.prometheus_netns, "prometheus", prometheus)
            for r in self.plan.replicas:
                self._wait_app(r)
            if self.plan.bgp:
                self._up_bgp(out, images, started)
                return
            # The first node alone, then the rest: with nopreempt the first
            # MASTER keeps the VIP, so the lab always starts the same way.
            first, *rest = self.by_priority()
            self.pods.start(first.name, images, out)
            if not wait_until(lambda: self.vrrp_state(first.name) == "MASTER", POD_START_S, poll=0.1):
                raise LabError(
                    f"{first.name} did not become MASTER in {POD_START_S:g} s\n" + self.log_tails()
                )
            for n in rest:
                self.pods.start(n.name, images, out)
            self._wait_ready(out, started, self._vrrp_settled, self._vrrp_shown)
            self.prometheus.wait_ready(out)
        except BaseException:
            out("failed: removing what was created")
            teardown(self.plan.prefix, lambda _: None)
            raise

    def _up_bgp(self, out: Out, images: dict[str, str], started: float) -> None:
        """bgp: the router first, then every host's pod at once (no election to order):
        ready when the router routes the VIP to every host and the VIP answers."""
        out(f"starting the lab's upstream router (FRR: ECMP with an L4 hash, {self.state.router_hash}; BFD)")
        router.start(self.plan, ensure_image("frr", out), self.dir, self.journal, self.state.router_hash)
        for n in self.plan.lb_nodes:
            self.pods.start(n.name, images, out)
        every = sorted(n.name for n in self.plan.lb_nodes)
        self._wait_ready(
            out,
            started,
            lambda: router.hop_nodes(self.plan) == every,
            lambda: f"the router's next hops for the VIP {router.hop_nodes(self.plan)}",
            lambda: "\n--- router\n" + router.logs(self.plan)[-1500:],
        )
        self.prometheus.wait_ready(out)

    def by_priority(self) -> list[Any]:
        return sorted(self.plan.lb_nodes, key=lambda n: -self.plan.settings.priority(n.name))

    def _render(self, out: Out) -> None:
        from halb.render import render_files  # imports Pulumi

        out(f"rendering stack {self.state.stack} (what `pulumi up` would apply)")
        files = render_files(self.state.raw(), self.state.stack)
        for rel, text in files.items():
            path = self.dir / "render" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _images(self, out: Out, refs: set[str]) -> dict[str, str]:
        try:
            dirs = image_dirs(self.plan, refs)
            built = {d: ensure_image(d, out) for d in sorted(set(dirs.values()))}
        except PodmanError as err:
            raise LabError(str(err)) from None
        return {ref: built[d] for ref, d in dirs.items()}

    def _spawn(self, netns: str, name: str, cmd: list[str]) -> None:
        """A supervised process (not a pod) inside a lab namespace."""
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.dir / "pids").mkdir(parents=True, exist_ok=True)
        sup = [
            sys.executable, "-m", "halb.lab.supervise",
            "--pidfile", str(self.dir / "pids" / f"{name}.pid"),
            "--log", str(self.dir / "logs" / f"{name}.log"),
            "--restart-delay", "1",
            "--", *cmd,
        ]  # fmt: skip
        null = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawnp(
                "ip", in_ns(netns, *sup), dict(os.environ), setsid=True,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)],
            )  # fmt: skip
        finally:
            os.close(null)
        self.journal.record_process("supervisor", pid, name=name)

    def _start_dns(self) -> None:
        import json

        records = self.dir / "dns-records.json"
        records.write_text(json.dumps(self.plan.dns_records(), indent=1))
        self._spawn(self.plan.dns_netns, "dns", [sys.executable, "-m", "halb.lab.dns",
                    "--records", str(records), "--listen", str(self.plan.dns_address)])  # fmt: skip

    def _start_apps(self, node: str | None = None) -> None:
        for r in self.plan.replicas:
            if node is None or r.node == node:
                name = f"{r.node}.app-{r.service}-{r.index}"
                if self.state.app == "nginx":
                    conf = self.dir / "apps" / f"{name}.conf"
                    conf.parent.mkdir(parents=True, exist_ok=True)
                    conf.write_text(
                        nginx_conf(r.node, r.service, r.index, str(r.address), r.port, conf.parent)
                    )
                    cmd = [nginx_binary(), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
                else:
                    cmd = app_command(self.plan.settings, r, sys.executable)
                self._spawn(self.plan.node(r.node).netns, name, cmd)

    def _http_ok(self, node: str, address: str, port: int, path: str = "/healthz") -> bool:
        url = f"http://{address}:{port}{path}"
        cmd = in_ns(self.plan.node(node).netns, "curl", "-fsS", "-o", "/dev/null", "--max-time", "0.5", url)
        return run(cmd, check=False).returncode == 0

    def _tcp_ok(self, node: str, address: str, port: int) -> bool:
        probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=0.5).close()"
        return (
            run(in_ns(self.plan.node(node).netns, sys.executable, "-c", probe), check=False).returncode == 0
        )

    def _wait_app(self, r: Replica) -> None:
        """Plain HTTP replicas answer /healthz; a TCP echo or a PROXY-v2 listener
        (which closes a header-less request) is ready once it accepts."""
        svc = next(x for x in self.plan.settings.services if x.name == r.service)
        if svc.http and not svc.proxy_protocol:
            self._wait_http(r.node, str(r.address), r.port, f"app {r.service} replica {r.index}")
        elif not wait_until(lambda: self._tcp_ok(r.node, str(r.address), r.port), 15.0, poll=0.1):
            raise LabError(
                f"app {r.service} replica {r.index} on {r.node} not accepting after 15 s\n" + self.log_tails()
            )

    def _wait_http(self, node: str, address: str, port: int, what: str) -> None:
        if not wait_until(lambda: self._http_ok(node, address, port), 15.0, poll=0.1):
            raise LabError(f"{what} on {node} not answering after 15 s\n" + self.log_tails())

    def _wait_ready(
        self,
        out: Out,
        start: float,
        settled: Callable[[], bool],
        shown: Callable[[], str],
        more: Callable[[], str] = lambda: "",
    ) -> None:
        """Until `settled()` and a request through the VIP answers; `shown()` says what it waits on."""
        last_note = 0.0
        for _ in range(int(UP_TIMEOUT_S / 0.2) + 1):
            if settled() and self.request(1, timeout=1.0)[0].ok:
                out(f"ready in {time.monotonic() - start:.1f} s")
                return
            elapsed = time.monotonic() - start
            if elapsed > UP_TIMEOUT_S + 30:
                break
            if elapsed - last_note >= 2.0:
                out(f"  waiting: {shown()} ({elapsed:.0f} s)")
                last_note = elapsed
            time.sleep(0.2)
        raise LabError(f"not ready ({shown()})\n" + self.log_tails() + more())

    def _vrrp_settled(self) -> bool:
        states = [self.vrrp_state(n.name) for n in self.plan.lb_nodes]
        return len(self.vip_holders()) == 1 and all(st in ("MASTER", "BACKUP") for st in states)

    def _vrrp_shown(self) -> str:
        states = {n.name: self.vrrp_state(n.name) for n in self.plan.lb_nodes}
        return f"VIP holders {self.vip_holders()}, VRRP {states}"

    def log_tails(self, lines: int = 8) -> str:
        """The end of every log: the lab's logs go when it does."""
        out = []
        for log in sorted((self.dir / "logs").glob("*.log")):
            if log.is_symlink():
                continue
            try:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out += [f"--- {log.name}", *tail]
        return "\n".join(out)

    # --- observe -----------------------------------------------------------------

    def holds_vip(self, node: str) -> bool:
        return self.net.holds_vip(node)

    def vip_holders(self) -> list[str]:
        return [n.name for n in self.plan.lb_nodes if self.holds_vip(n.name)]

    def daemon_pid(self, node: str, container: str) -> int | None:
        """The root-namespace PID of a container's first process (the daemon)."""
        return self.pods.container_pid(node, container)

    def vrrp_state(self, node: str) -> str:
        return self.vrrp(node).state

    def vrrp(self, node: str) -> VrrpView:
        """keepalived's state as the node's vrrp-exporter reports it (what a
        cluster's Prometheus sees); keepalived's log only when it does not answer."""
        if node in self.state.crashed:
            return VrrpView("DOWN", "crashed host")
        view, why = exporter_view(self.plan, node)
        return view or VrrpView(self._log_state(node), f"keepalived log ({why})")

    def _log_state(self, node: str) -> str:
        """keepalived's last state in its running container's log."""
        if self.daemon_pid(node, KEEPALIVED) is None:
            return "STOPPED"
        try:
            lines = self.pods.log(node, KEEPALIVED).read_text(errors="replace").splitlines()
        except OSError:
            return "UNKNOWN"
        for line in reversed(lines):
            if "Entering " in line and " STATE" in line:
                return line.split("Entering ", 1)[1].split(" STATE", 1)[0].strip().upper()
            if "Stopping" in line:
                return "STOPPING"
        return "INIT"

    def master(self) -> str | None:
        holders = [n for n in self.vip_holders() if n not in self.state.crashed]
        masters = [n for n in holders if self.vrrp_state(n) == "MASTER"]
        return (masters or holders)[0] if holders else None

    def status(self) -> dict[str, Any]:
        nodes = []
        for n in self.plan.nodes:
            lb = n.role is Role.LOAD_BALANCER
            vrrp = self.vrrp(n.name) if lb else None
            entry: dict[str, Any] = {
                "name": n.name,
                "role": n.role.value,
                "netns": n.netns,
                "address": str(n.address),
                "vrrp_state": vrrp.state if vrrp else None,
                "vrrp_source": vrrp.source if vrrp else None,
                "become_master_total": vrrp.become_master_total if vrrp else None,
                "holds_vip": self.holds_vip(n.name) if lb else False,
                "keepalived_pid": self.daemon_pid(n.name, KEEPALIVED) if lb else None,
                "haproxy_pid": self.daemon_pid(n.name, HAPROXY) if lb else None,
                "crashed": n.name in self.state.crashed,
            }
            if lb and self.plan.bgp:
                entry["bgp"] = self.bgp_state(n.name)
            if lb:
                entry["drained"] = n.name in self.state.drained
                entry["haproxy_config"] = self.pods.reload_status(n.name)
                entry["tls"] = self.pods.tls_status(n.name)
                pod = self.pods.status(n.name)
                entry["pod"] = {
                    name: {k: c.get(k) for k in ("state", "ready", "restarts", "reason", "pid")}
                    for name, c in pod.get("containers", {}).items()
                }
            nodes.append(entry)
        return {
            "prefix": self.plan.prefix,
            "stack": self.state.stack,
            "vip": str(self.plan.vip),
            "url": self.plan.url,
            "client_netns": self.plan.client_netns,
            "tls_ca": str(self.ca.root) if self.plan.settings.tls_services else None,
            "prometheus": self.prometheus.status(),
            "nodes": nodes,
            "router_next_hops": router.hop_nodes(self.plan) if self.plan.bgp else None,
            "router_hash": self.state.router_hash if self.plan.bgp else None,
        }

    def bgp_state(self, node: str) -> dict[str, Any]:
        """What the node's halb-bgp says it announces, and why."""
        import json

        try:
            data: dict[str, Any] = json.loads(self.pods.shared_path(node, BGP_STATE_FILE).read_text())
        except (OSError, ValueError):
            return {"announced": None, "reason": "no state yet"}
        return data

    def start_probe(
        self,
        count: int,
        interval: float,
        timeout: float,
        duration: float,
        host: str | None = None,
        tls: bool = False,
    ) -> ProbeRun:
        """The client probe (halb.lab.probe) running in the client namespace; `tls`:
        to the HTTPS port, verified against the lab's CA (SNI: `host`)."""
        lb = self.plan.settings.load_balancer
        port = lb.https_port if tls else lb.http_port
        cmd = [
            sys.executable, "-m", "halb.lab.probe", "--target", f"{self.plan.vip}:{port}",
            "--count", str(count), "--interval", str(interval), "--timeout", str(timeout),
            "--duration", str(duration), "--json",
        ]  # fmt: skip
        if host:
            cmd += ["--host-header", host]
        if tls:
            cmd += ["--tls", "--cafile", str(self.ca.root)]
        return ProbeRun(in_ns(self.plan.client_netns, *cmd), duration, dict(os.environ))

    def request(
        self, count: int, timeout: float = 0.5, interval: float = 0.0, host: str | None = None
    ) -> list[Attempt]:
        duration = count * (interval + timeout) + 1
        try:
            return self.start_probe(count, interval, timeout, duration, host).attempts(grace_s=10)
        except ProbeError as err:
            raise LabError(str(err)) from None

    def supervisors(self) -> list[tuple[int, str]]:
        """(pid, name) of this lab's supervised processes that still run."""
        return [
            (int(e["pid"]), str(e.get("name")))
            for e in self.journal.entries("supervisor")
            if isinstance(e.get("pid"), int) and same_process(int(e["pid"]), e.get("start"))
        ]
