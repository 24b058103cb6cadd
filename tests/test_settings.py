"""Settings validation: one case per rule, each message naming its key path."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import STACKS, lab_value, settings_of, stack_raw, with_overrides

from components.settings import Role, SettingsError, parse_settings

HOSTS = lab_value("hosts")
VIP = lab_value("vip")
SERVICES = lab_value("services")


def problems(**changes: Any) -> list[str]:
    secret = changes.pop("_secret", False)
    with pytest.raises(SettingsError) as err:
        parse_settings(with_overrides(stack_raw("lab"), secret=secret, **changes))
    return err.value.problems


def one(**changes: Any) -> str:
    found = problems(**changes)
    assert len(found) == 1, found
    return found[0]


def hosts(**changes: Any) -> dict[str, Any]:
    out = {k: dict(v) for k, v in HOSTS.items()}
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_parse(stack: str) -> None:
    s = settings_of(stack)
    assert len(s.lb_nodes) >= 2 and s.app_nodes


def test_lab_settings_are_what_the_file_says() -> None:
    s = settings_of("lab")
    assert s.lb_nodes == ["lb-1", "lb-2"]
    assert s.app_nodes == ["app-1", "app-2"]
    assert str(s.vip.address) == "192.0.2.10/24"
    assert s.vrrp.version == 3
    assert [s.priority(n) for n in s.lb_nodes] == [200, 190]
    assert s.hosts["lb-1"].role is Role.LOAD_BALANCER


def test_router_id_out_of_range_names_path_and_range() -> None:
    assert one(vip={**VIP, "routerId": 300}) == "rancher-ha-lb:vip.routerId: 300 is not in 1..255"
    assert one(vip={**VIP, "routerId": 0}) == "rancher-ha-lb:vip.routerId: 0 is not in 1..255"


def test_role_app_is_rejected_with_hint() -> None:
    msg = one(hosts=hosts(app_1={"role": "app"}))
    assert msg.startswith("rancher-ha-lb:hosts.app-1.role: 'app' is not a role; did you mean 'apps'?")


def test_unknown_role() -> None:
    msg = one(hosts=hosts(app_1={"role": "worker"}))
    assert "hosts.app-1.role: 'worker' is not a role (allowed: 'load-balancer', 'apps')" in msg


def test_single_load_balancer_host() -> None:
    msg = one(hosts=hosts(lb_2=None))
    assert msg.startswith("rancher-ha-lb:hosts: 1 load-balancer host(s); at least 2")


def test_no_apps_host() -> None:
    msg = one(hosts=hosts(app_1=None, app_2=None))
    assert msg.startswith("rancher-ha-lb:hosts: no 'apps' host")


def test_invalid_address() -> None:
    msg = one(hosts=hosts(lb_1={"role": "load-balancer", "address": "192.0.2.300"}))
    assert msg == "rancher-ha-lb:hosts.lb-1.address: '192.0.2.300' is not an IPv4 address"


def test_duplicate_addresses() -> None:
    msg = one(hosts=hosts(lb_2={"role": "load-balancer", "address": "192.0.2.11"}))
    assert msg == "rancher-ha-lb:hosts.lb-2.address: 192.0.2.11 is also the address of lb-1"


def test_load_balancer_address_outside_vip_subnet() -> None:
    msg = one(hosts=hosts(lb_2={"role": "load-balancer", "address": "198.51.100.12"}))
    assert msg == "rancher-ha-lb:hosts.lb-2.address: 198.51.100.12 is outside the VIP's subnet 192.0.2.0/24"


def test_load_balancer_address_missing() -> None:
    msg = one(hosts=hosts(lb_2={"role": "load-balancer"}))
    assert msg.startswith("rancher-ha-lb:hosts.lb-2.address: missing")


def test_vip_equal_to_host_address() -> None:
    msg = one(vip={**VIP, "address": "192.0.2.11/24"})
    assert msg == "rancher-ha-lb:hosts.lb-1.address: 192.0.2.11 is the VIP itself; use another address"


def test_vip_without_prefix_or_bad() -> None:
    assert "vip.address: 'nope' is not an IPv4 address with prefix" in one(vip={**VIP, "address": "nope"})


def test_service_name_not_dns_1035() -> None:
    msg = one(services=[{**SERVICES[0], "name": "Shop_1"}, SERVICES[1]])
    assert msg.startswith("rancher-ha-lb:services[0].name: 'Shop_1' is not a DNS-1035 label")


def test_duplicate_service_names() -> None:
    msg = one(services=[SERVICES[0], {**SERVICES[1], "name": "shop"}])
    assert msg == "rancher-ha-lb:services[1].name: 'shop' is also services[0]'s name"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range(port: int) -> None:
    msg = one(services=[{**SERVICES[0], "port": port}, SERVICES[1]])
    assert msg == f"rancher-ha-lb:services[0].port: {port} is not in 1..65535"


def test_port_not_a_number() -> None:
    msg = one(services=[{**SERVICES[0], "port": "http"}, SERVICES[1]])
    assert msg == "rancher-ha-lb:services[0].port: 'http' is not a whole number"


def test_replicas_at_least_two() -> None:
    msg = one(services=[{**SERVICES[0], "replicas": 1}, SERVICES[1]])
    assert msg.startswith("rancher-ha-lb:services[0].replicas: 1 is not in 2..1000 (")


def test_empty_services() -> None:
    assert one(services=[]) == "rancher-ha-lb:services: must not be empty"


def test_auth_pass_too_long() -> None:
    msg = one(vrrp={"version": 2, "advertInterval": 1}, vrrpAuthPass="ninechars", _secret=True)
    assert msg.startswith("rancher-ha-lb:vrrpAuthPass: 9 characters; keepalived allows 1..8")
    # The password itself never appears in the message.
    assert "ninechars" not in msg


def test_auth_pass_with_vrrp_v3() -> None:
    msg = one(vrrpAuthPass="secret1", _secret=True)
    assert msg.startswith("rancher-ha-lb:vrrpAuthPass: VRRPv3 has no authentication")


def test_auth_pass_with_comment_character() -> None:
    msg = one(vrrp={"version": 2, "advertInterval": 1}, vrrpAuthPass="ab#cd", _secret=True)
    assert "keepalived reads # and ! as comments" in msg


def test_auth_pass_ok_with_v2() -> None:
    raw = with_overrides(
        stack_raw("lab"), secret=True, vrrp={"version": 2, "advertInterval": 1}, vrrpAuthPass="s3cret"
    )
    s = parse_settings(raw)
    assert s.vrrp_auth_pass is not None and s.vrrp_auth_pass.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("interval", [0.5, 1.5, 0])
def test_v2_advert_interval_whole_seconds(interval: float) -> None:
    msg = one(vrrp={"version": 2, "advertInterval": interval})
    assert msg.startswith(f"rancher-ha-lb:vrrp.advertInterval: {interval} is not allowed with VRRPv2")


@pytest.mark.parametrize("interval", [0.005, 0.015, 41, 0])
def test_v3_advert_interval_range_and_step(interval: float) -> None:
    msg = one(vrrp={"version": 3, "advertInterval": interval})
    assert msg.startswith(f"rancher-ha-lb:vrrp.advertInterval: {interval} is not allowed with VRRPv3")


@pytest.mark.parametrize("interval", [0.01, 0.05, 0.1, 1, 40.95])
def test_v3_advert_interval_valid(interval: float) -> None:
    s = parse_settings(with_overrides(stack_raw("lab"), vrrp={"advertInterval": interval}))
    assert s.vrrp.advert_interval == interval


def test_vrrp_version_other_than_2_or_3() -> None:
    assert one(vrrp={"version": 4}).startswith("rancher-ha-lb:vrrp.version: 4 is not allowed")


def test_unknown_keys_say_what_was_expected() -> None:
    found = problems(vip={**VIP, "iface": "eth1"}, colour="blue")
    assert "rancher-ha-lb:colour: unknown key; expected one of: bgp, cluster," in found[0]
    assert found[1] == ("rancher-ha-lb:vip.iface: unknown key; expected one of: address, interface, routerId")


def test_missing_required_keys() -> None:
    found = problems(cluster=None, **{"rancher2:apiUrl": None})
    assert "rancher2:apiUrl: missing (required)" in found
    assert "rancher-ha-lb:cluster: missing (required)" in found


def test_all_problems_reported_at_once() -> None:
    found = problems(
        vip={**VIP, "routerId": 256},
        services=[{**SERVICES[0], "port": 0}, SERVICES[1]],
        hosts=hosts(app_1={"role": "app"}),
    )
    assert len(found) == 3, found


def test_distinct_priorities_required() -> None:
    msg = one(
        hosts=hosts(
            lb_1={"role": "load-balancer", "address": "192.0.2.11", "priority": 150},
            lb_2={"role": "load-balancer", "address": "192.0.2.12", "priority": 150},
        )
    )
    assert msg.startswith("rancher-ha-lb:hosts.lb-2.priority: 150 is also lb-1's")


def test_bad_interface_name() -> None:
    msg = one(vip={**VIP, "interface": "eth0/1"})
    assert msg.startswith("rancher-ha-lb:vip.interface: 'eth0/1' is not a Linux interface name")


def test_same_hostname_on_two_services() -> None:
    msg = one(services=[SERVICES[0], {**SERVICES[1], "hostnames": SERVICES[0]["hostnames"]}])
    assert "is already routed to 'shop'" in msg
