"""Whole messages and boundaries the mutation sample (docs/mutation.md) showed unpinned."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import lab_value, stack_raw, with_overrides

from components.settings import SettingsError, parse_settings
from components.values import quantity, short_name

P = "rancher-ha-lb:"
HOSTS = lab_value("hosts")
SERVICES = lab_value("services")


def problems(**changes: Any) -> list[str]:
    with pytest.raises(SettingsError) as err:
        parse_settings(with_overrides(stack_raw("lab"), **changes))
    return err.value.problems


def test_a_long_apps_node_name_is_the_plain_message() -> None:
    name = "a" * 254
    hosts = {**HOSTS, name: {"role": "apps"}}
    assert problems(hosts=hosts) == [
        f"{P}hosts.{short_name(name)}: 254 characters; a node name may have at most 253"
    ]


def test_the_default_edge_namespace_may_have_63_characters_not_64() -> None:
    ok = "n" * 58  # + "-edge": 63
    assert parse_settings(
        with_overrides(stack_raw("lab"), namespace=ok, edgeNamespace=None)
    ).edge_namespace == (ok + "-edge")
    long = "n" * 59
    assert problems(namespace=long, edgeNamespace=None) == [
        f"{P}namespace: the default edgeNamespace '{short_name(long + '-edge')}' would have 64 characters "
        "(at most 63); set edgeNamespace or shorten namespace"
    ]


def test_a_second_service_without_hostnames_is_the_whole_message() -> None:
    services = [SERVICES[0], {**SERVICES[1], "hostnames": []}]
    assert problems(services=services) == [
        f"{P}services[1].hostnames: empty; only the first HTTP service (the default backend) can do without "
        "hostnames or paths, any other would never be reached"
    ]


def test_a_registry_password_without_a_registry_is_the_whole_message() -> None:
    raw = with_overrides(stack_raw("lab"), secret=True, registryPassword="pw", registry=None)
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    assert err.value.problems == [
        f"{P}registryPassword: set without {P}registry; add registry.server and registry.username"
    ]


def test_only_rancher2_insecure_reads_true_and_false_as_booleans() -> None:
    changes: dict[str, Any] = {"rancher2:caCerts": "true"}
    s = parse_settings(with_overrides(stack_raw("lab"), **changes))
    assert s.rancher.ca_certs == "true"


def test_the_address_of_a_host_without_one_names_the_host() -> None:
    hosts = {**HOSTS, "app-9": {"role": "apps"}}
    s = parse_settings(with_overrides(stack_raw("lab"), hosts=hosts))
    with pytest.raises(KeyError, match="app-9"):
        s.address("app-9")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1E3", 1000),
        ("1e3", 1000),
        ("2.5E-1", 0.25),
    ],
)
def test_exponent_quantities_in_either_case(value: str, expected: float) -> None:
    assert quantity(value) == expected


def test_a_boolean_quantity_is_called_a_boolean() -> None:
    services = [{**SERVICES[0], "resources": {"cpu": True}}, *SERVICES[1:]]
    assert problems(services=services) == [
        f"{P}services[0].resources.cpu: true is a boolean, not a string; quote it"
    ]


def test_boundaries_of_names_and_prefixes() -> None:
    assert short_name("k" * 48) == "k" * 48
    label = "a" * 63
    host = ".".join([label, label, label, "a" * 61])  # 253 characters
    assert len(host) == 253
    services = [SERVICES[0], {**SERVICES[1], "hostnames": [host]}]
    parse_settings(with_overrides(stack_raw("lab"), services=services))
    too_long = [SERVICES[0], {**SERVICES[1], "hostnames": [host + "a"]}]
    assert len(problems(services=too_long)) == 1
    wide = {**lab_value("vip"), "address": "10.0.0.2/8"}
    hosts = {n: {**h, "address": h["address"].replace("192.0.2.", "10.0.0.")} if "address" in h else h
             for n, h in HOSTS.items()}  # fmt: skip
    s = parse_settings(with_overrides(stack_raw("lab"), vip=wide, hosts=hosts))
    assert s.vip.address.network.prefixlen == 8


def test_a_whole_float_is_a_whole_number() -> None:
    services = [{**SERVICES[0], "replicas": 3.0}, *SERVICES[1:]]
    s = parse_settings(with_overrides(stack_raw("lab"), services=services))
    assert s.services[0].replicas == 3 and isinstance(s.services[0].replicas, int)
