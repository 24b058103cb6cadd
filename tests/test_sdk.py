"""The pinned Pulumi SDK and the private names the mocks need; the installed `halb`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HALB, ROOT

from halb import sdk


def test_the_installed_pulumi_is_the_pinned_one() -> None:
    pins = re.findall(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [sdk.PINNED], "requirements.txt must pin pulumi to halb/sdk.py's PINNED"
    assert sdk.installed() == sdk.PINNED


def test_every_private_name_is_there() -> None:
    assert sdk.missing() == []
    sdk.require()


def test_a_name_gone_is_one_message_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi.runtime.sync_await as sync_await

    monkeypatch.delattr(sync_await, "_sync_await")
    with pytest.raises(sdk.SdkDriftError) as err:
        sdk.require()
    text = str(err.value)
    assert "\n" not in text
    assert "pulumi.runtime.sync_await._sync_await" in text and f"pulumi=={sdk.PINNED}" in text
    assert "_ensure_event_loop" not in text  # only what is gone


def test_a_gone_object_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi.runtime.settings import SETTINGS

    monkeypatch.delattr(type(SETTINGS), "rpc_manager", raising=False)
    monkeypatch.delattr(SETTINGS, "rpc_manager", raising=False)
    assert "pulumi.runtime.settings.SETTINGS.rpc_manager.rpcs" in sdk.missing()


def test_render_stops_with_the_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pulumi.runtime.stack as stack

    from halb import cli

    monkeypatch.delattr(stack, "run_pulumi_func")
    # A fresh import of the render path, as in a new process.
    for name in ("halb.render", "halb.mockrun"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert cli.main(["render", "--stack", "lab", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pulumi ") and "run_pulumi_func" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_halb_is_an_installed_command() -> None:
    """`halb --help` after the set-up (`make deps`: `pip install -e .`), from any directory."""
    done = subprocess.run([str(HALB), "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: halb ")
    for command in ("render", "lab", "demo", "bench"):
        assert command in done.stdout


def test_no_module_changes_sys_path() -> None:
    """Installed, every module imports as it is: none reaches for sys.path or PYTHONPATH."""
    offenders = [
        str(p.relative_to(ROOT))
        for d in ("components", "halb", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))
        if re.search(r"sys\.path\s*(\[|\.insert|\.append|=)|\"PYTHONPATH\"", p.read_text())
        and p.name != "test_sdk.py"
    ]
    assert offenders == []
