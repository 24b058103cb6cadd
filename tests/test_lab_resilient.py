"""The lab router's resilient group (halb/lab/resilient.py) follows zebra's route and moves
only a leaving next hop's buckets.

In namespaces of the test's own: a router with one leg on 192.0.2.0/24 (the hosts
need not exist: a next hop only has to be on-link), the route that zebra would
install put in main by hand, as `proto bgp`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_root_tools

import halb.lab.resilient as resilient
from halb.lab.base import ip, wait_until

pytestmark = pytest.mark.netns

VIP = "203.0.113.10"
HOPS = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
TABLE = "100"


@pytest.fixture
def router() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    require_root_tools("ip")
    ns, peer = f"hr{os.getpid()}-r", f"hr{os.getpid()}-h"
    made: list[str] = []
    proc = None
    try:
        for n in (ns, peer):
            ip("netns", "add", n)
            made.append(n)
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer)
        ip("-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", peer, "link", "set", "eth0", "up")
        script = str(Path(resilient.__file__))
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-u", script, VIP, TABLE, "16", "60", *HOPS]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        yield ns, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for n in made:
            subprocess.run(["ip", "netns", "del", n], check=False, capture_output=True, timeout=10)


def _zebra_route(ns: str, hops: list[str]) -> None:
    if not hops:
        ip("-n", ns, "route", "del", f"{VIP}/32", "table", "main", check=False)
        return
    nexthops = [w for h in hops for w in ("nexthop", "via", h, "dev", "eth0")]
    ip("-n", ns, "route", "replace", f"{VIP}/32", "proto", "bgp", *nexthops)


def _table(ns: str) -> list[str]:
    done = ip("-n", ns, "-j", "route", "show", "table", TABLE, check=False)
    if done.returncode != 0:  # no route has made the table yet (ip prints half a list then)
        return []
    routes = json.loads(done.stdout or "[]")
    return sorted(nh["gateway"] for r in routes for nh in r.get("nexthops", [{"gateway": r.get("gateway")}]))


def _buckets(ns: str) -> dict[int, tuple[str, float]]:
    """Each bucket's next hop, and how long since it was last assigned or used."""
    out = ip("-n", ns, "-j", "nexthop", "bucket", "show", "id", str(resilient.GROUP_ID)).stdout
    members = {str(resilient.GROUP_ID + 1 + i): h for i, h in enumerate(HOPS)}
    return {
        b["bucket"]["index"]: (members[str(b["bucket"]["nhid"])], float(b["bucket"]["idle_time"]))
        for b in json.loads(out)
    }


def test_the_group_follows_zebra_and_a_leaving_hop_takes_only_its_buckets(
    router: tuple[str, subprocess.Popen[str]],
) -> None:
    ns, proc = router
    # The hosts join one by one, as they do at lab up: a layout of buckets no fresh group
    # would have, so a mirror that rebuilt the group on a change could not keep it.
    for k in range(1, len(HOPS) + 1):
        _zebra_route(ns, HOPS[:k])
        assert wait_until(lambda k=k: _table(ns) == HOPS[:k], 10, poll=0.05), _table(ns)  # type: ignore[misc]
    assert f"to {VIP} lookup {TABLE}" in ip("-n", ns, "rule").stdout
    time.sleep(1.0)  # the buckets age: one that was rebuilt would be new again
    before = _buckets(ns)
    assert sorted(before) == list(range(16)) and {h for h, _ in before.values()} == set(HOPS)

    _zebra_route(ns, [HOPS[0], HOPS[2]])  # lb-2 withdrawn
    assert wait_until(lambda: _table(ns) == [HOPS[0], HOPS[2]], 10, poll=0.05), _table(ns)
    after = _buckets(ns)
    # Every bucket the survivors had is still theirs, the same bucket, not a rebuilt one;
    # only the leaver's moved.
    kept = [i for i, (h, _) in before.items() if h != HOPS[1]]
    assert all(after[i][0] == before[i][0] and after[i][1] >= 1.0 for i in kept), (before, after)
    assert HOPS[1] not in {h for h, _ in after.values()}

    _zebra_route(ns, [])  # nobody announces: the table empties, the lookup falls through to main
    assert wait_until(lambda: _table(ns) == [], 10, poll=0.05)
    assert ip("-n", ns, "nexthop", "show", "id", str(resilient.GROUP_ID), check=False).returncode != 0

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert f"lookup {TABLE}" not in ip("-n", ns, "rule").stdout
    assert ip("-n", ns, "nexthop", "show").stdout.strip() == ""  # its next hops gone with it
