"""Faults the lab injects, each like its real-world cause.

- kill-keepalived / kill-haproxy: SIGKILL to the container's first process
  (the daemon itself); the container dies and its pod's kubelet restarts it.
- stop-keepalived: SIGTERM to keepalived: it sends a priority-0 advert and
  exits; the kubelet restarts the container.
- link-down / link-up: the host's switch port, like a pulled cable.
- crash: power loss: the kubelet and every container process SIGKILLed at
  once, then the link down (in a bgp lab the link first: no FIN of bgpd's
  session may reach the router before BFD notices). The host keeps its (stale) VIP, unplugged. It
  comes back only through `restore`, which reboots it: the stale VIP goes
  (a reboot clears addresses) and its pods start again.
- partition / heal: the load-balancer hosts stop hearing each other while
  clients still reach both (split brain), and hear each other again.
- rogue-vrrp, forged-handoff, overload: the hostile drills (halb/lab/hostile.py):
  a non-peer's adverts, forged and replayed handoff messages, twice maxConn
  connections. They print what they saw; nothing needs restoring after them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from components.edge_pod import HAPROXY, KEEPALIVED
from halb.lab.base import LabError, LabInputError
from halb.lab.hostile import HOSTILE, drill
from halb.lab.journal import stat_fields
from halb.lab.lab import Lab

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
    *HOSTILE,
)
NODE_FREE = ("partition", "heal", *HOSTILE)
# What only means something with keepalived (the rogue adverts, the handoff's messages, a split brain).
VRRP_ONLY = ("kill-keepalived", "stop-keepalived", "partition", "heal", "rogue-vrrp", "forged-handoff")


def target(lab: Lab, node: str | None) -> str:
    """The load-balancer host to hit: `node`, or the MASTER."""
    if node is None:
        master = lab.master()
        if master is None:
            raise LabError("no live node holds the VIP; name one with --node")
        return master
    return lb_host(lab, node, "--node ")


def lb_host(lab: Lab, node: str, flag: str = "") -> str:
    """`node`, a load-balancer host of this lab, or LabInputError naming `flag`."""
    try:
        n = lab.plan.node(node)
    except KeyError:
        names = ", ".join(x.name for x in lab.plan.lb_nodes)
        raise LabInputError(f"{flag}{node}: no such host (load-balancer hosts: {names})") from None
    if n.role.value != "load-balancer":
        raise LabInputError(
            f"{flag}{node}: an apps host; the edge pod and its faults are on load-balancer hosts"
        )
    return node


def _signal(lab: Lab, node: str, container: str, sig: signal.Signals) -> int:
    if node in lab.state.crashed:
        raise LabError(f"{node} is crashed; `lab fault restore --node {node}` brings it back")
    pid = lab.daemon_pid(node, container)
    if pid is None:
        raise LabError(f"{container} is not running on {node} (its container may be restarting)")
    os.kill(pid, sig)
    return pid


def _descendants(pid: int) -> list[int]:
    """`pid` and every process under it: a container's processes, from its first one."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = stat_fields(entry) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 10_000:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def stall(lab: Lab, node: str, container: str, seconds: float) -> int:
    """Every process of the container stopped for `seconds`, then continued (a GC
    pause, a hypervisor steal, a throttled cgroup); how many were stopped."""
    # SIGCONT to a running process changes nothing: _signal's checks, and the PID.
    pids = _descendants(_signal(lab, node, container, signal.SIGCONT))
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(seconds)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return len(stopped)


def _partition(lab: Lab, cut: bool) -> str:
    was = lab.net.partitioned()
    if cut and was:
        return "already partitioned"
    if not cut and not was:
        return "nothing to heal: the load-balancer hosts are not partitioned"
    lab.net.isolate(cut)
    if cut:
        lab.state.partitioned_at = time.time()
        lab.save()
        return "partitioned: load-balancer hosts cannot hear each other; clients reach both"
    since = lab.state.partitioned_at
    lab.state.partitioned_at = None
    lab.save()
    lasted = f" after {time.time() - since:.1f} s" if since else ""
    return f"healed{lasted}: load-balancer hosts hear each other again"


def restore(lab: Lab, node: str) -> str:
    lab.net.set_link(node, "up")
    if node not in lab.state.crashed:
        return f"restored {node}: link up"
    # A reboot: the addresses keepalived left are gone, the pods start again.
    lab.pods.cleanup(node)
    lab.net.remove_vip(node)
    lab.pods.start(node, lab_images(lab), lambda _: None)
    lab.state.crashed.remove(node)
    lab.save()
    return f"restored {node}: rebooted (stale VIP gone), link up, pod started"


def lab_images(lab: Lab) -> dict[str, str]:
    """The local images the pods ran with (kept in their pod files)."""
    from halb.lab.kubelet import PodFile

    for pod_file in sorted((lab.dir / "pods").glob("*/pod.json")):
        return PodFile.load(pod_file).images
    raise LabError("no pod file of this lab; `lab down` and `lab up` again")


def inject(lab: Lab, kind: str, node: str | None) -> str:
    """Inject `kind` on `node` (default: the MASTER); returns what was done."""
    if kind not in FAULTS:
        raise LabInputError(f"unknown fault {kind!r} (one of: {', '.join(FAULTS)})")
    if lab.plan.bgp and kind in VRRP_ONLY:
        raise LabInputError(f"`{kind}` is a VRRP fault; a bgp lab has no keepalived (try kill-haproxy)")
    if lab.plan.bgp and kind not in NODE_FREE and node is None and kind not in ("restore", "link-up"):
        raise LabInputError(f"--node: a bgp lab has no MASTER; name the host `{kind}` hits")
    if kind in NODE_FREE:
        if node is not None:
            raise LabInputError(f"--node: `{kind}` concerns every load-balancer host; leave --node out")
        if kind in HOSTILE:
            return drill(lab, kind).summary()
        return _partition(lab, kind == "partition")
    if kind in ("restore", "link-up") and node is None:
        # Undo whatever is broken: crashed hosts, pulled links, a partition.
        done = [_partition(lab, False)] if kind == "restore" and lab.net.partitioned() else []
        broken = [
            n.name for n in lab.plan.lb_nodes if n.name in lab.state.crashed or not lab.net.link_is_up(n.name)
        ]
        if kind == "link-up":
            broken = [n for n in broken if n not in lab.state.crashed]
        done += [inject(lab, kind, name) for name in broken]
        return "; ".join(done) or "nothing to restore"
    hit = target(lab, node)
    if kind == "kill-keepalived":
        pid = _signal(lab, hit, KEEPALIVED, signal.SIGKILL)
        return f"SIGKILL keepalived (pid {pid}) on {hit}; its kubelet restarts the container"
    if kind == "stop-keepalived":
        pid = _signal(lab, hit, KEEPALIVED, signal.SIGTERM)
        return f"SIGTERM keepalived (pid {pid}) on {hit}; its kubelet restarts the container"
    if kind == "kill-haproxy":
        pid = _signal(lab, hit, HAPROXY, signal.SIGKILL)
        return f"SIGKILL haproxy (pid {pid}) on {hit}; its kubelet restarts the container"
    if kind == "link-down":
        lab.net.set_link(hit, "down")
        return f"link of {hit} down"
    if kind == "link-up":
        if hit in lab.state.crashed:
            raise LabError(f"{hit} is crashed; `lab fault restore --node {hit}` brings it back (a reboot)")
        lab.net.set_link(hit, "up")
        return f"link of {hit} up"
    if kind == "crash":
        if hit in lab.state.crashed:
            return f"{hit} is crashed already"
        # Processes first, as a power loss: keepalived gets no chance to see
        # the link go and release the VIP; it stays on the dead host.
        lab.state.crashed.append(hit)
        lab.save()
        if lab.plan.bgp:
            # The link first: a process killed before it would have its kernel
            # close bgpd's TCP session (a FIN the router acts on at once); power
            # loss sends nothing, and only BFD at the router notices.
            lab.net.set_link(hit, "down")
            lab.pods.crash(hit)
        else:
            lab.pods.crash(hit)
            lab.net.set_link(hit, "down")
        return f"crashed {hit}: every process SIGKILLed, link down, no restarts"
    return restore(lab, hit)
