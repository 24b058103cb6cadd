"""`lab handoff`: move the VIP to another healthy LB host with no failed request.

The lab runs the pod's own procedure, the one its preStop runs when the pod
goes away (`halb-keepalived handoff`, images/keepalived): in the old
MASTER's keepalived container, with that container's capabilities. The VIP
is parked on `lo` there (unannounced: an nftables arp rule), the peers are
told to steer connections begun here back for the drain, the instance
leaves MASTER (priority-0 advert), and after the drain the VIP leaves `lo`.
Then, as the pod stays, `undrain` lets this node be MASTER again later.
"""

from __future__ import annotations

import re
import subprocess
import time

from components.edge_pod import (
    DRAIN_FILE,
    HALB_KEEPALIVED,
    HANDOFF_DONE_FILE,
    HANDOFF_STARTED_FILE,
    HAPROXY,
    KEEPALIVED,
    STEER_TABLE,
)
from components.keepalived import handoff_command
from halb.lab.base import LabError, LabInputError, Out, in_ns, run, wait_until
from halb.lab.faults import target
from halb.lab.lab import Lab
from halb.lab.podman import env, podman


def steered_packets(lab: Lab, node: str) -> int:
    """Packets the node's steering rule sent back to the old MASTER so far."""
    out = run(in_ns(lab.plan.node(node).netns, "nft", "list", "table", "ip", STEER_TABLE), check=False).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def handoff(lab: Lab, out: Out) -> str:
    if lab.plan.bgp:
        raise LabInputError("`lab handoff` moves a VRRP VIP; in a bgp lab every host announces it")
    old = target(lab, None)
    ready = [
        n.name
        for n in lab.plan.lb_nodes
        if n.name != old
        and n.name not in lab.state.crashed
        and lab.vrrp_state(n.name) == "BACKUP"
        and lab.daemon_pid(n.name, HAPROXY) is not None
    ]
    if not ready:
        raise LabError(f"no healthy BACKUP to hand {old}'s VIP to")
    st = lab.pods.status(old).get("containers", {}).get(KEEPALIVED, {})
    if st.get("state") != "running" or not st.get("id"):
        raise LabError(f"keepalived is not running on {old}")
    s = lab.plan.settings
    cmd = ["podman", "exec", str(st["id"]), *handoff_command(s, pod_stops=False)]  # the pod stays
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    assert proc.stdout is not None
    bound = time.monotonic() + s.vrrp.handoff.drain_seconds + 20
    for line in proc.stdout:  # as the pod's procedure says it, live
        out(f"{old}: {line.strip()}")
        if time.monotonic() > bound:
            proc.kill()
            break
    proc.wait(timeout=10)
    holders = lab.vip_holders()
    new = next((n for n in holders if n != old), None)
    if proc.returncode != 0 or new is None:
        raise LabError(f"the handoff on {old} failed (exit {proc.returncode}; VIP holders {holders})")
    out(f"{new} steered {steered_packets(lab, new)} packet(s) of connections begun on {old} back to it")
    podman("exec", str(st["id"]), HALB_KEEPALIVED, "undrain", "--drain-file", DRAIN_FILE,
           "--started-file", HANDOFF_STARTED_FILE, "--done-file", HANDOFF_DONE_FILE)  # fmt: skip
    if not wait_until(lambda: lab.vrrp_state(old) == "BACKUP", 10.0):
        raise LabError(f"{old} did not come back as BACKUP after the handoff")
    return f"handed the VIP from {old} to {new}"
