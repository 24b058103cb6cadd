"""The lab's pure parts: plan from settings, placement, outage arithmetic."""

from __future__ import annotations

import ipaddress

import pytest
from conftest import lab_value, settings_of, stack_raw, with_overrides

from components.haproxy_cfg import service_fqdn
from components.settings import SettingsError, parse_settings
from halb.lab.measure import outage
from halb.lab.probe import Attempt
from halb.lab.topology import LabPlanError, place_replicas, plan_lab


def test_plan_of_the_lab_stack() -> None:
    plan = plan_lab(settings_of("lab"), "halb", "abc123")
    assert plan.namespaces == [
        "halb-abc123~switch",
        "halb-abc123~client",
        "halb-abc123~dns",
        "halb-abc123~prom",
        "halb-abc123~rogue",
        "halb-abc123-app-1",
        "halb-abc123-app-2",
        "halb-abc123-lb-1",
        "halb-abc123-lb-2",
    ]
    assert str(plan.vip) == "192.0.2.10" and plan.interface == "eth0"
    assert plan.client_address == ipaddress.IPv4Address("192.0.2.254")
    assert plan.dns_address == ipaddress.IPv4Address("192.0.2.253")
    # The lab stack enables monitoring: the lab runs a Prometheus of its own.
    assert plan.prometheus_address == ipaddress.IPv4Address("192.0.2.252")
    assert plan.prometheus_url == "http://192.0.2.252:9090"
    assert [str(n.address) for n in plan.lb_nodes] == ["192.0.2.11", "192.0.2.12"]
    assert len({n.port for n in plan.nodes}) == len(plan.nodes)
    assert plan.node("lb-1").labels == {"role": "load-balancer", "kubernetes.io/hostname": "lb-1"}


def test_no_prometheus_namespace_or_address_without_monitoring() -> None:
    with_prom = plan_lab(settings_of("lab"), "halb", "x")
    plan = plan_lab(parse_settings(with_overrides(stack_raw("lab"), monitoring=None)), "halb", "x")
    assert plan.prometheus_netns is None and plan.prometheus_address is None and plan.prometheus_url is None
    assert plan.namespaces == [ns for ns in with_prom.namespaces if ns != "halb-x~prom"]
    # Its address goes back to the replicas' pool.
    assert ipaddress.IPv4Address("192.0.2.252") in {r.address for r in plan.replicas}


def test_a_host_named_like_a_lab_namespace_cannot_collide() -> None:
    hosts = lab_value("hosts")
    hosts["switch"] = {"role": "apps"}
    hosts["client"] = {"role": "apps"}
    hosts["prom"] = {"role": "apps"}
    plan = plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)), "halb", "x")
    assert len(set(plan.namespaces)) == len(plan.namespaces)


def test_replicas_spread_over_apps_hosts_each_with_its_own_address() -> None:
    s = parse_settings(
        with_overrides(stack_raw("lab"), services=[{**lab_value("services")[0], "replicas": 3}])
    )
    assert [(node, i) for _, node, _, i in place_replicas(s)] == [("app-1", 0), ("app-2", 1), ("app-1", 2)]
    plan = plan_lab(s)
    addresses = [r.address for r in plan.replicas]
    assert len(set(addresses)) == 3
    assert not set(addresses) & ({n.address for n in plan.nodes} | {plan.vip, plan.client_address})


def test_cluster_dns_answers_each_headless_service_with_its_replicas() -> None:
    s = settings_of("lab")
    plan = plan_lab(s)
    records = plan.dns_records()
    shop = next(svc for svc in s.services if svc.name == "shop")
    assert records[service_fqdn(s, shop)] == [str(r.address) for r in plan.replicas if r.service == "shop"]
    assert plan.search_domains("web-edge") == [
        "web-edge.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]


def test_refuses_vip_outside_test_nets() -> None:
    with pytest.raises(LabPlanError) as err:
        plan_lab(settings_of("prod"))
    assert err.value.problems[0].startswith(
        "rancher-ha-lb:vip.address: 10.10.10.2/24 is outside the lab's TEST-NET ranges"
    )
    # It does not call the stack's subnet a TEST-NET range.
    assert "10.10.10.0/24" not in err.value.problems[0]


def test_refuses_host_outside_test_nets() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps", "address": "10.0.0.5"}
    with pytest.raises(LabPlanError) as err:
        plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert "hosts.app-1.address: 10.0.0.5 must be in the VIP's subnet 192.0.2.0/24" in err.value.problems[0]


def test_an_apps_host_on_a_load_balancers_address_is_refused_by_the_settings() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps", "address": "192.0.2.11"}
    with pytest.raises(
        SettingsError, match=r"hosts\.app-1\.address: 192\.0\.2\.11 is also the address of lb-1"
    ):
        parse_settings(with_overrides(stack_raw("lab"), hosts=hosts))


def test_apps_hosts_without_address_get_free_ones() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps"}
    plan = plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert plan.node("app-1").address == ipaddress.IPv4Address("192.0.2.254")
    assert plan.client_address == ipaddress.IPv4Address("192.0.2.253")


def test_refuses_a_subnet_too_small_for_the_lab() -> None:
    lb = "load-balancer"
    hosts = {"lb-1": {"role": lb, "address": "192.0.2.1"}, "lb-2": {"role": lb, "address": "192.0.2.2"},
             "app-1": {"role": "apps"}}  # fmt: skip
    raw = with_overrides(stack_raw("lab"), hosts=hosts, vip={"address": "192.0.2.3/29", "routerId": 51})
    with pytest.raises(
        LabPlanError, match=r"needs 10 free addresses in 192\.0\.2\.0/29 .*, a rogue host, Prometheus\)"
    ):
        plan_lab(parse_settings(raw))


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


@pytest.mark.parametrize("address", ["198.51.100.21", "203.0.113.21"])
def test_refuses_an_apps_host_in_another_test_net_than_the_vips(address: str) -> None:
    """A TEST-NET address is not enough: the lab has one switch, one subnet."""
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps", "address": address}
    with pytest.raises(LabPlanError) as err:
        plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert err.value.problems == [
        f"rancher-ha-lb:hosts.app-1.address: {address} must be in the VIP's subnet 192.0.2.0/24, "
        "itself a TEST-NET range, for the lab"
    ]


def test_the_plan_pinned_whole() -> None:
    """Defaults, every replica's placement and address, the error text."""
    from halb.lab.topology import Replica

    plan = plan_lab(settings_of("lab"))
    assert (plan.prefix, plan.lab_id) == ("halb", "0")
    assert plan.node("lb-1").netns == "halb-0-lb-1" and plan.switch_netns == "halb-0~switch"
    a = ipaddress.IPv4Address
    assert plan.replicas == (
        Replica("shop", "app-1", 8080, 0, a("192.0.2.251")),
        Replica("shop", "app-2", 8080, 1, a("192.0.2.250")),
        Replica("blog", "app-1", 8081, 0, a("192.0.2.249")),
        Replica("blog", "app-2", 8081, 1, a("192.0.2.248")),
    )
    with pytest.raises(KeyError, match="nope"):
        plan.node("nope")
    with pytest.raises(LabPlanError) as err:
        plan_lab(settings_of("prod"))
    assert str(err.value) == "\n".join(err.value.problems) and len(err.value.problems) == 3
    assert err.value.problems[0] == (
        "rancher-ha-lb:vip.address: 10.10.10.2/24 is outside the lab's TEST-NET ranges "
        "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24); the lab only uses documentation addresses"
    )


def test_a_host_on_the_subnets_broadcast_address_is_refused_by_the_lab() -> None:
    hosts = lab_value("hosts")
    hosts["app-1"] = {"role": "apps", "address": "192.0.2.255"}
    with pytest.raises(LabPlanError) as err:
        plan_lab(parse_settings(with_overrides(stack_raw("lab"), hosts=hosts)))
    assert err.value.problems == [
        "rancher-ha-lb:hosts.app-1.address: 192.0.2.255 is also the VIP's; "
        "every lab host needs its own address"
    ]


@pytest.mark.parametrize(("length", "refused"), [(248, False), (249, True)])
def test_a_host_name_fits_a_network_namespace_name(length: int, refused: bool) -> None:
    # halb-0-<name>: 255 bytes at most; a node name is DNS labels of 63 at most.
    name = ".".join(["a" * 63] * 3) + "." + "b" * (length - 3 * 64)
    assert len(name) == length
    hosts = lab_value("hosts")
    hosts[name] = {"role": "apps"}
    s = parse_settings(with_overrides(stack_raw("lab"), hosts=hosts))
    if not refused:
        plan_lab(s)
        return
    with pytest.raises(LabPlanError) as err:
        plan_lab(s)
    assert err.value.problems == [f"rancher-ha-lb:hosts.{name}: too long a name for a lab network namespace"]


def test_a_subnet_with_exactly_enough_addresses_is_enough() -> None:
    lb = "load-balancer"
    hosts = {"lb-1": {"role": lb, "address": "192.0.2.1"}, "lb-2": {"role": lb, "address": "192.0.2.2"},
             "app-1": {"role": "apps"}}  # fmt: skip
    services = [{**lab_value("services")[0], "replicas": 5}]
    raw = with_overrides(
        stack_raw("lab"), hosts=hosts, services=services, vip={"address": "192.0.2.3/28", "routerId": 51}
    )
    plan = plan_lab(parse_settings(raw))  # 11 free: app-1, 5 replicas, 2 client, DNS, rogue, Prometheus
    assert len(plan.replicas) == 5
    assert plan.client_other_address not in (plan.client_address, *(r.address for r in plan.replicas))
    assert plan.rogue_address not in (
        plan.client_address,
        plan.client_other_address,
        *(r.address for r in plan.replicas),
    )
    services = [{**lab_value("services")[0], "replicas": 6}]
    with pytest.raises(LabPlanError) as err:
        plan_lab(parse_settings(with_overrides(raw, services=services)))
    assert err.value.problems == [
        "rancher-ha-lb:vip.address: the lab needs 12 free addresses in 192.0.2.0/28 "
        "(hosts without one, 6 app replicas, two client addresses, DNS, a rogue host, Prometheus); it has 11"
    ]
