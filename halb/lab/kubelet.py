"""The lab's kubelet: runs one pod's containers under podman, as a kubelet would.

    python -m halb.lab.kubelet POD_FILE

POD_FILE (JSON, written by the lab) holds the rendered DaemonSet and where
this pod runs (node, namespace, host address, volume directories, local
images). One detached process per pod:

- starts the containers in the template's order (`podspec.podman_run_args`);
- restartPolicy Always with the kubelet's numbers: a dead container is
  restarted at the next relist (`RELIST_S`), a container that dies again
  waits 10 s, then 20, 40 ... up to 300 s (CrashLoopBackOff); a container
  that ran 10 minutes starts over at the first step;
- runs readiness and liveness probes (HTTP GET to the pod's address, which
  on the host network is the node's, from inside the lab host's network
  namespace; or exec); a failed liveness probe restarts the container;
- refuses to start a container with runAsNonRoot whose user is root
  (CreateContainerConfigError), as the kubelet does;
- on SIGTERM (the pod is deleted): each container's preStop hook, then the
  image's STOPSIGNAL, SIGKILL after what is left of
  terminationGracePeriodSeconds; then the containers are removed;
- keeps Secret and ConfigMap volumes up to date: when the objects they come
  from change, the new content is written in place (atomic-writer swap) after
  the sync delay, without restarting anything, as the kubelet does.

Its view goes to the pod's status file (what `lab status` reads) and every
container it creates to the lab's journal before it is created, so `lab
down` removes exactly what was made even after this process was killed.
"""

from __future__ import annotations

import base64
import ctypes
import http.client
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from halb.lab.base import write_text_atomic
from halb.lab.journal import Journal, alive
from halb.lab.podman import PodmanError, podman
from halb.lab.podspec import (
    Container,
    PodSpec,
    Probe,
    RunContext,
    parse_daemonset,
    podman_run_args,
    secret_env,
)
from halb.lab.volumes import Objects, VolumeError, payload, write_atomic

RELIST_S = 1.0
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0
TICK_S = 0.05
MIN_STOP_GRACE_S = 2  # the kubelet's floor for what is left after preStop
CLONE_NEWNET = 0x40000000


@dataclass
class PodFile:
    """What the lab hands a kubelet for one pod."""

    daemonset: dict[str, Any]
    pod_name: str
    node: str
    netns: str  # /run/netns/NAME
    host_ip: str
    volumes: dict[str, str]
    images: dict[str, str]  # the manifest's image -> the local image to run
    resolv_conf: str
    hosts_file: str
    log_dir: str
    status_file: str
    journal: str
    labels: dict[str, str]
    nofile: int | None = None
    # The cgroup parent with an RT budget, for containers that may run real-time
    # (halb/lab/rtsched.py); None where the kernel needs none.
    rt_parent: str | None = None
    # The Secrets and ConfigMaps the pod's volumes come from; `lab apply`
    # rewrites the file, the kubelet brings the volumes up to date after
    # `sync_s` (a kubelet's sync period plus its cache's TTL, in a cluster
    # about a minute).
    objects_file: str = ""
    sync_s: float = 5.0
    # Present: delete the pod without its preStop hooks (the benchmark's
    # baseline: the behaviour before the hooks existed).
    no_hooks_file: str = ""

    @classmethod
    def load(cls, path: Path) -> PodFile:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


@dataclass
class CState:
    """One container as the kubelet sees it (also what the status file says)."""

    name: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    id: str | None = None
    podman_name: str | None = None
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    ready: bool = False
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    next_start_at: float = 0.0
    backoff_s: float = 0.0
    log: str | None = None
    attempts: int = 0
    probe_failures: dict[str, int] = field(default_factory=dict)


def setns_net(netns: str) -> None:
    """Move the calling thread (only it) into a network namespace."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


class Kubelet:
    def __init__(self, pf: PodFile) -> None:
        self.pf = pf
        self.pod: PodSpec = parse_daemonset(pf.daemonset)
        self.states = {c.name: CState(c.name) for c in self.pod.containers}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.journal = Journal(Path(pf.journal))
        self.log_dir = Path(pf.log_dir)
        self.unhealthy: set[str] = set()
        self._image_users: dict[str, str] = {}

    # --- status ------------------------------------------------------------------

    def note(self, text: str) -> None:
        # One write per line: containers stop in parallel threads, and print's
        # text and newline are two writes another thread's line can fall between.
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} kubelet[{self.pf.node}]: {text}\n")
        sys.stdout.flush()

    def write_status(self) -> None:
        with self.lock:
            data = {
                "pod": self.pf.pod_name,
                "node": self.pf.node,
                "kubelet_pid": os.getpid(),
                "terminating": self.stopping.is_set(),
                "containers": {n: asdict(s) for n, s in self.states.items()},
            }
        write_text_atomic(Path(self.pf.status_file), json.dumps(data, indent=1))

    # --- containers --------------------------------------------------------------

    def _image_user(self, image: str) -> str:
        if image not in self._image_users:
            out = podman("image", "inspect", "--format", "{{.Config.User}}", image, check=False)
            self._image_users[image] = out.stdout.strip()
        return self._image_users[image]

    def _config_error(self, c: Container, image: str) -> str | None:
        if not c.run_as_non_root:
            return None
        user = str(c.run_as_user) if c.run_as_user is not None else self._image_user(image).split(":")[0]
        if user in ("", "0", "root"):
            return "container has runAsNonRoot and image will run as root"
        if not user.isdigit():
            return f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify"
        return None

    def start(self, c: Container) -> None:
        st = self.states[c.name]
        image = self.pf.images.get(c.image)
        if image is None:
            self._failed_start(st, "ErrImageNeverPull", f"image {c.image} is not built by the lab")
            return
        err = self._config_error(c, image)
        secrets = secret_env(c, self._secrets())
        if isinstance(secrets, str):
            err, secrets = err or secrets, {}
        if err is not None:
            self._failed_start(st, "CreateContainerConfigError", err)
            return
        st.attempts += 1
        # The kubelet's PID too: a pod made again on this node never meets an old name.
        name = f"{self.pf.labels['halb.lab/id']}-{self.pf.node}-{c.name}-{os.getpid()}-{st.attempts}"
        log = self.log_dir / f"{self.pf.node}.{c.name}.{st.attempts}.log"
        ctx = RunContext(
            netns=self.pf.netns,
            node=self.pf.node,
            host_ip=self.pf.host_ip,
            pod_name=self.pf.pod_name,
            image=image,
            volumes=self.pf.volumes,
            resolv_conf=self.pf.resolv_conf,
            hosts_file=self.pf.hosts_file,
            log_path=str(log),
            name=name,
            labels={**self.pf.labels, "io.kubernetes.container.name": c.name},
            nofile=self.pf.nofile,
            rt_parent=self.pf.rt_parent,
            secret_env=secrets,
        )
        self.journal.record("container", name=name)
        try:
            cid = podman(*podman_run_args(c, self.pod, ctx), timeout=60, extra_env=secrets).stdout.strip()
            pid = int(podman("inspect", "--format", "{{.State.Pid}}", cid).stdout.strip() or 0)
        except (PodmanError, ValueError) as e:
            self._failed_start(st, "RunContainerError", str(e))
            podman("rm", "--force", "--time", "0", name, check=False)
            return
        current = self.log_dir / f"{self.pf.node}.{c.name}.log"
        tmp = current.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(log.name)
        os.replace(tmp, current)
        with self.lock:
            st.state, st.reason, st.id, st.podman_name = "running", "Started", cid, name
            st.pid, st.started_at, st.log = pid or None, time.time(), str(log)
            # Without a readiness probe a running container is ready, as in Kubernetes.
            st.ready = c.readiness is None
            st.probe_failures = {}
        self.note(f"started {c.name} ({name}, pid {pid})")
        self.write_status()

    def _failed_start(self, st: CState, reason: str, message: str) -> None:
        self.note(f"{st.name}: {reason}: {message}")
        with self.lock:
            st.state, st.reason = "waiting", f"{reason}: {message}"
            self._schedule(st, time.time(), ran_s=0.0)
        self.write_status()

    def _schedule(self, st: CState, exited_at: float, ran_s: float) -> None:
        """When the next start is due: relist, then CrashLoopBackOff."""
        if ran_s >= BACKOFF_RESET_S:
            st.backoff_s = 0.0
        if st.backoff_s == 0.0:
            st.next_start_at = exited_at + RELIST_S
            st.backoff_s = BACKOFF_INITIAL_S
        else:
            st.next_start_at = exited_at + st.backoff_s
            st.backoff_s = min(2 * st.backoff_s, BACKOFF_MAX_S)
            st.reason = f"CrashLoopBackOff ({st.next_start_at - exited_at:g} s)"

    def exited(self, c: Container) -> None:
        """Collect a dead container: exit code, removal, the next start."""
        st = self.states[c.name]
        now = time.time()  # the death, as the relist saw it: podman's time below is not the kubelet's
        code: int | None = None
        if st.id:
            out = podman("inspect", "--format", "{{.State.ExitCode}}", st.id, check=False).stdout.strip()
            code = int(out) if out.lstrip("-").isdigit() else None
            podman("rm", "--force", "--time", "0", st.id, check=False)
        with self.lock:
            ran = now - (st.started_at or now)
            st.state, st.reason, st.pid, st.ready = (
                "terminated",
                "Error" if code else "Completed",
                None,
                False,
            )
            st.last_exit_code, st.last_exit_at = code, now
            st.restarts += 1
            self._schedule(st, now, ran)
            st.state = "waiting"
        self.note(
            f"{c.name} exited with {code} after {ran:.1f} s; next start in {st.next_start_at - now:.1f} s"
        )
        self.write_status()

    def stop_container(self, c: Container, grace_s: float) -> None:
        """preStop, then the image's stop signal, SIGKILL when the grace is spent."""
        st = self.states[c.name]
        if st.id is None or st.state != "running":
            return
        began = time.monotonic()
        hooks = not (self.pf.no_hooks_file and os.path.exists(self.pf.no_hooks_file))
        if c.pre_stop and hooks:
            self.note(f"{c.name}: preStop {' '.join(c.pre_stop)}")
            hook = podman("exec", st.id, *c.pre_stop, timeout=max(1.0, grace_s), check=False)
            if hook.returncode != 0:
                self.note(f"{c.name}: preStop exited {hook.returncode}: {hook.stderr.strip()[-300:]}")
        left = max(MIN_STOP_GRACE_S, int(grace_s - (time.monotonic() - began)))
        podman("stop", "--time", str(left), st.id, timeout=left + 30, check=False)
        self.note(f"{c.name}: stopped after {time.monotonic() - began:.1f} s")

    # --- volumes -----------------------------------------------------------------

    def _secrets(self) -> dict[str, dict[str, str]]:
        """Secret name -> its data as strings, from the rendered objects."""
        out: dict[str, dict[str, str]] = {}
        for (kind, name), obj in (self._objects() or {}).items():
            if kind != "Secret":
                continue
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            out[name] = {**data, **{k: str(v) for k, v in (obj.get("stringData") or {}).items()}}
        return out

    def _objects(self) -> Objects | None:
        try:
            docs = json.loads(Path(self.pf.objects_file).read_text())
        except (OSError, ValueError):
            return None
        return {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def sync_volumes(self) -> None:
        """Secret and ConfigMap volumes brought up to date in place."""
        objects = self._objects()
        if objects is None:
            return
        for vol in self.pod.volumes:
            if vol.kind == "emptyDir" or vol.name not in self.pf.volumes:
                continue
            try:
                files = payload(vol, objects)
            except VolumeError as err:
                self.note(f"volume {vol.name}: {err}")
                continue
            target = Path(self.pf.volumes[vol.name])
            current = {
                rel: ((target / rel).read_bytes(), (target / rel).stat().st_mode & 0o777)
                for rel in files
                if (target / rel).is_file()
            }
            if current != files:
                write_atomic(target, files)
                self.note(f"volume {vol.name}: updated in place ({', '.join(sorted(files))})")

    # --- probes ------------------------------------------------------------------

    def _probe_once(self, c: Container, probe: Probe) -> bool:
        st = self.states[c.name]
        if probe.kind == "exec":
            if st.id is None:
                return False
            done = podman("exec", st.id, *probe.command, timeout=probe.timeout_s + 5, check=False)
            return done.returncode == 0
        conn = http.client.HTTPConnection(self.pf.host_ip, probe.port, timeout=probe.timeout_s)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/lab"})
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()

    def _probe_loop(self, c: Container, kind: str, probe: Probe) -> None:
        """One probe of one container, in its own thread; what it changes of the
        shared status (ready, failures, the unhealthy set) it changes under `lock`."""
        setns_net(self.pf.netns)
        seen: str | None = None
        ok_run = fail_run = 0
        while not self.stopping.is_set():
            st = self.states[c.name]
            with self.lock:
                running, cid, started_at = st.state == "running", st.id, st.started_at
            if not running or started_at is None:
                seen, ok_run, fail_run = None, 0, 0
                self.stopping.wait(TICK_S)
                continue
            if seen != cid:
                seen, ok_run, fail_run = cid, 0, 0
                delay = started_at + probe.initial_delay_s - time.time()
                if delay > 0 and self.stopping.wait(delay):
                    return
            ok = self._probe_once(c, probe)
            ok_run, fail_run = (ok_run + 1, 0) if ok else (0, fail_run + 1)
            changed = restart = False
            with self.lock:
                if kind == "readiness":
                    if ok_run >= probe.success_threshold and not st.ready:
                        st.ready = changed = True
                    elif fail_run >= probe.failure_threshold and st.ready:
                        st.ready, changed = False, True
                elif fail_run >= probe.failure_threshold and st.id == seen:
                    self.unhealthy.add(c.name)
                    restart = True
                st.probe_failures[kind] = fail_run
            if restart:
                self.note(f"{c.name}: liveness probe failed {fail_run} times; restarting")
            if changed:
                self.write_status()
            self.stopping.wait(probe.period_s)

    # --- the pod -----------------------------------------------------------------

    def _objects_mtime(self) -> float | None:
        try:
            return os.stat(self.pf.objects_file).st_mtime if self.pf.objects_file else None
        except OSError:
            return None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        self.write_status()
        for c in self.pod.containers:
            for kind, probe in (("readiness", c.readiness), ("liveness", c.liveness)):
                if probe is not None:
                    threading.Thread(target=self._probe_loop, args=(c, kind, probe), daemon=True).start()
        for c in self.pod.containers:
            if self.stopping.is_set():
                break
            self.start(c)
        seen_objects = self._objects_mtime()
        sync_at: float | None = None
        while not self.stopping.is_set():
            now = time.time()
            mtime = self._objects_mtime()
            if mtime != seen_objects:
                seen_objects, sync_at = mtime, now + self.pf.sync_s
            if sync_at is not None and now >= sync_at:
                sync_at = None
                self.sync_volumes()
            for c in self.pod.containers:
                st = self.states[c.name]
                with self.lock:
                    restart = st.state == "running" and c.name in self.unhealthy
                    self.unhealthy.discard(c.name)
                if restart:
                    self.stop_container(c, self.pod.grace_s)
                    self.exited(c)
                elif st.state == "running" and not alive(st.pid):
                    self.exited(c)
                elif st.state == "waiting" and now >= st.next_start_at and not self.stopping.is_set():
                    self.start(c)
            self.stopping.wait(TICK_S)
        self.note("pod deleted: stopping its containers")
        self.write_status()
        threads = [
            threading.Thread(target=self.stop_container, args=(c, self.pod.grace_s))
            for c in self.pod.containers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=self.pod.grace_s + 60)
        for st in self.states.values():
            if st.id:
                podman("rm", "--force", "--time", "0", st.id, check=False)
            st.state, st.pid, st.ready, st.reason = "terminated", None, False, "PodDeleted"
        self.write_status()
        return 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m halb.lab.kubelet POD_FILE", file=sys.stderr)
        return 2
    return Kubelet(PodFile.load(Path(args[0]))).run()


if __name__ == "__main__":
    sys.exit(main())
