"""halb/stackfile.py in-process: what `halb render` reads from a stack file, and its refusals.

The CLI tests run `halb render` as a subprocess; these pin the reader itself
(and let `make mutate` see it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from halb.stackfile import REDACTED, StackFileError, known_stacks, load_stack_file, stack_path


def test_secure_values_become_redacted_secrets_where_they_may_sit(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text(
        "config:\n"
        "  rancher2:tokenKey: {secure: v1:abc}\n"
        "  rancher-ha-lb:registry: {server: r.example.com, username: ci}\n"
        "  rancher-ha-lb:services: [{name: a, env: {K: {secure: v1:def}, L: plain}}]\n"
        "  rancher-ha-lb:notsecret: {secure: v1:x, other: 1}\n"
        "  rancher-ha-lb:vrrp: {version: 2}\n"
        "  rancher-ha-lb:namespace: web\n"
    )
    raw = load_stack_file(path)
    assert raw.values == {
        "rancher2:tokenKey": REDACTED,
        "rancher-ha-lb:registry": '{"server": "r.example.com", "username": "ci"}',
        "rancher-ha-lb:services": '[{"name": "a", "env": {"K": "REDACTED", "L": "plain"}}]',
        "rancher-ha-lb:notsecret": '{"secure": "v1:x", "other": 1}',
        "rancher-ha-lb:vrrp": '{"version": 2}',
        "rancher-ha-lb:namespace": "web",
    }
    assert raw.secret_keys == {"rancher2:tokenKey", "rancher-ha-lb:services"}


def test_a_secure_value_where_it_would_reach_the_cluster_in_plain_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text("config:\n  rancher-ha-lb:nested: {a: [1, {secure: v1:def}], b: plain}\n")
    with pytest.raises(StackFileError) as err:
        load_stack_file(path)
    assert err.value.problems == [
        "rancher-ha-lb:nested.a[1]: a secure value here would reach the cluster in plain text; "
        "only rancher2:tokenKey, rancher-ha-lb:vrrpAuthPass, rancher-ha-lb:registryPassword, "
        "values of rancher-ha-lb:services[].env and rancher-ha-lb:bgp.peers[].password may be secure"
    ]


def test_an_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.e.yaml"
    path.write_text("")
    raw = load_stack_file(path)
    assert dict(raw.values) == {} and raw.secret_keys == frozenset()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("config: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping with a `config:` mapping inside"),
        ("config: [1, 2]\n", "expected a mapping with a `config:` mapping inside"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "Pulumi.b.yaml"
    path.write_text(content)
    with pytest.raises(StackFileError) as err:
        load_stack_file(path)
    assert str(err.value).startswith(f"{path}: {says}")


def test_a_missing_or_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(StackFileError) as err:
        load_stack_file(tmp_path / "nope.yaml")
    assert (
        str(err.value)
        == f"{tmp_path / 'nope.yaml'}: no such stack file (stacks here: dev, lab, lab-bgp, prod)"
    )
    with pytest.raises(StackFileError) as err:
        load_stack_file(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a regular file (a directory)"


def test_stacks_are_the_files_beside_the_program() -> None:
    assert known_stacks() == ["dev", "lab", "lab-bgp", "prod"]
    assert stack_path("lab") == ROOT / "Pulumi.lab.yaml"
    assert stack_path("lab", "/x/y.yaml") == Path("/x/y.yaml")
