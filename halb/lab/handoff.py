"""`lab handoff`: move the VIP to another healthy LB host with no failed request.

Two things would break a request. A client whose ARP cache still points at
the old MASTER: the old MASTER parks the VIP on `lo` (not announced:
arp_ignore=1) and keeps serving. A connection open at the moment the
client's ARP entry flips: its next packets reach the new MASTER, which has
no such socket and would reset it, so the new MASTER forwards such
mid-stream flows to the old one (`Steering`) until they have drained.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from halb.lab.base import LabError, Out, in_ns, ip, run, wait_until
from halb.lab.faults import target
from halb.lab.lab import Lab
from halb.lab.topology import LabPlan

# Connections begun on the old MASTER finish there: lab requests take
# milliseconds; a real edge with long keep-alives wants longer.
HANDOFF_DRAIN_S = 1.0


def handoff(lab: Lab, out: Out) -> str:
    old = target(lab, None)
    ready = [
        n.name
        for n in lab.plan.lb_nodes
        if n.name != old
        and n.name not in lab.state.crashed
        and lab.vrrp_state(n.name) == "BACKUP"
        and lab.daemon_pid(n.name, "haproxy") is not None
    ]
    if not ready:
        raise LabError(f"no healthy BACKUP to hand {old}'s VIP to")
    new = ready[0]
    old_ns, vip32 = lab.plan.node(old).netns, f"{lab.plan.vip}/32"
    steering = Steering(lab.plan, new, old, lab.dir / f"handoff-{new}.nft")
    keepalived = lab.daemon_pid(old, "keepalived")
    if keepalived is None:
        raise LabError(f"keepalived is not running on {old}")
    ip("-n", old_ns, "addr", "add", vip32, "dev", "lo")
    try:
        steering.install()
        out(f"{old}: VIP parked on lo; {new}: forwards mid-stream flows back to {old}")
        os.kill(keepalived, signal.SIGTERM)  # a priority-0 advert: the BACKUP takes over at once
        if not wait_until(lambda: lab.holds_vip(new), 5.0):
            raise LabError(f"{new} did not take the VIP within 5 s")
        mac = lab.net.mac(new)
        out(f"{new}: MASTER; waiting for the client to learn {mac}")
        if not wait_until(lambda: lab.net.client_mac() == mac, 5.0):
            raise LabError("the client did not learn the new MAC within 5 s")
        out(f"draining connections begun on {old} for {HANDOFF_DRAIN_S:g} s")
        time.sleep(HANDOFF_DRAIN_S)
        flows, packets = steering.steered()
        out(f"{new} forwarded {flows} mid-stream flow(s), {packets} packet(s), to {old}")
    finally:
        steering.remove()
        ip("-n", old_ns, "addr", "del", vip32, "dev", "lo", check=False)
    return f"handed the VIP from {old} to {new}"


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
