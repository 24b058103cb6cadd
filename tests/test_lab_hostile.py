"""Issue 22's drills in the lab, on the shipped images and rendered pods: a
non-peer's VRRP adverts, forged and replayed handoff messages and twice
maxConn connections move no VIP and fail no request; each is counted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import fresh, lab_settled, running_lab, stack_raw, with_overrides

from halb.bench.hostile import HostileRun, one_run
from halb.lab.apply import apply
from halb.lab.base import in_ns, run, wait_until
from halb.lab.lab import Lab

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab() as the_lab:
        yield the_lab


def measured(lab: Lab, kind: str) -> HostileRun:
    """The drill as the failover benchmark runs it: under the 20 ms probe."""
    return one_run(fresh(lab), "project", kind, 1)


def test_the_edge_table_is_loaded_on_every_lb_host(healthy: Lab) -> None:
    for n in healthy.plan.lb_nodes:
        out = run(in_ns(n.netns, "nft", "-j", "list", "table", "ip", "halb_edge")).stdout
        peers = next(i["set"] for i in json.loads(out)["nftables"] if "set" in i)
        assert peers["elem"] == [str(m.address) for m in healthy.plan.lb_nodes if m.name != n.name]


def test_rogue_vrrp_moves_no_vip_and_is_counted(healthy: Lab) -> None:
    r = measured(healthy, "rogue-vrrp")
    assert (r.vip_moves, r.failed) == (0, 0) and r.total > 50, r
    # Every advert reached a host and was dropped there: 40 from the rogue's address to each
    # of the 2 hosts, 40 in each host's name to the other.
    assert r.sent == 160 and r.counted["vrrp_refused"] == 160, r


def test_forged_and_replayed_handoffs_steer_nothing_and_are_counted(healthy: Lab) -> None:
    r = measured(healthy, "forged-handoff")  # a real handoff first, outside the measured window
    assert (r.vip_moves, r.failed, r.steering_tables) == (0, 0, 0), r
    assert r.counted == {"unauthenticated": 1, "malformed": 1, "stale": 1}, r
    assert wait_until(lambda: lab_settled(fresh(healthy)), 30, poll=0.2)


def calm(advert_interval: float) -> Any:
    """The lab stack with these VRRP adverts (a reload in place, no pod replaced)."""
    return with_overrides(stack_raw("lab"), vrrp={"advertInterval": advert_interval})


def test_overload_at_twice_maxconn_keeps_health_vip_and_containers(healthy: Lab) -> None:
    """At 200 ms adverts (the benchmark's `calm` profile). At the default 50 ms, the flood's
    packet drops on this shared machine cost three adverts in a row now and then, and the
    VIP moves: the failover benchmark's hostile section measures both."""
    apply(fresh(healthy), calm(0.2), "lab", lambda _: None)
    time.sleep(7)  # the kubelet's sync, keepalived's reload
    try:
        r = measured(healthy, "overload")
    finally:
        apply(fresh(healthy), stack_raw("lab"), "lab", lambda _: None)
    # The short-request probe queues behind the flood like any client: the VIP and health count
    # here. keepalived's own check decides the VIP (0 moves); the drill's extra poll, a curl
    # spawned on the flooded 2-CPU machine, may miss its 0.8 s once in a while (5% at most).
    assert r.vip_moves == 0 and r.health_checks > 20, r
    assert r.health_failures <= r.health_checks // 20, r
    assert r.restarts == 0 and r.recovered, r
    assert r.sent >= 2 * healthy.plan.settings.load_balancer.max_conn, r
