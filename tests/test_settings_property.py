"""Property: any stack config gives valid Settings or SettingsError messages, never a crash."""

from __future__ import annotations

import json
from typing import Any

from conftest import stack_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import RawConfig, Settings, SettingsError, parse_settings

PROJECT_KEYS = [
    "cluster", "namespace", "edgeNamespace", "project", "clusterDomain", "hosts", "vip", "vrrp",
    "services", "loadBalancer", "keepalived", "registry", "vrrpAuthPass", "registryPassword", "bogus",
]  # fmt: skip
LAB = {k: json.loads(v) if v[:1] in "[{" else v for k, v in stack_raw("lab").values.items()}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["load-balancer", "apps", "app", "192.0.2.10/24", "192.0.2.11", "eth0", "shop"])
    | st.sampled_from(["yes", "no", "8080", "true", "2024-01-01", "1_0:00", "100m", "*.x.invalid", "{a}"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=24,
)


def check(raw: RawConfig) -> None:
    try:
        result = parse_settings(raw)
    except SettingsError as err:
        assert err.problems
        for problem in err.problems:
            key, sep, message = problem.partition(": ")
            assert sep and message, problem
            assert "\n" not in problem and len(problem) < 600, problem
            assert key.startswith(("rancher-ha-lb:", "rancher2:")), problem
        return
    assert isinstance(result, Settings)


def encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(PROJECT_KEYS), values, max_size=8), st.booleans())
def test_random_configs_never_crash(config: dict[str, Any], with_url: bool) -> None:
    raw = {f"rancher-ha-lb:{k}": encode(v) for k, v in config.items()}
    if with_url:
        raw["rancher2:apiUrl"] = "https://rancher.example.com"
    check(RawConfig(raw))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = [p for p in _paths(LAB) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), values)
def test_one_mutated_leaf_of_a_valid_stack_never_crashes(path: tuple[Any, ...], value: Any) -> None:
    doc = json.loads(json.dumps(LAB))
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    check(RawConfig({k: encode(v) for k, v in doc.items()}))


def test_nan_advert_interval_is_a_message_not_a_crash() -> None:
    raw = dict(stack_raw("lab").values)
    raw["rancher-ha-lb:vrrp"] = json.dumps({"advertInterval": float("nan")})
    try:
        parse_settings(RawConfig(raw))
    except SettingsError as err:
        assert err.problems == ["rancher-ha-lb:vrrp.advertInterval: nan is not a (finite) number"]
    else:
        raise AssertionError("NaN accepted")
