"""The lab owns only what it makes, and survives being used carelessly.

Hostile-input cases of the lab (issue 10, sections 1, 2 and 8): a namespace
or process that merely looks like the lab's, two commands at once, a
corrupt state file, an unwritable state directory, a stack this machine
cannot run. Every case ends in exit 0, 1 or 2 with a message, never a
traceback, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_TOOLS, ROOT, require_root_tools, run_halb

from halb.lab.base import wait_until
from halb.lab.state import lab_dir

pytestmark = pytest.mark.netns


@pytest.fixture
def prefix() -> Iterator[str]:
    require_root_tools(*LAB_TOOLS)
    p = "s" + uuid.uuid4().hex[:7]
    yield p
    run_halb("lab", "down", env=env(p), timeout=120)
    # Whatever the test did to the lab, nothing of it outlives `lab down` (its RT cgroup too).
    assert not list(Path("/sys/fs/cgroup").glob(f"*/halb-{p}"))


def env(prefix: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "HALB_LAB_PREFIX": prefix, **extra}


def netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_down_leaves_a_namespace_and_process_it_did_not_make(prefix: str) -> None:
    mine = f"{prefix}-mine"
    subprocess.run(["ip", "netns", "add", mine], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", mine, "sleep", "60"])
    try:
        result = run_halb("lab", "down", env=env(prefix))
        assert result.returncode == 0 and "nothing to remove" in result.stdout
        assert mine in netns() and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["ip", "netns", "del", mine], check=False)


def test_two_ups_at_once_make_one_lab(prefix: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "halb", "lab", "up"],
            cwd=ROOT,
            env=env(prefix),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(r for p, r in zip(procs, results, strict=True) if p.returncode == 2)
    assert "a lab is already up" in loser[1] and "Traceback" not in loser[1]
    request = run_halb("lab", "request", "--count", "2", env=env(prefix))
    assert request.returncode == 0 and "host=" in request.stdout  # the winner's lab is whole


def test_down_during_up_waits_then_removes_it(prefix: str) -> None:
    up = subprocess.Popen([sys.executable, "-m", "halb", "lab", "up"], cwd=ROOT, env=env(prefix),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert wait_until(lambda: (lab_dir(prefix) / "journal.jsonl").exists(), 120, poll=0.1)
    down = run_halb("lab", "down", env=env(prefix), timeout=300)
    _out, err = up.communicate(timeout=300)
    assert up.returncode == 0 and "Traceback" not in err, err
    no_traceback(down)
    assert down.returncode == 0 and "waiting for `lab up`" in down.stdout
    assert not [ns for ns in netns() if ns.startswith(f"{prefix}-")]


@pytest.mark.parametrize("content", ["null", "[]", '{"namespaces": null}', "{", '{"prefix": 1}'])
def test_a_corrupt_state_file_never_stops_down(prefix: str, content: str) -> None:
    assert run_halb("lab", "up", env=env(prefix), timeout=300).returncode == 0
    namespaces = [ns for ns in netns() if ns.startswith(f"{prefix}-")]
    (lab_dir(prefix) / "state.json").write_text(content)
    status = run_halb("lab", "status", env=env(prefix))
    no_traceback(status)
    assert status.returncode == 1 and "lab down" in status.stderr
    down = run_halb("lab", "down", env=env(prefix), timeout=120)
    assert down.returncode == 0 and f"removed {len(namespaces)} namespaces" in down.stdout
    assert not [ns for ns in netns() if ns.startswith(f"{prefix}-")]


def test_an_unwritable_state_directory_names_the_variable(prefix: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_halb("lab", "up", env=env(prefix, HALB_LAB_STATE=str(blocker / "sub")))
    no_traceback(result)
    assert result.returncode == 2 and "HALB_LAB_STATE=" in result.stderr
    assert not [ns for ns in netns() if ns.startswith(f"{prefix}-")]


def test_a_stack_this_machine_cannot_run_is_refused_before_anything(prefix: str, tmp_path: Path) -> None:
    stack = (ROOT / "Pulumi.lab.yaml").read_text().replace("maxConn: 4096", "maxConn: 200000")
    path = tmp_path / "big.yaml"
    path.write_text(stack)
    result = run_halb("lab", "up", "--config-file", str(path), env=env(prefix))
    no_traceback(result)
    if result.returncode == 0:  # a machine that lets root raise its limits runs it
        return
    assert result.returncode == 2 and "rancher-ha-lb:loadBalancer.maxConn: 200000" in result.stderr
    assert not lab_dir(prefix).exists()


def test_down_after_a_killed_kubelet_and_a_killed_up(prefix: str) -> None:
    assert run_halb("lab", "up", env=env(prefix), timeout=300).returncode == 0
    journal = [json.loads(line) for line in (lab_dir(prefix) / "journal.jsonl").read_text().splitlines()]
    kubelet = next(e["pid"] for e in journal if e["kind"] == "kubelet")
    os.kill(kubelet, signal.SIGKILL)  # its containers run on, orphaned
    down = run_halb("lab", "down", env=env(prefix), timeout=120)
    assert down.returncode == 0
    from halb.lab.podman import podman

    names = {e["name"] for e in journal if e["kind"] == "container"}
    assert not names & set(podman("ps", "--all", "--format", "{{.Names}}").stdout.split())
