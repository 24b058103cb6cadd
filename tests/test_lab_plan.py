"""The lab's pure parts: plan from settings, placement, outage arithmetic."""

from __future__ import annotations

import ipaddress

import pytest
from conftest import lab_value, settings_of, stack_raw, with_overrides

from components.haproxy_cfg import StaticBackend
from components.settings import parse_settings
from halb.lab.measure import outage
from halb.lab.probe import Attempt
from halb.lab.topology import LabPlanError, lab_backends, place_replicas, plan_lab


def test_plan_of_the_lab_stack() -> None:
    plan = plan_lab(settings_of("lab"), "halb")
    assert plan.namespaces == [
        "halb-switch",
        "halb-client",
        "halb-app-1",
        "halb-app-2",
        "halb-lb-1",
        "halb-lb-2",
    ]
    assert str(plan.vip) == "192.0.2.10" and plan.interface == "eth0"
    assert plan.client_address == ipaddress.IPv4Address("192.0.2.254")
    assert [str(n.address) for n in plan.lb_nodes] == ["192.0.2.11", "192.0.2.12"]
    assert len({n.port for n in plan.nodes}) == len(plan.nodes)


def test_replicas_spread_over_apps_hosts() -> None:
    s = parse_settings(
        with_overrides(stack_raw("lab"), services=[{**lab_value("services")[0], "replicas": 3}])
    )
    assert [(r.node, r.index) for r in place_replicas(s)] == [("app-1", 0), ("app-2", 1), ("app-1", 2)]


def test_lab_backends_list_each_replica() -> None:
    plan = plan_lab(settings_of("lab"))
    backends = lab_backends(plan)
    shop = backends["shop"]
    assert isinstance(shop, StaticBackend)
    assert [(s.address, s.port) for s in shop.servers] == [("192.0.2.21", 8080), ("192.0.2.22", 8080)]
    assert "server app-1-0 192.0.2.21:8080 check" in plan.haproxy_cfg()


def test_lab_uses_the_programs_keepalived_conf() -> None:
    from components.keepalived_conf import render_keepalived_conf

    s = settings_of("lab")
    assert plan_lab(s).keepalived_conf("lb-2") == render_keepalived_conf(s, "lb-2")


def test_refuses_vip_outside_test_nets() -> None:
    with pytest.raises(LabPlanError) as err:
        plan_lab(settings_of("prod"))
    assert err.value.problems[0].startswith(
        "rancher-ha-lb:vip.address: 10.10.10.2/24 is outside the lab's TEST-NET ranges"
    )


def test_refuses_host_outside_test_nets() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps", "address": "10.0.0.5"}
    with pytest.raises(LabPlanError) as err:
        plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert "hosts.app-1.address: 10.0.0.5 must be in the VIP's TEST-NET subnet" in err.value.problems[0]


def test_apps_hosts_without_address_get_free_ones() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps"}
    plan = plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert plan.node("app-1").address == ipaddress.IPv4Address("192.0.2.254")
    assert plan.client_address == ipaddress.IPv4Address("192.0.2.253")


def test_refuses_two_services_on_one_port_of_a_host() -> None:
    services = lab_value("services")
    services[1]["port"] = services[0]["port"]
    with pytest.raises(LabPlanError, match="both listen on port 8080 of app-1"):
        plan_lab(parse_settings(with_overrides(stack_raw("lab"), services=services)))


def _a(t: float, ok: bool, ms: float = 2.0) -> Attempt:
    return Attempt(t=t, ok=ok, ms=ms, answer="host=x" if ok else None, error=None if ok else "timeout")


def test_outage_none_failed() -> None:
    assert outage([_a(0.0, True), _a(1.0, True)], 0.5).outage_s == 0.0


def test_outage_is_fault_to_first_success_after_last_failure() -> None:
    attempts = [_a(0.98, True), _a(1.00, False, 200), _a(1.20, False, 200), _a(1.40, True, 3), _a(1.42, True)]
    result = outage(attempts, 1.0)
    assert result.failed == 2 and result.total == 5
    assert result.outage_s == pytest.approx(0.403)


def test_outage_without_recovery_runs_to_the_end() -> None:
    result = outage([_a(1.0, True), _a(1.1, False, 200), _a(1.3, False, 200)], 1.05)
    assert result.outage_s == pytest.approx(0.45) and result.failed == 2
