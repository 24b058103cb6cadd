"""The edge pods of the lab: the rendered DaemonSet on each load-balancer host.

`halb render`'s manifests are the source: each DaemonSet's pod template is
scheduled onto the lab hosts its required node affinity admits (hosts carry
the `role` label HostLabels gives them), its Secret and ConfigMap volumes
are filled from the rendered objects, and one kubelet process per pod
(halb/lab/kubelet.py) runs it under podman. The images are the ones the
lab builds from images/ (halb/lab/images.py), run under the manifest's name.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from components.edge_pod import (
    HAPROXY_RUN_DIR,
    HAPROXY_RUN_VOLUME,
    RELOAD_STATUS,
    SHARED_DIR,
    SHARED_VOLUME,
    TLS_STATUS_FILE,
)
from components.edge_pod import NAME as EDGE
from halb.lab.base import LabError, Out, wait_until, write_text_atomic
from halb.lab.certs import lab_objects
from halb.lab.journal import Journal, alive, same_process
from halb.lab.kubelet import PodFile
from halb.lab.limits import nofile_for
from halb.lab.podman import podman
from halb.lab.podspec import PodSpec, PodSpecError, parse_daemonset
from halb.lab.rtsched import parent as rt_parent
from halb.lab.topology import LabPlan
from halb.lab.volumes import prepare, unmount

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = "objects.json"
NO_HOOKS = "no-hooks"
# Which project image stands behind each image setting.
IMAGE_DIRS = {"load_balancer": "haproxy", "keepalived": "keepalived", "frr": "frr"}
KILL_WAIT_S = 10.0


def sync_delay_s() -> float:
    """After how long the lab's kubelet brings a changed Secret/ConfigMap volume up
    to date (HALB_LAB_SYNC_S, default 5 s). A cluster's kubelet: its sync period
    (1 min) plus the object cache's TTL, so up to about a minute and a half."""
    try:
        return max(0.0, float(os.environ.get("HALB_LAB_SYNC_S", "5")))
    except ValueError:
        return 5.0


def repository(ref: str) -> str:
    """`reg/x/y:tag` or `reg/x/y@sha256:..` -> `reg/x/y`."""
    ref = ref.split("@", 1)[0]
    head, _, tail = ref.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def image_dirs(plan: LabPlan, refs: set[str]) -> dict[str, str]:
    """The manifest's image -> the images/ directory the lab builds it from."""
    s = plan.settings
    by_repo = {
        repository(s.load_balancer.image): IMAGE_DIRS["load_balancer"],
        repository(s.keepalived.image): IMAGE_DIRS["keepalived"],
        repository(s.frr.image): IMAGE_DIRS["frr"],
    }
    out = {}
    for ref in sorted(refs):
        d = by_repo.get(repository(ref))
        if d is None:
            raise LabError(
                f"image {ref}: not one the project builds from images/; the lab runs no other image"
            )
        out[ref] = d
    return out


class Pods:
    def __init__(self, plan: LabPlan, lab_dir: Path, journal: Journal) -> None:
        self.plan = plan
        self.dir = lab_dir
        self.journal = journal

    # --- the rendered manifests --------------------------------------------------

    def manifests(self) -> list[dict[str, Any]]:
        text = (self.dir / "render" / "manifests.yaml").read_text()
        return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]

    def daemonsets(self) -> list[dict[str, Any]]:
        return [d for d in self.manifests() if d.get("kind") == "DaemonSet"]

    def objects(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        """The API server's Secrets and ConfigMaps: the rendered ones, and those the
        lab's cert-manager stand-in issued (halb/lab/certs.py)."""
        docs = [d for d in self.manifests() if d.get("kind") in ("Secret", "ConfigMap")]
        return {(d["kind"], d["metadata"]["name"]): d for d in docs + lab_objects(self.dir)}

    def specs(self) -> list[tuple[dict[str, Any], PodSpec]]:
        try:
            return [(doc, parse_daemonset(doc)) for doc in self.daemonsets()]
        except PodSpecError as err:
            raise LabError("the rendered pod spec has what the lab cannot run:\n" + str(err)) from None

    def scheduled(self, node: str) -> list[tuple[dict[str, Any], PodSpec]]:
        """The DaemonSets whose pods the scheduler would put on `node`."""
        labels = self.plan.node(node).labels
        return [(doc, spec) for doc, spec in self.specs() if spec.schedules_on(labels)]

    # --- files of one pod --------------------------------------------------------

    def pod_dir(self, node: str, ds: str) -> Path:
        return self.dir / "pods" / f"{node}.{ds}"

    def status_file(self, node: str, ds: str) -> Path:
        return self.pod_dir(node, ds) / "status.json"

    def status(self, node: str, ds: str = EDGE) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file(node, ds).read_text())
        except (OSError, ValueError):
            return {}
        return data

    def container_pid(self, node: str, container: str, ds: str = EDGE) -> int | None:
        st = self.status(node, ds).get("containers", {}).get(container, {})
        pid = st.get("pid")
        return pid if st.get("state") == "running" and alive(pid) else None

    def log(self, node: str, container: str) -> Path:
        return self.dir / "logs" / f"{node}.{container}.log"

    # --- lifecycle ---------------------------------------------------------------

    def start(
        self,
        node: str,
        images: Mapping[str, str],
        out: Out,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Create every pod scheduled on `node` and start its kubelet.

        `edit` changes a DaemonSet before its pod is made, as `kubectl edit`
        would (the tests use it to take a capability away).
        """
        n = self.plan.node(node)
        for doc, spec in self.scheduled(node):
            if edit is not None:
                doc = copy.deepcopy(doc)
                edit(doc)
                spec = parse_daemonset(doc)
            pdir = self.pod_dir(node, spec.name)
            pdir.mkdir(parents=True, exist_ok=True)
            mounted: list[str] = []
            self.journal.record("pod", node=node, ds=spec.name, dir=str(pdir))
            try:
                volumes = prepare(spec, self.objects(), pdir / "volumes", mounted)
            finally:
                for m in mounted:
                    self.journal.record("mount", path=m)
            resolv = pdir / "resolv.conf"
            resolv.write_text(
                f"search {' '.join(self.plan.search_domains(spec.namespace))}\n"
                f"nameserver {self.plan.dns_address}\noptions ndots:5\n"
            )
            hosts = pdir / "hosts"
            hosts.write_text(f"127.0.0.1\tlocalhost\n{n.address}\t{node}\n")
            self._write_objects(pdir)
            (pdir / NO_HOOKS).unlink(missing_ok=True)
            (self.dir / "logs").mkdir(parents=True, exist_ok=True)
            pod_file = PodFile(
                daemonset=doc,
                pod_name=f"{spec.name}-{node}",
                node=node,
                netns=f"/run/netns/{n.netns}",
                host_ip=str(n.address),
                volumes=volumes,
                images=dict(images),
                resolv_conf=str(resolv),
                hosts_file=str(hosts),
                log_dir=str(self.dir / "logs"),
                status_file=str(self.status_file(node, spec.name)),
                journal=str(self.journal.path),
                nofile=nofile_for(self.plan.settings),
                rt_parent=rt_parent(self.plan.prefix),
                objects_file=str(pdir / OBJECTS),
                sync_s=sync_delay_s(),
                no_hooks_file=str(pdir / NO_HOOKS),
                labels={
                    "halb.lab/id": f"{self.plan.prefix}-{self.plan.lab_id}",
                    "halb.lab/node": node,
                    "io.kubernetes.pod.name": f"{spec.name}-{node}",
                    "io.kubernetes.pod.namespace": spec.namespace,
                },
            )
            path = pdir / "pod.json"
            pod_file.save(path)
            self.status_file(node, spec.name).unlink(missing_ok=True)
            pid = self._spawn_kubelet(path, self.dir / "logs" / f"{node}.{spec.name}.kubelet.log")
            self.journal.record_process("kubelet", pid, node=node, ds=spec.name)
            out(f"{node}: pod {spec.name} ({', '.join(c.name for c in spec.containers)}) started")

    def _write_objects(self, pdir: Path) -> None:
        docs = [dict(d) for d in self.objects().values()]
        write_text_atomic(pdir / OBJECTS, json.dumps(docs))

    def update_objects(self, node: str) -> None:
        """The API's new Secrets and ConfigMaps, for the node's kubelet to sync."""
        for _, spec in self.scheduled(node):
            self._write_objects(self.pod_dir(node, spec.name))

    def reload_status(self, node: str, ds: str = EDGE) -> dict[str, Any] | None:
        """What haproxy-reload last said of the config (loaded, rejected + the error)."""
        return self._run_json(node, RELOAD_STATUS, ds)

    def tls_status(self, node: str, ds: str = EDGE) -> dict[str, Any] | None:
        """What haproxy-tls last said of each certificate (loaded, rejected + why)."""
        return self._run_json(node, TLS_STATUS_FILE, ds)

    def shared_path(self, node: str, path_in_pod: str) -> Path:
        """A file of the edge pod's shared emptyDir (under SHARED_DIR in the pod) on this machine."""
        return self.pod_dir(node, EDGE) / "volumes" / SHARED_VOLUME / os.path.relpath(path_in_pod, SHARED_DIR)

    def _run_json(self, node: str, path_in_pod: str, ds: str) -> dict[str, Any] | None:
        """A JSON file the pod's sidecars keep in HAProxy's run volume."""
        rel = os.path.relpath(path_in_pod, HAPROXY_RUN_DIR)
        try:
            data: dict[str, Any] = json.loads(
                (self.pod_dir(node, ds) / "volumes" / HAPROXY_RUN_VOLUME / rel).read_text()
            )
        except (OSError, ValueError):
            return None
        return data

    def running_template(self, node: str, ds: str = EDGE) -> dict[str, Any] | None:
        """The pod template the node's pod was made from."""
        try:
            template: dict[str, Any] = PodFile.load(self.pod_dir(node, ds) / "pod.json").daemonset["spec"][
                "template"
            ]
        except (OSError, ValueError, KeyError):
            return None
        return template

    def _spawn_kubelet(self, pod_file: Path, log: Path) -> int:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            return os.posix_spawnp(
                sys.executable,
                [sys.executable, "-m", "halb.lab.kubelet", str(pod_file)],
                dict(os.environ),
                setsid=True,  # Ctrl-C in the lab command is not for the pod
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, fd, 1),
                    (os.POSIX_SPAWN_DUP2, fd, 2),
                ],
            )
        finally:
            os.close(fd)
            os.close(null)

    def kubelets(self, node: str | None = None) -> list[tuple[int, int | None, str]]:
        """(pid, start, node) of this lab's kubelets that still run."""
        found = []
        for e in self.journal.entries("kubelet"):
            if node is None or e.get("node") == node:
                pid, start = e.get("pid"), e.get("start")
                if isinstance(pid, int) and same_process(pid, start):
                    found.append((pid, start, str(e.get("node"))))
        return found

    def running(self, node: str) -> bool:
        return bool(self.kubelets(node))

    def delete(self, node: str, timeout: float | None = None, hooks: bool = True) -> None:
        """Delete the node's pods as the API would: preStop, stop signal, grace.

        `hooks=False`: without the preStop hooks (the benchmark's baseline)."""
        if not hooks:
            for _, spec in self.scheduled(node):
                (self.pod_dir(node, spec.name) / NO_HOOKS).write_text("")
        ks = self.kubelets(node)
        for pid, _, _ in ks:
            os.kill(pid, signal.SIGTERM)
        bound = timeout if timeout is not None else max(s.grace_s for _, s in self.specs()) + 30
        wait_until(lambda: not any(alive(pid) for pid, _, _ in ks), bound, poll=0.1)
        for pid, _, _ in ks:
            _reap(pid)
        self.cleanup(node)

    def crash(self, node: str) -> None:
        """Power loss: the kubelet and every container process die at once.

        The PIDs come from the pods' status files, so nothing slower than a
        kill stands between the fault and the death; a container the status
        does not know (started a moment ago) is found through podman after.
        """
        victims = [pid for pid, _, _ in self.kubelets(node)]
        known: set[str] = set()
        # The status files as they lie: parsing the manifests first would put
        # a tenth of a second between the fault and the power loss.
        for status_file in sorted((self.dir / "pods").glob(f"{node}.*/status.json")):
            try:
                containers = json.loads(status_file.read_text()).get("containers", {})
            except (OSError, ValueError):
                continue
            for st in containers.values():
                if st.get("state") == "running" and st.get("pid"):
                    victims.append(int(st["pid"]))
                    known.add(str(st.get("podman_name")))
        _kill_all(victims)
        late = []
        for name in self._containers_of(node):
            if name in known:
                continue
            st = podman("inspect", "--format", "{{.State.Pid}}", name, check=False).stdout.strip()
            if st.isdigit() and int(st) > 0:
                late.append(int(st))
        _kill_all(late)

    def _containers_of(self, node: str) -> list[str]:
        prefix = f"{self.plan.prefix}-{self.plan.lab_id}-{node}-"
        return [
            str(e["name"])
            for e in self.journal.entries("container")
            if str(e.get("name", "")).startswith(prefix)
        ]

    def cleanup(self, node: str) -> None:
        """Whatever the node's pods left: containers, tmpfs mounts."""
        names = self._containers_of(node)
        existing = set(podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split())
        gone = [n for n in names if n in existing]
        if gone:
            podman("rm", "--force", "--time", "0", *gone, check=False, timeout=120)
        for e in self.journal.entries("pod"):
            if e.get("node") == node:
                for vol in Path(str(e.get("dir"))).glob("volumes/*"):
                    unmount(vol)

    def wait_started(self, node: str, timeout: float) -> bool:
        """Every container of the node's pods running (not yet necessarily ready)."""

        def started() -> bool:
            for _, spec in self.scheduled(node):
                cs = self.status(node, spec.name).get("containers", {})
                if not all(cs.get(c.name, {}).get("state") == "running" for c in spec.containers):
                    return False
            return True

        return wait_until(started, timeout, poll=0.1)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
