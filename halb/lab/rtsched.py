"""A real-time CPU budget for the lab's containers that may use one (CAP_SYS_NICE).

keepalived's VRRP process runs SCHED_RR (`vrrp_rt_priority`): a host whose
HAProxy saturates the CPU still sends its adverts on time (measured: without
it, the overload drill moved the VIP up to 9 times, keepalived waiting 6.5 s on
the run queue in 23 s). On a kernel with RT group scheduling
(CONFIG_RT_GROUP_SCHED, cgroup v1, as on the lab machine) a task may be
real-time only inside a cgroup given an RT budget, and container cgroups get
none. Cluster kernels mostly build without it (Debian, Ubuntu, RHEL) and need
nothing; where one has it, keepalived logs that it cannot raise its priority
and runs as before. The lab gives such containers a parent cgroup of its own,
`halb-<prefix>`, with a budget: journalled before it is made, removed at
teardown (with what podman made under it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from halb.lab.base import LabError
from halb.lab.journal import Journal

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_V1 = CGROUP_ROOT / "cpu"
RT_PERIOD_US = 1_000_000
# Per container: 10% of a CPU each second, far above what keepalived uses
# (about 2 ms a second under the overload drill); past it the kernel throttles.
RT_RUNTIME_US = 100_000
# The root group keeps 950000 of each second for RT tasks (sched_rt_runtime_us).
PARENT_MAX_US = 900_000
KIND = "cgroup"
# How long teardown waits for the last task in a parent to exit.
REMOVE_WAIT_S = 5.0


def rt_group_sched() -> bool:
    """Whether this kernel schedules RT tasks per cgroup (v1 `cpu.rt_runtime_us`)."""
    return (CPU_V1 / "cpu.rt_runtime_us").exists()


def parent_name(prefix: str) -> str:
    return f"halb-{prefix}"


def parent(prefix: str) -> str | None:
    """The `--cgroup-parent` for the lab's RT-capable containers, or None when the kernel needs none."""
    return f"/{parent_name(prefix)}" if rt_group_sched() else None


def make_parent(prefix: str, lb_hosts: int, journal: Journal) -> str | None:
    """Make `parent(prefix)` with its budget; None (nothing made) when the kernel needs none.

    Room for two containers per host: a pod replaced during `lab apply` starts
    its new keepalived before the old one has gone."""
    cgroup = parent(prefix)
    if cgroup is None:
        return None
    name = parent_name(prefix)
    journal.record(KIND, name=name)
    path = CPU_V1 / name
    path.mkdir(exist_ok=True)
    budget = min(PARENT_MAX_US, 2 * lb_hosts * RT_RUNTIME_US)
    try:
        (path / "cpu.rt_runtime_us").write_text(str(budget))
    except OSError as err:  # EINVAL: the budgets of the cgroups beside it leave too little
        raise LabError(
            f"cgroup {path}: cannot give it {budget} us of RT time a second ({err.strerror}); other "
            "labs' budgets (halb-* beside it) take the rest of the machine's: take one of them down"
        ) from None
    return cgroup


def _remove_tree(path: Path) -> bool:
    """rmdir a cgroup and its empty children, deepest first; False if one still has tasks."""
    ok = True
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        ok = _remove_tree(child) and ok
    try:
        os.rmdir(path)
    except OSError:
        return False
    return ok


def _tasks(path: Path) -> set[int]:
    """Every process in a cgroup and its children."""
    pids: set[int] = set()
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(line) for line in procs.read_text().split()}
    return pids


def remove(journal: Journal, wait_s: float = REMOVE_WAIT_S) -> list[str]:
    """Remove the recorded parents in every controller; what could not be removed.

    What still runs in one is ours (only our containers are put there): a
    conmon outliving its container by a moment, or a container a killed
    kubelet left. It is killed, and the removal retried for up to `wait_s`."""
    left: list[str] = []
    names = {str(e["name"]) for e in journal.entries(KIND) if isinstance(e.get("name"), str)}
    for name in sorted(names):
        if not name.startswith("halb-") or "/" in name:
            continue  # not one this module names
        for controller in sorted(CGROUP_ROOT.iterdir()):
            path = controller / name
            if not path.is_dir() or path.is_symlink():
                continue
            deadline = time.monotonic() + wait_s
            for _ in range(int(wait_s / 0.05) + 1):
                if _remove_tree(path):
                    break
                for pid in _tasks(path):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                if time.monotonic() >= deadline:
                    left.append(str(path))
                    break
                time.sleep(0.05)
    return left
