"""Secrets stay secret: settings, Pulumi Outputs, exports, render, console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from conftest import ROOT, P, run_halb, stack_raw, with_overrides

from components.settings import RawConfig, SettingsError, parse_settings
from halb.mockrun import run_program

TOKEN, AUTH, REGISTRY = "tok-3f9a-secret", "au7hp4ss", "reg-pw-secret"


def raw_with_secrets() -> object:
    return with_overrides(
        stack_raw("prod"),
        secret=True,
        vrrp={"version": 2, "advertInterval": 1},
        vrrpAuthPass=AUTH,
        registryPassword=REGISTRY,
        **{"rancher2:tokenKey": TOKEN},
    )


def test_settings_never_show_secrets() -> None:
    s = parse_settings(raw_with_secrets())  # type: ignore[arg-type]
    text = repr(s) + str(s) + s.model_dump_json()
    for secret in (TOKEN, AUTH, REGISTRY):
        assert secret not in text


def test_secrets_are_pulumi_secrets_wherever_they_go() -> None:
    run = run_program(raw_with_secrets(), "prod")  # type: ignore[arg-type]
    for r in run.resources:
        text = str(r.inputs)
        for secret in (TOKEN, AUTH, REGISTRY):
            if secret in text:
                # Only inside inputs Pulumi holds as secrets (encrypted in state).
                assert r.secret_paths, f"{secret} in plain inputs of {r.type} {r.name}"
    assert "tokenKey" in run.named("cluster-rancher").secret_paths
    assert "stringData" in run.named("edge-keepalived-config").secret_paths
    exported = str(run.exports)
    for secret in (TOKEN, AUTH, REGISTRY):
        assert secret not in exported
    assert "registrationCommands" in run.secret_exports


def test_render_redacts_and_prints_no_secret(tmp_path: Path) -> None:
    text = (ROOT / "Pulumi.prod.yaml").read_text()
    text = text.replace("version: 3, advertInterval: 0.05", "version: 2, advertInterval: 1")
    text += (
        "  rancher2:tokenKey: {secure: v1:dG9rZW4tY2lwaGVy}\n"
        "  rancher-ha-lb:registryPassword: {secure: v1:cmVnaXN0cnk=}\n"
        "  rancher-ha-lb:vrrpAuthPass: {secure: v1:YXV0aA==}\n"
    )
    cfg = tmp_path / "Pulumi.s.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    argv = ["render", "--stack", "s", "--config-file", str(cfg), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "halb", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for cipher in ("v1:dG9rZW4tY2lwaGVy", "v1:cmVnaXN0cnk=", "v1:YXV0aA=="):
        assert cipher not in written and cipher not in result.stdout + result.stderr
    assert "auth_pass REDACTED" in (out / "keepalived" / "lb-1.conf").read_text()


# --- secret env values: a Kubernetes Secret per service, secret in Pulumi state ---------

DB_PASSWORD, API_KEY = "db-pw-7Hq2", "api-key-9Zx"


def env_raw(secret: bool) -> RawConfig:
    """The lab stack with env on both services; `secret`: the engine marks `services` secret,
    as it does when any leaf below it is `secure:`."""
    raw = stack_raw("lab")
    services = json.loads(raw.values[P + "services"])
    services[0]["env"] = {"DB_PASSWORD": DB_PASSWORD, "LOG_LEVEL": "info"}
    services[1]["env"] = {"API_KEY": API_KEY}
    values = {**raw.values, P + "services": json.dumps(services)}
    return RawConfig(values, raw.secret_keys | ({P + "services"} if secret else set()))


def occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Every input path whose value contains `needle`."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in occurrences(v, needle, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in occurrences(v, needle, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and needle in value else []


def under(path: str, prefixes: list[str]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in prefixes)


def test_secret_env_values_only_under_secret_paths() -> None:
    run = run_program(env_raw(secret=True), "lab")
    seen = 0
    for r in run.resources:
        for needle in (DB_PASSWORD, API_KEY):
            for path in occurrences(r.inputs, needle):
                seen += 1
                assert under(path, r.secret_paths), f"{needle} at {r.type} {r.name} {path}, not secret"
    assert seen == 2  # once each, in its service's Secret
    shop_secret, blog_secret = run.named("app-shop-env"), run.named("app-blog-env")
    assert shop_secret.type == "kubernetes:core/v1:Secret" and shop_secret.inputs["type"] == "Opaque"
    assert shop_secret.secret_paths == ["stringData"]
    assert shop_secret.inputs["stringData"] == {"DB_PASSWORD": DB_PASSWORD, "LOG_LEVEL": "info"}
    assert blog_secret.inputs["stringData"] == {"API_KEY": API_KEY}
    assert shop_secret.inputs["metadata"]["namespace"] == "web"
    assert "name" not in shop_secret.inputs["metadata"]  # auto-named: a new value rolls the pods


def test_deployment_reads_secret_env_through_secret_key_refs() -> None:
    run = run_program(env_raw(secret=True), "lab")
    secret = run.named("app-shop-env")
    deploy = run.named("app-shop-deployment")
    assert deploy.secret_paths == []
    env = deploy.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    name = secret.outputs["metadata"]["name"]
    assert name.startswith("app-shop-env-")
    assert env == [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "DB_PASSWORD"}}},
        {"name": "LOG_LEVEL", "valueFrom": {"secretKeyRef": {"name": name, "key": "LOG_LEVEL"}}},
    ]


def test_plain_env_stays_plain_and_makes_no_secret() -> None:
    run = run_program(env_raw(secret=False), "lab")
    assert not [r for r in run.resources if r.name.endswith("-env")]
    env = run.named("app-shop-deployment").inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_PASSWORD", "value": DB_PASSWORD}, {"name": "LOG_LEVEL", "value": "info"}]


def test_settings_hide_secret_env_values() -> None:
    s = parse_settings(env_raw(secret=True))
    text = repr(s) + str(s) + s.model_dump_json()
    assert DB_PASSWORD not in text and API_KEY not in text
    assert s.services[0].secret_env == {"DB_PASSWORD": DB_PASSWORD, "LOG_LEVEL": "info"}
    assert s.services[0].plain_env == {}


def test_secure_env_in_a_stack_file_renders_a_secret(tmp_path: Path) -> None:
    text = (
        (ROOT / "Pulumi.lab.yaml")
        .read_text()
        .replace(
            "port: 8080, replicas: 2,", "port: 8080, replicas: 2, env: {DB_PASSWORD: {secure: v1:ZGItcHc=}},"
        )
    )
    cfg = tmp_path / "Pulumi.s.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    result = run_halb("render", "--stack", "s", "--config-file", str(cfg), "--out", str(out))
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all((out / "manifests.yaml").read_text()))
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("app-shop-env-")
    )
    assert secret["stringData"] == {"DB_PASSWORD": "REDACTED"}
    deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "shop")
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"key": "DB_PASSWORD", "name": secret["metadata"]["name"]}},
        }
    ]
    for doc in (secret, deploy):
        kubernetes_validate.validate(doc, "1.30", strict=True)
    assert "v1:ZGItcHc=" not in (out / "manifests.yaml").read_text() + result.stdout + result.stderr


def test_messages_never_show_a_secret_env_value() -> None:
    raw = env_raw(secret=True)
    services = json.loads(raw.values[P + "services"])
    services[0]["env"] = {"PIN": 904417, "TOKEN": "tok\0en", "FLAG": True}
    services[1]["env"] = "sekrit-as-a-string"
    bad = RawConfig({**raw.values, P + "services": json.dumps(services)}, raw.secret_keys)
    try:
        parse_settings(bad)
    except SettingsError as err:
        problems = err.problems
    else:
        raise AssertionError("accepted")
    assert problems == [
        f"{P}services[0].env.PIN: a number, not a string; quote it (secret: the value is not shown)",
        f"{P}services[0].env.TOKEN: contains a NUL character (a process environment cannot hold one)",
        f"{P}services[0].env.FLAG: a boolean, not a string; quote it (secret: the value is not shown)",
        f"{P}services[1].env: not a mapping of keys to values (secret: the value is not shown)",
    ]
