"""Small pure helpers, pinned where `make mutate` showed the suite let a change through.

Each test here kills mutants docs/mutation.md lists as once surviving: the
range validator (built at import time, so only a call at test time reaches a
mutant of it), the access message, the lab's Prometheus config.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, cast

import pulumi
import pytest
import yaml
from conftest import settings_of, stack_raw, with_overrides
from pulumi.runtime import config as runtime_config
from pulumi_rancher2 import GetClusterResult
from pydantic import SecretStr
from pydantic_core import PydanticCustomError

from components.cluster import node_command_of, required_access
from components.monitoring import prometheus_config
from components.settings import RawConfig, parse_settings
from components.settings.engine import secret_env
from components.settings.messages import message as message_of
from components.stack_config import TOKEN_ENV, TOKEN_KEY, raw_from_engine
from components.values import KIND, digits, show
from components.values import in_range as _in_range
from halb.mockcluster import CLUSTER_ID
from halb.mockrun import run_program


@pytest.mark.parametrize(("lo", "hi"), [(1, 5), (0, 86400), (2, 2)])
def test_the_range_validator_keeps_both_ends_and_refuses_one_past(lo: int, hi: int) -> None:
    check = cast(Callable[[int], int], _in_range(lo, hi).func)
    assert check(lo) == lo and check(hi) == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(PydanticCustomError) as err:
            check(bad)
        assert err.value.message() == f"{bad} is not in {lo}..{hi}"
        assert err.value.type == KIND  # no kind pydantic words itself (settings._message)


def test_the_access_a_token_needs_is_said_in_full() -> None:
    assert required_access("prod") == (
        "`pulumi up` needs the API token (no scope) of a user who is Cluster Owner of cluster 'prod' "
        "or a Rancher administrator: it creates a project, labels nodes and sets the namespaces' "
        "Pod Security labels, which Rancher's webhook allows only with the `updatepsa` verb on "
        "projects (Cluster Owner has it, Project Owner does not)"
    )


def test_the_labs_prometheus_scrapes_what_the_podmonitors_scrape() -> None:
    s = settings_of("lab")
    cfg = prometheus_config(s, {"lb-2": "192.0.2.12", "lb-1": "192.0.2.11"}, ["rules.yaml"])
    assert cfg == {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": f"{s.edge_namespace}/halb-haproxy",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": ["192.0.2.11:8404"], "labels": {"node": "lb-1"}},
                    {"targets": ["192.0.2.12:8404"], "labels": {"node": "lb-2"}},
                ],
            },
            {
                "job_name": f"{s.edge_namespace}/halb-vrrp",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": ["192.0.2.11:9165"], "labels": {"node": "lb-1"}},
                    {"targets": ["192.0.2.12:9165"], "labels": {"node": "lb-2"}},
                ],
            },
        ],
    }


@pytest.mark.parametrize(
    "api_url",
    [
        "https://rancher.example.com",
        "https://rancher.example.com/",
        "https://rancher.example.com/v3",
        "https://rancher.example.com/v3/",
    ],
)
def test_the_kubeconfig_reaches_rancher_proxy_whatever_form_the_api_url_takes(api_url: str) -> None:
    """rancher2:apiUrl may carry `/v3` (the provider adds it when missing); the proxy is beside it."""
    changes: dict[str, Any] = {"rancher2:apiUrl": api_url}
    raw = with_overrides(stack_raw("prod"), **changes)
    run = run_program(raw, "prod")
    cfg = yaml.safe_load(run.named("cluster-k8s").inputs["kubeconfig"])
    assert cfg["clusters"][0]["cluster"]["server"] == f"https://rancher.example.com/k8s/clusters/{CLUSTER_ID}"
    assert run.named("cluster-rancher").inputs["apiUrl"] == api_url


def test_the_kubeconfig_is_the_one_rancher_writes() -> None:
    """Every field client-go reads (pkg/kubeconfig in Rancher writes the same shape)."""
    import json

    from components.cluster import rancher_kubeconfig

    text = rancher_kubeconfig("https://r.example.com/v3/", "c-1", "prod", "token-x:y", "PEM\n", True)
    assert json.loads(text) == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "prod",
                "cluster": {
                    "server": "https://r.example.com/k8s/clusters/c-1",
                    "certificate-authority-data": "UEVNCg==",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "users": [{"name": "prod", "user": {"token": "token-x:y"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
        "current-context": "prod",
    }


def test_components_keep_their_type_tokens() -> None:
    """A type token is in every child's URN: changing one replaces every resource under it."""
    from conftest import rendered

    components = {r.name: r.type for r in rendered("prod").resources if not r.custom}
    assert components == {
        "rancher-ha-lb-prod": "pulumi:pulumi:Stack",
        "cluster": "rancher-ha-lb:index:ClusterAccess",
        "hosts": "rancher-ha-lb:index:HostLabels",
        "app-shop": "rancher-ha-lb:index:AppService",
        "app-api": "rancher-ha-lb:index:AppService",
        "images": "rancher-ha-lb:index:EdgeImages",
        "edge": "rancher-ha-lb:index:Edge",
        "monitoring": "rancher-ha-lb:index:Monitoring",
    }


def test_the_renderer_refuses_with_the_whole_reason() -> None:
    from components.keepalived_conf import render_keepalived_conf

    s = settings_of("prod")
    with pytest.raises(ValueError, match=r"^'app-1' is not a load-balancer host \(have: lb-1, lb-2\)$"):
        render_keepalived_conf(s, "app-1")
    with pytest.raises(
        ValueError, match=r"^auth_pass must be given exactly when settings.vrrp_auth_pass is set$"
    ):
        render_keepalived_conf(s, "lb-1", "x")


def test_haproxy_slots_room_for_a_surge_and_refuses_a_missing_backend() -> None:
    from components.haproxy_cfg import dns_backends, render_haproxy_cfg

    s = settings_of("prod")  # shop: 2 replicas, api: 3; a rolling update surges by one
    assert {name: b.slots for name, b in dns_backends(s).items()} == {"shop": 3, "api": 4}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"^no backend given for service\(s\): shop, api$"):
        render_haproxy_cfg(s, {})


def test_resource_limits_reach_the_container() -> None:
    from components.k8s import resources
    from components.settings import Resources

    assert resources(Resources(cpu="1", memory="1Gi", cpu_limit="2", memory_limit="2Gi")) == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2Gi", "cpu": "2"},
    }
    assert resources(Resources()) == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }


def _attempt(t: float, ok: bool, ms: float = 100.0) -> Any:
    from halb.lab.probe import Attempt

    return Attempt(t=t, ok=ok, ms=ms, answer="host=x" if ok else None, error=None if ok else "timeout")


def test_outage_counts_from_the_fault_to_recovery_after_the_last_failure() -> None:
    from halb.lab.measure import Outage, outage

    def same(got: Outage, seconds: float, failed: int, total: int) -> bool:
        return (got.failed, got.total) == (failed, total) and got.outage_s == pytest.approx(seconds)

    ok, bad = True, False
    assert outage([_attempt(0.0, ok), _attempt(1.0, ok)], 0.5) == Outage(0.0, 0, 2)
    # A failure that ends exactly at the fault counts; one that ended before does not.
    runs = [_attempt(0.5, bad, 200), _attempt(0.9, bad, 100), _attempt(1.0, ok, 100), _attempt(1.1, ok, 100)]
    assert same(outage(runs, 1.0), 0.1, 1, 4)
    # Two bursts of failures: recovery is the first success after the last one.
    runs = [_attempt(t, o) for t, o in ((1.0, bad), (1.1, bad), (1.2, ok), (1.3, bad), (1.4, ok), (1.5, ok))]
    assert same(outage(runs, 1.0), 0.5, 3, 6)
    # No recovery: to the end of the last attempt.
    runs = [_attempt(t, o) for t, o in ((1.0, ok), (1.1, bad), (1.2, bad), (1.3, bad))]
    assert same(outage(runs, 1.05), 0.35, 3, 4)


def test_a_token_from_the_environment_is_one_the_engine_holds_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's RANCHER_TOKEN_KEY fallback joins the config as a secret key, like
    `pulumi config set --secret` would have made it; a configured token wins over it."""
    monkeypatch.setattr(runtime_config, "get_config_env", lambda: {"rancher-ha-lb:cluster": "prod"})
    monkeypatch.setattr(runtime_config, "get_config_secret_keys_env", lambda: [])
    # The engine's config as a fresh program sees it (run_program sets both globals).
    empty: ContextVar[dict[str, object]] = ContextVar("config")
    empty.set({})
    no_secrets: ContextVar[set[str]] = ContextVar("secret_keys")
    no_secrets.set(set())
    monkeypatch.setattr(runtime_config, "CONFIG", empty)
    monkeypatch.setattr(runtime_config, "_SECRET_KEYS", no_secrets)
    monkeypatch.setenv(TOKEN_ENV, "token-env:s3cret")
    raw = raw_from_engine()
    assert raw.values == {"rancher-ha-lb:cluster": "prod", TOKEN_KEY: "token-env:s3cret"}
    assert raw.secret_keys == {TOKEN_KEY}
    monkeypatch.setattr(runtime_config, "get_config_env", lambda: {TOKEN_KEY: "token-cfg:x"})
    assert raw_from_engine() == RawConfig({TOKEN_KEY: "token-cfg:x"}, frozenset())


def test_no_token_anywhere_says_both_ways_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from components.stack_config import load_settings

    raw = stack_raw("prod")
    without = RawConfig({k: v for k, v in raw.values.items() if k != TOKEN_KEY}, frozenset())
    monkeypatch.setattr("components.stack_config.raw_from_engine", lambda: without)
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "error", lambda msg, *_, **__: logged.append(msg))
    with pytest.raises(pulumi.RunError, match=r"^1 problem\(s\) in the stack configuration; see above$"):
        load_settings()
    assert logged == [
        "rancher2:tokenKey: not set (set it with `pulumi config set --secret rancher2:tokenKey "
        "token-...` or export RANCHER_TOKEN_KEY; the program builds the cluster's kubeconfig from it)"
    ]


def test_secret_env_wraps_each_value_once() -> None:
    """A value already secret stays as it is: wrapped twice, the Secret would hold the mask."""
    s = parse_settings(with_overrides(stack_raw("lab"), services=[
        {"name": "shop", "image": "x:1", "port": 80, "env": {"A": "a1", "B": "b2"}},
        {"name": "api", "image": "y:1", "port": 81, "hostnames": ["api.example.com"]},
    ]))  # fmt: skip
    once = secret_env(s)
    twice = secret_env(once)
    assert twice.services[0].secret_env == once.services[0].secret_env == {"A": "a1", "B": "b2"}
    assert all(isinstance(v, SecretStr) for v in twice.services[0].env.values())


def test_digits_counts_like_str_without_calling_it() -> None:
    values = [0, 1, 9, 10, 11, 99, 100, 999, 1000, -1, -10, -99, 2**63, -(2**63)]
    values += [10**k + d for k in range(1, 400) for d in (-1, 0, 1)]
    for n in values:
        assert digits(n) == len(str(abs(n))), n
    assert digits(10**5000) == 5001  # str() refuses it (more than 4300 digits)


def test_show_words_each_kind_of_value_as_messages_print_it() -> None:
    assert [show(v) for v in (True, False, None, 7, -7, 1.5, "ab", object())] == [
        "true", "false", "null", "7", "-7", "1.5", "'ab'", "<object>",
    ]  # fmt: skip
    assert show(10**19) == str(10**19) and show(10**20 - 1) == str(10**20 - 1)  # 20 digits
    assert show(10**20) == "a 21-digit number" and show(-(10**4400)) == "a 4401-digit number"
    assert show("x" * 40) == repr("x" * 40)
    assert show("x" * 41) == "'" + "x" * 40 + "…' (41 characters)"


def test_show_cuts_a_collection_at_80_characters() -> None:
    # Each 12-character string shows as 14 characters, ", " between: five fill exactly 80.
    five = ["b" * 12] * 5
    assert show(five) == "[" + ", ".join(repr(s) for s in five) + "]" and len(show(five)) == 80
    assert show([*five, "c"]) == "[" + ", ".join(repr(s) for s in five) + ", …]"
    assert show(["b" * 12] * 4 + ["b" * 13]) == "[" + ", ".join(repr("b" * 12) for _ in range(4)) + ", …]"
    assert show(tuple(five)) == show(five)
    assert show({"k": "v", 1: [True, None]}) == "{'k': 'v', 1: [true, null]}"
    long_values = {f"k{i}": "v" * 20 for i in range(5)}  # 'kN': 'vvv…' is 28 characters
    assert show(long_values) == "{'k0': '" + "v" * 20 + "', 'k1': '" + "v" * 20 + "', …}"
    assert show([]) == "[]" and show({}) == "{}"


MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"type": "missing"}, "missing (required)"),
    ({"type": "extra_forbidden", "input": 1}, "unknown key"),
    *[({"type": k, "input": "x"}, "'x' is not a whole number") for k in ("int_type", "int_parsing")],
    *[({"type": k, "input": "x"}, "'x' is not a (finite) number")
      for k in ("float_type", "float_parsing", "finite_number")],
    *[({"type": k, "input": 2}, "2 is not true or false") for k in ("bool_type", "bool_parsing")],
    ({"type": "string_type", "input": 2}, "2 is not a string"),
    *[({"type": k, "input": [1]}, "[1] is not a mapping of keys to values")
      for k in ("dict_type", "model_type", "model_attributes_type")],
    *[({"type": k, "input": 1}, "1 is not a list") for k in ("tuple_type", "list_type")],
    ({"type": "literal_error", "input": "x", "ctx": {"expected": "'a' or 'b'"}},
     "'x' is not allowed ('a' or 'b')"),
    ({"type": "too_short", "input": []}, "must not be empty"),
    ({"type": "string_pattern_mismatch", "input": "x", "ctx": {"pattern": "^a$"}}, "'x' does not match ^a$"),
    ({"type": "ip_v4_address", "input": 1}, "1 is not an IPv4 address"),
    ({"type": "ip_v4_interface", "input": 1}, "1 is not an IPv4 address with prefix (a.b.c.d/n)"),
    ({"type": KIND, "input": 1, "msg": "our own words"}, "our own words"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("err", "expected"), MESSAGES, ids=[f"{i}-{e['type']}" for i, (e, _) in enumerate(MESSAGES)]
)
def test_each_pydantic_error_kind_gets_our_wording(err: dict[str, Any], expected: str) -> None:
    """Our validators catch most of these first (strict numbers, strings, booleans);
    should a field ever reach pydantic's own check, the wording is still ours."""
    assert message_of(err) == expected


@pytest.mark.parametrize(
    ("cluster_id", "command"),
    [("", "cmd"), ("-", "cmd"), ("c-m-abc", None), ("c-m-abc", "")],
    ids=["no id", "id '-'", "no registration token", "empty command"],
)
def test_a_cluster_rancher_hides_stops_the_program(cluster_id: str, command: str | None) -> None:
    """getCluster answers a token that may not manage the cluster with an id-less
    or token-less result rather than an error."""
    token = None if command is None else SimpleNamespace(node_command=command)
    found = cast(GetClusterResult, SimpleNamespace(id=cluster_id, cluster_registration_token=token))
    with pytest.raises(pulumi.RunError, match=r"^rancher-ha-lb:cluster: Rancher gave no registration token "):
        node_command_of("prod", found)
    ok = cast(
        GetClusterResult,
        SimpleNamespace(id="c-m-abc", cluster_registration_token=SimpleNamespace(node_command="cmd")),
    )
    assert node_command_of("prod", ok) == "cmd"
