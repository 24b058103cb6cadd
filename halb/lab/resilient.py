"""The lab router's resilient hashing: FRR's ECMP route for the VIP, mirrored into a Linux
resilient next-hop group, since FRR 8.4's zebra cannot program one for BGP routes.

A data-centre switch with resilient ECMP keeps a table of hash buckets per
group: a next hop that leaves takes only its own buckets away, one that joins
takes only buckets that have been idle. Plain ECMP (Linux's hash-threshold)
re-divides the hash space instead, moving the survivors' flows too. This is the
lab's stand-in for such a router, a lab difference (docs/lab.md); it runs in
the router's container as its main process, so its death stops the container:

    python3 resilient.py VIP TABLE BUCKETS IDLE_S HOP [HOP ...]

zebra keeps installing the route in `main`; a rule sends the VIP to TABLE,
where it points at group GROUP_ID, whose members follow main's next hops
(on every route or next-hop event, and every POLL_S). With TABLE empty (no
host announces, or before the first sync) the lookup falls through to main.
`unbalanced_timer 0`: a joining host is never given busy buckets by force.
Standard library only: the router's image has python3 and iproute2, not halb.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from types import FrameType

# Far above the ids zebra allocates for its own groups (counted up from 1), below FRR's
# protocol range (1 << 28).
GROUP_ID = 150_000_000
RULE_PREF = 100
POLL_S = 0.5


def ip(*args: str, check: bool = True) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10).stdout


def main_hops(vip: str) -> set[str]:
    """The VIP's next hops in zebra's route (table main)."""
    routes = json.loads(ip("-j", "route", "show", "table", "main", f"{vip}/32") or "[]")
    hops: set[str] = set()
    for r in routes:
        if "gateway" in r:
            hops.add(r["gateway"])
        hops.update(nh["gateway"] for nh in r.get("nexthops", []) if "gateway" in nh)
    return hops


class Mirror:
    """Group GROUP_ID's members kept equal to main's next hops for the VIP."""

    def __init__(self, vip: str, table: str, buckets: int, idle_s: int, hops: list[str]) -> None:
        self.vip, self.table = vip, table
        self.res = ["type", "resilient", "buckets", str(buckets), "idle_timer", str(idle_s),
                    "unbalanced_timer", "0"]  # fmt: skip
        self.members = {h: str(GROUP_ID + 1 + i) for i, h in enumerate(hops)}
        self.have: list[str] | None = None

    def ensure_members(self) -> None:
        """One next-hop object per host (again if the kernel flushed them with a link)."""
        for hop, nh_id in self.members.items():
            if not ip("nexthop", "show", "id", nh_id, check=False).strip():
                dev = json.loads(ip("-j", "route", "get", hop))[0]["dev"]
                ip("nexthop", "replace", "id", nh_id, "via", hop, "dev", dev)

    def sync(self) -> None:
        want = sorted(self.members[h] for h in main_hops(self.vip) if h in self.members)
        if self.have and not ip("nexthop", "show", "id", str(GROUP_ID), check=False).strip():
            self.have = None  # the kernel flushed the group (its members' link went): again
        if want == self.have:
            return
        if want:
            self.ensure_members()
            ip("nexthop", "replace", "id", str(GROUP_ID), "group", "/".join(want), *self.res)
            if not self.have:
                ip("route", "replace", f"{self.vip}/32", "nhid", str(GROUP_ID), "table", self.table)
        else:
            ip("route", "del", f"{self.vip}/32", "table", self.table, check=False)
            ip("nexthop", "del", "id", str(GROUP_ID), check=False)
        self.have = want
        by_id = {v: k for k, v in self.members.items()}
        print(f"resilient: {self.vip} via {[by_id[i] for i in want]}", flush=True)

    def clear(self) -> None:
        ip("rule", "del", "pref", str(RULE_PREF), check=False)
        ip("route", "del", f"{self.vip}/32", "table", self.table, check=False)
        ip("nexthop", "del", "id", str(GROUP_ID), check=False)
        for nh_id in self.members.values():
            ip("nexthop", "del", "id", nh_id, check=False)


def main(argv: list[str]) -> int:
    vip, table, buckets, idle_s, *hops = argv
    mirror = Mirror(vip, table, int(buckets), int(idle_s), hops)
    stop = threading.Event()
    changed = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        changed.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    ip("rule", "del", "pref", str(RULE_PREF), check=False)
    ip("rule", "add", "pref", str(RULE_PREF), "to", f"{vip}/32", "lookup", table)
    monitor = subprocess.Popen(["ip", "monitor", "route", "nexthop"], stdout=subprocess.PIPE, text=True)

    def watch() -> None:
        assert monitor.stdout is not None
        for _line in monitor.stdout:
            changed.set()

    threading.Thread(target=watch, daemon=True).start()
    print(f"resilient: {vip} -> table {table}, {buckets} buckets, idle {idle_s} s", flush=True)
    try:
        while not stop.is_set():
            mirror.sync()
            changed.wait(POLL_S)
            changed.clear()
    finally:
        monitor.terminate()
        mirror.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
