"""`python -m halb render`: files, schema validity, redaction, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, STACKS, run_halb, settings_of
from k8s_schema import K8S_VERSION, validate


def halb(*args: str) -> subprocess.CompletedProcess[str]:
    return run_halb(*args)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for stack in STACKS:
        d = tmp_path_factory.mktemp(stack)
        result = halb("render", "--stack", stack, "--out", str(d))
        assert result.returncode == 0, result.stderr
        out[stack] = d
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_render_writes_every_file(stack: str, outputs: dict[str, Path]) -> None:
    d, s = outputs[stack], settings_of(stack)
    expected = {"manifests.yaml", "resources.json", "haproxy/haproxy.cfg", ".halb-render"}
    expected |= {f"keepalived/{n}.{ext}" for n in s.lb_nodes for ext in ("conf", "nft")}
    found = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
    assert found == expected


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_pass_strict_schema_validation(stack: str, outputs: dict[str, Path]) -> None:
    docs = list(yaml.safe_load_all((outputs[stack] / "manifests.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("DaemonSet") == 1 and kinds.count("Namespace") == 2
    monitoring = settings_of(stack).monitoring.enabled
    assert (kinds.count("PodMonitor"), kinds.count("PrometheusRule")) == ((2, 1) if monitoring else (0, 0))
    assert kinds.count("Deployment") == len(settings_of(stack).services)
    for doc in docs:
        validate(doc)


def test_strict_validation_catches_a_typo() -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "lables": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_resources_json_has_type_name_parent(outputs: dict[str, Path]) -> None:
    rows = json.loads((outputs["prod"] / "resources.json").read_text())
    by_name = {r["name"]: r for r in rows}
    assert by_name["edge-daemonset"] == {
        "type": "kubernetes:apps/v1:DaemonSet",
        "name": "edge-daemonset",
        "parent": "edge",
    }
    assert by_name["cluster"]["parent"] == "rancher-ha-lb-prod"  # the stack
    assert by_name["cluster-rancher"]["type"] == "pulumi:providers:rancher2"


def test_daemon_configs_are_the_deployed_ones(outputs: dict[str, Path]) -> None:
    docs = list(yaml.safe_load_all((outputs["prod"] / "manifests.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "haproxy-config")
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "keepalived-config")
    assert (outputs["prod"] / "haproxy/haproxy.cfg").read_text() == cm["data"]["haproxy.cfg"]
    assert (outputs["prod"] / "keepalived/lb-2.conf").read_text() == secret["stringData"]["lb-2.conf"]


def test_secure_values_are_redacted(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.lab.yaml").read_text()
    text += (
        "  rancher2:tokenKey: {secure: v1:AAAAbm90LWEtcmVhbC1jaXBoZXJ0ZXh0}\n"
        "  rancher-ha-lb:vrrpAuthPass: {secure: v1:AAAAYW5vdGhlci1vbmU=}\n"
        "  rancher-ha-lb:vrrp: {version: 2, advertInterval: 1}\n"
    )
    cfg = tmp_path / "Pulumi.secret.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    result = halb("render", "--stack", "secret", "--config-file", str(cfg), "--out", str(out))
    assert result.returncode == 0, result.stderr
    conf = (out / "keepalived/lb-1.conf").read_text()
    assert "auth_pass REDACTED\n" in conf
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "v1:AAAA" not in everything


def test_bad_settings_exit_2_with_all_messages_and_write_nothing(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.lab.yaml").read_text()
    text = text.replace("routerId: 51", "routerId: 300").replace(
        "{role: apps, address: 192.0.2.21}", "{role: app}"
    )
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    result = halb("render", "--stack", "lab", "--config-file", str(cfg), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: rancher-ha-lb:hosts.app-1.role: 'app' is not a role; did you mean 'apps'? "
        "(allowed: 'load-balancer', 'apps')",
        "error: rancher-ha-lb:vip.routerId: 300 is not in 1..255",
    ]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_existing_out_dir_untouched_on_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = halb("render", "--stack", "nope", "--out", str(out))
    assert result.returncode == 2
    assert "--stack nope: unknown stack (have: dev, lab, lab-bgp, prod)" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unreadable_config_file(tmp_path: Path) -> None:
    result = halb(
        "render", "--stack", "x", "--config-file", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)
    )
    assert result.returncode == 2 and "no such stack file" in result.stderr


def test_invalid_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("config: [unclosed\n")
    result = halb("render", "--stack", "x", "--config-file", str(cfg), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_out_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    result = halb("render", "--stack", "lab", "--out", str(f / "sub"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert f.read_text() == "x"


def test_missing_flag_is_exit_2() -> None:
    result = halb("render", "--stack", "lab")
    assert result.returncode == 2 and "--out" in result.stderr
