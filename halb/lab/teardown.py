"""`lab down`: remove exactly what the lab made, from any state it is in.

What to remove comes from the journal only (halb/lab/journal.py): pods
(deleted gracefully through their kubelets, as the API would), supervised
processes, containers, tmpfs mounts and network namespaces, each checked
against what was recorded (process start time, namespace inode). A
namespace or process that merely looks like the lab's, by name or prefix,
is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from halb.lab import rtsched
from halb.lab.base import Out, ip, wait_until
from halb.lab.journal import Journal, alive, same_process
from halb.lab.network import list_netns, netns_inode
from halb.lab.podman import podman
from halb.lab.state import lab_dir
from halb.lab.volumes import unmount

POD_STOP_S = 60.0
PROCESS_STOP_S = 6.0


def _live(journal: Journal, kind: str) -> list[int]:
    return [
        int(e["pid"])
        for e in journal.entries(kind)
        if isinstance(e.get("pid"), int) and same_process(int(e["pid"]), e.get("start"))
    ]


def _stop(pids: list[int], bound: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not any(alive(p) for p in pids), bound, poll=0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def teardown(prefix: str, out: Out) -> int:
    """Remove the lab `prefix`; returns how many namespaces went. Idempotent."""
    directory = lab_dir(prefix)
    journal = Journal(directory / "journal.jsonl")
    if not directory.exists():
        out("lab down: nothing to remove")
        return 0
    kubelets = _live(journal, "kubelet")
    supervisors = _live(journal, "supervisor")
    # Pods first, gracefully: the kubelets run preStop and stop signals.
    _stop(kubelets, POD_STOP_S)
    _stop(supervisors, PROCESS_STOP_S)
    names = sorted({str(e["name"]) for e in journal.entries("container") if isinstance(e.get("name"), str)})
    if names:
        existing = set(podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split())
        ours = [n for n in names if n in existing]
        if ours:
            podman("rm", "--force", "--time", "0", *ours, check=False, timeout=120)
    left = rtsched.remove(journal)
    if left:
        out(f"lab down: cgroup(s) still hold tasks, left in place: {', '.join(left)}")
    mounts = {str(e["path"]) for e in journal.entries("mount") if isinstance(e.get("path"), str)}
    for path in sorted(mounts):
        unmount(Path(path))
    recorded: dict[str, int | None] = {}
    for e in journal.entries("netns"):
        if isinstance(e.get("name"), str):
            inode = e.get("inode")
            recorded[e["name"]] = inode if isinstance(inode, int) else recorded.get(e["name"])
    existing_ns = set(list_netns())
    removed = 0
    killed = 0
    for ns, inode in recorded.items():
        if ns not in existing_ns or (inode is not None and netns_inode(ns) != inode):
            continue  # gone, or someone else's namespace of that name now
        for pid in map(int, ip("netns", "pids", ns, check=False).stdout.split()):
            try:
                os.kill(pid, signal.SIGKILL)  # inside a namespace we made and recorded
                killed += 1
            except ProcessLookupError:
                pass
        ip("netns", "del", ns, check=False)
        removed += 1
    shutil.rmtree(directory, ignore_errors=True)
    out(
        f"lab down: removed {removed} namespaces, {len(kubelets)} pods, {len(supervisors)} processes, "
        f"{len(names)} containers recorded; killed {killed} leftovers"
    )
    return removed
