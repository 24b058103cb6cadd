"""Secrets stay secret: settings, Pulumi Outputs, exports, render, console."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, stack_raw, with_overrides

from components.settings import parse_settings
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
    assert "stringData" in run.named("keepalived-config").secret_paths
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
