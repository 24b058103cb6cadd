"""The lab's Prometheus against the lab's edge pods: issue 13's "done when", for real.

One lab (its own prefix) for the module. Every VRRP fact below comes from
Prometheus's query and alerts API: what it scraped from the vrrp-exporters
with `prometheus_config`'s jobs, and what it evaluated of the rendered
PrometheusRule. Waits are bounded and end on the event they wait for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import running_lab

from components.monitoring import VRRP_MONITOR, job
from halb.lab.base import wait_until
from halb.lab.faults import inject
from halb.lab.journal import same_process
from halb.lab.lab import Lab
from halb.lab.metrics import VrrpView
from halb.lab.teardown import teardown

pytestmark = pytest.mark.netns

# A few 500 ms scrapes and evaluations; keepalived's failover itself is ~150 ms.
SCRAPED_S = 10.0
SPLIT_ALERT_S = 15.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab() as lab:
        yield lab


def by_node(lab: Lab, metric: str) -> dict[str, float]:
    """metric{job=<the exporters' job>} per `node` label, as Prometheus has it now."""
    v = job(lab.plan.settings, VRRP_MONITOR)
    return {labels["node"]: value for labels, value in lab.prometheus.query(f'{metric}{{job="{v}"}}')}


def vrrp_view(lab: Lab) -> dict[str, dict[str, float]]:
    return {
        "state": by_node(lab, "keepalived_vrrp_state"),
        "held": by_node(lab, "halb_vip_held"),
        "masters": by_node(lab, "keepalived_become_master_total"),
    }


def sole_master(view: dict[str, dict[str, float]]) -> str | None:
    """The one node with state 2 and the VIP, if exactly one node has each, and it is the same."""
    masters = [n for n, v in view["state"].items() if v == 2]
    holders = [n for n, v in view["held"].items() if v == 1]
    return masters[0] if masters == holders and len(masters) == 1 else None


def alert_states(lab: Lab, name: str, **labels: str) -> list[str]:
    """The states of the active alerts `name` whose labels include `labels`."""
    want = {"alertname": name, **labels}.items()
    return [a["state"] for a in lab.prometheus.alerts() if want <= a["labels"].items()]


def test_after_up_one_host_is_master_and_holds_the_vip(healthy: Lab) -> None:
    lab = healthy
    views: list[dict[str, Any]] = []

    def one_master() -> bool:
        views.append(vrrp_view(lab))
        return sole_master(views[-1]) is not None and set(views[-1]["state"]) == {"lb-1", "lb-2"}

    assert wait_until(one_master, SCRAPED_S, poll=0.2), views[-1]
    view = views[-1]
    master = sole_master(view)
    assert master == lab.master()
    assert sorted(view["state"].values()) == [1, 2] and sorted(view["held"].values()) == [0, 1]
    # `lab status` reads the same exporters.
    for n in lab.status()["nodes"]:
        if n["role"] == "load-balancer":
            assert n["vrrp_source"] == "exporter", n
            assert n["vrrp_state"] == ("MASTER" if n["name"] == master else "BACKUP")
            assert n["become_master_total"] == view["masters"][n["name"]]
    assert lab.prometheus.status() == {
        "url": "http://192.0.2.252:9090",
        "netns": lab.plan.prometheus_netns,
        "firing": lab.prometheus.firing(),
    }


def test_master_crash_moves_state_and_vip_and_counts_one_failover(healthy: Lab) -> None:
    lab = healthy
    before: list[dict[str, Any]] = []

    def scraped() -> bool:
        before.append(vrrp_view(lab))
        return sole_master(before[-1]) is not None and len(before[-1]["masters"]) == 2

    assert wait_until(scraped, SCRAPED_S, poll=0.2), before[-1]
    master = sole_master(before[-1])
    assert master is not None
    (other,) = [n.name for n in lab.plan.lb_nodes if n.name != master]
    count = before[-1]["masters"][other]
    inject(lab, "crash", master)
    after: list[dict[str, Any]] = []

    def moved() -> bool:
        after.append(vrrp_view(lab))
        return sole_master(after[-1]) == other and after[-1]["masters"].get(other) == count + 1

    assert wait_until(moved, SCRAPED_S, poll=0.2), (before[-1], after[-1])
    # The crashed host is unreachable: its series went stale, its target is down.
    assert master not in after[-1]["state"]
    assert by_node(lab, "up") == {master: 0.0, other: 1.0}
    # By node: lab up's first MASTER has one too if Prometheus saw its counter at 0.
    assert wait_until(lambda: alert_states(lab, "HalbVipFailover", node=other) == ["firing"], SCRAPED_S, 0.2)


def test_partition_fires_the_two_holders_alert_and_heal_clears_it(healthy: Lab) -> None:
    lab = healthy
    assert wait_until(lambda: not alert_states(lab, "HalbVipMultipleHolders"), SCRAPED_S, poll=0.2)
    inject(lab, "partition", None)
    try:
        fired = wait_until(
            lambda: alert_states(lab, "HalbVipMultipleHolders") == ["firing"], SPLIT_ALERT_S, 0.2
        )
        assert fired, lab.prometheus.alerts()
        assert sorted(by_node(lab, "halb_vip_held").values()) == [1, 1]
        (alert,) = [
            a for a in lab.prometheus.alerts() if a["labels"]["alertname"] == "HalbVipMultipleHolders"
        ]
        assert float(alert["value"]) == 2 and alert["labels"]["severity"] == "critical"
    finally:
        inject(lab, "heal", None)
    assert wait_until(lambda: not alert_states(lab, "HalbVipMultipleHolders"), SCRAPED_S, poll=0.2), (
        lab.prometheus.alerts()
    )
    assert sorted(by_node(lab, "halb_vip_held").values()) == [0, 1]


def test_an_exporter_that_does_not_answer_is_said(healthy: Lab) -> None:
    """`lab status` falls back to keepalived's log and says why, while the exporter is gone."""
    lab = healthy
    node = lab.plan.lb_nodes[0].name
    pid = lab.daemon_pid(node, "vrrp-exporter")
    assert pid is not None
    os.kill(pid, 9)  # the kubelet restarts the container at its next relist
    views: list[VrrpView] = []

    def fell_back() -> bool:
        views.append(lab.vrrp(node))
        return views[-1].source != "exporter"

    assert wait_until(fell_back, 5.0, poll=0.02), views[-1]
    assert views[-1].source.startswith(
        "keepalived log (exporter at http://127.0.0.1:9165/metrics did not answer"
    )
    assert views[-1].state in ("MASTER", "BACKUP")
    assert wait_until(lambda: lab.vrrp(node).source == "exporter", 30.0, poll=0.2)


def test_down_removes_prometheus_and_its_storage(lab: Lab) -> None:
    """Last in the module: takes the module's lab down (the fixture's down then finds nothing)."""
    (sup,) = [e for e in lab.journal.entries("supervisor") if e.get("name") == "prometheus"]
    data = lab.dir / "prometheus" / "data"
    assert same_process(sup["pid"], sup["start"]) and data.is_dir()
    teardown(lab.plan.prefix, lambda _: None)
    assert not same_process(sup["pid"], sup["start"])
    assert not data.exists() and not lab.dir.exists()
