"""The BGP mode in the lab (issue 23): the shipped edge pods announcing the VIP to an FRR router.

Three load-balancer hosts (Pulumi.lab-bgp.yaml) each announce the VIP /32
while their HAProxy is healthy and not draining; the router spreads the
client's flows over them (ECMP, L4 hash) and BFD (100 ms x 3) takes a dead
host out. Guards here, not measurements: the benchmark measures.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from conftest import running_lab, stack_raw

from components.edge_pod import STEER_TABLE, TOLD_FILE
from halb.bench.bgp import accepted, new_connections, set_draining
from halb.lab import router
from halb.lab.apply import drain as lab_drain
from halb.lab.apply import uncordon
from halb.lab.base import in_ns, run, wait_until
from halb.lab.faults import inject, lab_images, stall
from halb.lab.handoff import steered_packets
from halb.lab.held import held
from halb.lab.lab import Lab

pytestmark = pytest.mark.netns

EVERY = ["lb-1", "lb-2", "lb-3"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(stack_raw("lab-bgp"), "lab-bgp") as the_lab:
        yield the_lab


def hops(lab: Lab) -> list[str]:
    return router.hop_nodes(lab.plan)


@pytest.fixture
def whole(lab: Lab) -> Iterator[Lab]:
    assert wait_until(lambda: hops(lab) == EVERY, 60, poll=0.2), lab.status()
    yield lab
    for n in EVERY:
        undrain(lab, n)
    assert wait_until(lambda: hops(lab) == EVERY, 60, poll=0.2), lab.status()


def drain(lab: Lab, node: str) -> None:
    set_draining(lab, node, True)


def undrain(lab: Lab, node: str) -> None:
    set_draining(lab, node, False)


def test_every_host_announces_and_the_router_spreads_flows_over_them(whole: Lab) -> None:
    lab = whole
    for n in EVERY:
        assert lab.bgp_state(n)["announced"] is True
    before = accepted(lab)
    assert new_connections(lab, 300) == 300
    after = accepted(lab)
    share = {n: after[n] - before[n] for n in EVERY}
    assert sum(share.values()) >= 300, share
    # An L4 hash over 300 flows: every host takes a real share (the benchmark measures how even).
    assert all(v >= 45 for v in share.values()), share


def test_a_draining_host_is_withdrawn_and_comes_back(whole: Lab) -> None:
    lab = whole
    drain(lab, "lb-2")
    assert wait_until(lambda: hops(lab) == ["lb-1", "lb-3"], 5, poll=0.02), lab.status()
    assert lab.bgp_state("lb-2") == {**lab.bgp_state("lb-2"), "announced": False, "reason": "draining"}
    before = accepted(lab)
    assert new_connections(lab, 60) == 60
    assert accepted(lab)["lb-2"] == before["lb-2"]  # no new flow reaches it
    undrain(lab, "lb-2")
    assert wait_until(lambda: hops(lab) == EVERY, 10, poll=0.05), lab.status()


def test_haproxy_death_withdraws_the_host_at_once(whole: Lab) -> None:
    lab = whole
    inject(lab, "kill-haproxy", "lb-3")
    # haproxy-watch sees it within milliseconds; the announcer withdraws (a guard, not a number).
    assert wait_until(lambda: "lb-3" not in hops(lab), 3, poll=0.02), lab.status()
    assert new_connections(lab, 30) == 30
    # The kubelet restarts HAProxy; once healthy again (rise) the host is announced again.
    assert wait_until(lambda: hops(lab) == EVERY, 30, poll=0.1), lab.status()


def test_a_crashed_host_is_dropped_by_bfd_and_the_others_serve(whole: Lab) -> None:
    """Power loss: no Cease, no withdrawal; BFD (100 ms x 3) at the router takes the route out."""
    lab = whole
    inject(lab, "crash", "lb-1")
    try:
        assert wait_until(lambda: "lb-1" not in hops(lab), 3, poll=0.01), lab.status()
        assert hops(lab) == ["lb-2", "lb-3"]
        assert new_connections(lab, 30) == 30
    finally:
        inject(lab, "restore", "lb-1")
    assert wait_until(lambda: hops(lab) == EVERY, 60, poll=0.2), lab.status()


def test_the_host_firewall_lets_only_the_router_speak_bgp(whole: Lab) -> None:
    lab = whole
    rogue = lab.plan.rogue_netns
    assert rogue is not None
    target = str(lab.plan.node("lb-1").address)
    code = f"import socket\ns=socket.socket(); s.settimeout(1)\nprint(s.connect_ex(('{target}',179)))\n"
    refused = run(in_ns(rogue, "python3", "-c", code), check=False).stdout.strip()
    assert refused not in ("0", ""), "a non-peer opened a BGP connection"
    counters = json.loads(run(in_ns(lab.plan.node("lb-1").netns, "nft", "-j", "list", "counter", "ip",
                                    "halb_edge", "bgp_refused")).stdout)  # fmt: skip
    packets = [c["counter"]["packets"] for c in counters["nftables"] if "counter" in c]
    assert packets and packets[0] >= 1


def test_frr_needs_sys_admin_and_refuses_to_start_without_it(lab: Lab) -> None:
    """The one capability FRR uses for nothing here (VRF switching), yet demands:
    without it zebra exits (lib/privs.c) and the host never announces."""
    from test_lab_pods import drop_capability

    node = "lb-3"
    assert wait_until(lambda: hops(lab) == EVERY, 60, poll=0.2), lab.status()
    lab.pods.delete(node)
    try:
        edit = drop_capability("frr", "SYS_ADMIN")
        lab.pods.start(node, lab_images(lab), lambda _: None, edit=edit)
        log = lab.dir / "logs" / f"{node}.frr.log"
        refused = "privs_init: initial cap_set_proc failed"
        assert wait_until(lambda: log.exists() and refused in log.read_text(), 20, poll=0.1)
        assert node not in hops(lab)
    finally:
        lab.pods.delete(node)
        lab.pods.start(node, lab_images(lab), lambda _: None)
    assert wait_until(lambda: hops(lab) == EVERY, 60, poll=0.2), lab.status()


def scrape(lab: Lab, node: str) -> dict[str, float]:
    """halb-bgp's /metrics on the host's own address, as Prometheus scrapes it: series -> value."""
    n = lab.plan.node(node)
    url = f"http://{n.address}:{lab.plan.settings.vrrp.metrics_port}/metrics"
    out = run(in_ns(n.netns, "curl", "-fsS", "--max-time", "5", url), 15).stdout
    samples = [line.rsplit(" ", 1) for line in out.splitlines() if line[:1] != "#"]
    return {series: float(value) for series, value in samples}


def test_metrics_say_what_each_host_announces_and_how_its_sessions_stand(whole: Lab) -> None:
    lab = whole
    vip, peer = lab.plan.vip, lab.plan.router_address
    for n in EVERY:
        m = scrape(lab, n)
        assert m[f'halb_bgp_announced{{vip="{vip}"}}'] == 1, m
        assert m[f'halb_bgp_session_up{{peer="{peer}"}}'] == 1
        assert m[f'halb_bfd_session_up{{peer="{peer}"}}'] == 1
        assert m["halb_haproxy_up"] == 1 and m["halb_frr_up"] == 1 and m["halb_bgp_draining"] == 0
    changed = f'halb_bgp_announcement_changes_total{{vip="{vip}"}}'
    changes = scrape(lab, "lb-2")[changed]
    drain(lab, "lb-2")
    assert wait_until(lambda: scrape(lab, "lb-2")[f'halb_bgp_announced{{vip="{vip}"}}'] == 0, 30, poll=0.5)
    m = scrape(lab, "lb-2")
    assert m["halb_bgp_draining"] == 1 and m[changed] == changes + 1
    # Not on the VIP: it sits on every host's lo, and a scrape there would reach any of them.
    other = lab.plan.node("lb-1")
    on_vip = f"http://{vip}:{lab.plan.settings.vrrp.metrics_port}/metrics"
    assert run(in_ns(other.netns, "curl", "-s", "--max-time", "2", on_vip), 10, check=False).returncode != 0


def alert_states(lab: Lab, name: str, **labels: str) -> list[str]:
    want = {"alertname": name, **labels}.items()
    return [a["state"] for a in lab.prometheus.alerts() if want <= a["labels"].items()]


def test_the_bgp_alerts_fire_on_the_labs_prometheus(whole: Lab) -> None:
    """A hung HAProxy withdraws its host: HalbBgpHostWithdrawn fires for it and clears once it
    answers again; a drained host is withdrawn on purpose: only the info alert says so."""
    lab = whole
    assert lab.prometheus.enabled
    assert wait_until(lambda: not alert_states(lab, "HalbBgpHostWithdrawn"), 30, poll=0.2), (
        lab.prometheus.alerts()
    )
    hang = threading.Thread(target=stall, args=(lab, "lb-2", "haproxy", 10.0))
    hang.start()
    try:
        # fall x interval unanswered (~2 s), the withdrawal, then the rule's `for` (4 scrapes).
        fired = wait_until(
            lambda: alert_states(lab, "HalbBgpHostWithdrawn", node="lb-2") == ["firing"], 9, 0.1
        )
        assert fired, lab.prometheus.alerts()
        assert alert_states(lab, "HalbVipNotAnnounced") == []  # the others announce
    finally:
        hang.join()
    assert wait_until(lambda: not alert_states(lab, "HalbBgpHostWithdrawn"), 30, poll=0.2), (
        lab.prometheus.alerts()
    )

    drain(lab, "lb-3")
    assert wait_until(lambda: "lb-3" not in hops(lab), 10, poll=0.1), lab.status()
    changed = wait_until(
        lambda: alert_states(lab, "HalbBgpAnnouncementChanged", node="lb-3") == ["firing"], 10, 0.2
    )
    assert changed, lab.prometheus.alerts()
    assert alert_states(lab, "HalbBgpHostWithdrawn", node="lb-3") == []


def steer_table(lab: Lab, node: str) -> str:
    return run(
        in_ns(lab.plan.node(node).netns, "nft", "list", "table", "ip", STEER_TABLE), check=False
    ).stdout


def test_a_drained_host_has_its_peers_steer_its_flows_back_to_it(whole: Lab) -> None:
    """The drain flag makes lb-2's steer container tell its peers first; halb-bgp withdraws only
    then. The router moves lb-2's flows to them, and they send those packets back to lb-2 for the
    drain (vrrp.handoff.drainSeconds), as a VRRP handoff's new MASTER does."""
    lab = whole
    lb2 = str(lab.plan.node("lb-2").address)
    peers = ("lb-1", "lb-3")
    with held(lab, "ws", 30, host="shop.lab.invalid") as h:
        drain(lab, "lb-2")
        assert wait_until(lambda: "lb-2" not in hops(lab), 10, poll=0.05), lab.status()
        tables = {n: steer_table(lab, n) for n in peers}
        assert all(f"dup to {lb2} " in t for t in tables.values()), "\n".join(
            f"{k}: {v}" for k, v in tables.items()
        )
        # The websockets speak every second: those lb-2 held now arrive at its peers.
        assert wait_until(lambda: sum(steered_packets(lab, n) for n in peers) > 0, 5, 0.2)
        h.stop()
    for n in peers:
        assert scrape(lab, n)['halb_handoff_messages_total{result="accepted"}'] >= 1
    assert lab.pods.shared_path("lb-2", TOLD_FILE).read_text().startswith("1 ")
    # After the drain (and its second), the peers' steering is gone.
    drain_s = lab.plan.settings.vrrp.handoff.drain_seconds
    assert wait_until(lambda: all("dup to" not in steer_table(lab, n) for n in peers), drain_s + 10, 0.5)


def test_deleting_a_hosts_pod_has_its_peers_steer_first_then_it_withdraws(whole: Lab) -> None:
    """A real planned removal: the pod evicted, its preStops run. The kubelet stops every
    container at once; the steer container's own preStop keeps it up until the frr
    container's has drained, so the peers are told and steer before the router moves lb-2's
    flows to them (without it steer is gone before the drain flag is written)."""
    lab = whole
    lb2 = str(lab.plan.node("lb-2").address)
    peers = ("lb-1", "lb-3")
    evict = threading.Thread(target=lab_drain, args=(lab, "lb-2", lambda _: None))
    try:
        with held(lab, "ws", 20, host="shop.lab.invalid") as h:
            evict.start()
            assert wait_until(lambda: "lb-2" not in hops(lab), 20, poll=0.02), lab.status()
            tables = {n: steer_table(lab, n) for n in peers}  # already there when the route went
            assert all(f"dup to {lb2} " in t for t in tables.values()), tables
            assert wait_until(lambda: sum(steered_packets(lab, n) for n in peers) > 0, 5, 0.2)
            h.stop()
        evict.join(timeout=120)
        assert not evict.is_alive()
    finally:
        evict.join(timeout=120)
        uncordon(lab, "lb-2", lambda _: None)
