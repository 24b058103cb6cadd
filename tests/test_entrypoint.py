"""images/keepalived/entrypoint.sh with stand-ins for `ip` and `keepalived` on PATH, no root.

The entrypoint removes a stale VIP a SIGKILLed predecessor left, clears
pid files that would make keepalived think it already runs, refuses to
start without its environment, and execs keepalived (PID 1 keeps getting
the pod's SIGTERM). Each is checked by what the stand-ins saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, load_script

from halb.lab.base import wait_until

ENTRYPOINT = ROOT / "images" / "keepalived" / "entrypoint.sh"
VIP, IFACE, NODE = "192.0.2.10/24", "eth0", "lb-1"

# Each stand-in appends one JSON line: its PID, its arguments, and what it found.
FAKE_IP = """#!/bin/sh
printf '{"pid": %s, "argv": "%s"}\\n' "$$" "$*" >> "$CALLS/ip"
if [ "${FAKE_IP_EXIT:-0}" != 0 ]; then echo "RTNETLINK answers: Cannot assign requested address" >&2; fi
exit "${FAKE_IP_EXIT:-0}"
"""
FAKE_KEEPALIVED = """#!/bin/sh
left=$(ls -A "$PID_DIR" 2>/dev/null | tr '\\n' ' ')
printf '{"pid": %s, "argv": "%s", "pid_dir": "%s"}\\n' "$$" "$*" "$left" >> "$CALLS/keepalived"
if [ -n "${FAKE_KEEPALIVED_WAIT:-}" ]; then
    trap 'echo TERM >> "$CALLS/signals"; exit 0' TERM
    while :; do sleep 0.05; done
fi
exit "${FAKE_KEEPALIVED_EXIT:-0}"
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    bin_dir, calls, conf_dir, pid_dir = (tmp_path / d for d in ("bin", "calls", "conf", "run"))
    for d in (bin_dir, calls, conf_dir):
        d.mkdir()
    for name, text in (("ip", FAKE_IP), ("keepalived", FAKE_KEEPALIVED)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (conf_dir / f"{NODE}.conf").write_text("# lb-1\n")
    return {"bin": bin_dir, "calls": calls, "conf": conf_dir, "run": pid_dir}


def env_of(world: dict[str, Path], **over: str | None) -> dict[str, str]:
    env = {
        "PATH": f"{world['bin']}:/usr/bin:/bin",
        "CALLS": str(world["calls"]),
        "PID_DIR": str(world["run"]),
        "NODE_NAME": NODE,
        "KEEPALIVED_VIP": VIP,
        "KEEPALIVED_INTERFACE": IFACE,
        "KEEPALIVED_CONFIG_DIR": str(world["conf"]),
        "KEEPALIVED_PID_DIR": str(world["run"]),
    }
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def start(world: dict[str, Path], *args: str, **over: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args],
        env=env_of(world, **over),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def calls(world: dict[str, Path], name: str) -> list[dict[str, Any]]:
    path = world["calls"] / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_removes_a_stale_vip_then_execs_keepalived_with_this_nodes_files(world: dict[str, Path]) -> None:
    result = start(world, "--vrrp", "-D")
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls(world, "ip")] == [f"addr del {VIP} dev {IFACE}"]
    assert f"keepalived-entrypoint: removed stale VIP {VIP} from {IFACE}" in result.stdout
    pid_dir = world["run"]
    (ka,) = calls(world, "keepalived")
    assert ka["argv"].split() == [
        "--dont-fork", "--log-console", "--log-detail",
        "--use-file", str(world["conf"] / f"{NODE}.conf"),
        "--pid", f"{pid_dir}/keepalived.pid",
        "--vrrp_pid", f"{pid_dir}/vrrp.pid",
        "--checkers_pid", f"{pid_dir}/checker.pid",
        "--vrrp", "-D",  # extra arguments passed on, last
    ]  # fmt: skip
    assert f"keepalived-entrypoint: node {NODE}, config {world['conf'] / 'lb-1.conf'}" in result.stdout


def test_no_stale_vip_no_message_and_keepalived_still_starts(world: dict[str, Path]) -> None:
    result = start(world, FAKE_IP_EXIT="2")  # "Cannot assign requested address"
    assert result.returncode == 0, result.stderr
    assert len(calls(world, "ip")) == 1
    assert "removed stale VIP" not in result.stdout
    assert "RTNETLINK" not in result.stdout + result.stderr  # the usual case is not an error
    assert len(calls(world, "keepalived")) == 1


def test_a_predecessors_pid_files_are_gone_before_keepalived_starts(world: dict[str, Path]) -> None:
    pid_dir = world["run"]
    pid_dir.mkdir()
    for name in ("keepalived.pid", "vrrp.pid", "checker.pid"):
        (pid_dir / name).write_text("1\n")  # PID 1: this container's own PID now
    (pid_dir / "other").write_text("kept")
    assert start(world).returncode == 0
    (ka,) = calls(world, "keepalived")
    assert ka["pid_dir"].split() == ["other"]  # what keepalived found: only what is not its own
    assert (pid_dir / "other").read_text() == "kept"


def test_the_pid_directory_is_made_when_missing(world: dict[str, Path]) -> None:
    assert not world["run"].exists()
    assert start(world).returncode == 0
    assert world["run"].is_dir()


def test_keepalived_is_execed_it_gets_the_shells_pid_its_status_and_sigterm(world: dict[str, Path]) -> None:
    proc = subprocess.Popen(
        ["/bin/sh", str(ENTRYPOINT)],
        env=env_of(world, FAKE_KEEPALIVED_WAIT="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: bool(calls(world, "keepalived")), 10, poll=0.02)
        (ka,) = calls(world, "keepalived")
        assert ka["pid"] == proc.pid  # exec: the same process, no shell left waiting
        time.sleep(0.1)  # the trap is set right after the line above is written
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert (world["calls"] / "signals").read_text() == "TERM\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert start(world, FAKE_KEEPALIVED_EXIT="7").returncode == 7


@pytest.mark.parametrize(
    ("unset", "says"),
    [
        ("NODE_NAME", "NODE_NAME is not set; give it spec.nodeName through the downward API"),
        ("KEEPALIVED_VIP", "KEEPALIVED_VIP is not set (address/prefix)"),
        ("KEEPALIVED_INTERFACE", "KEEPALIVED_INTERFACE is not set"),
    ],
)
def test_refuses_to_start_without_its_environment(world: dict[str, Path], unset: str, says: str) -> None:
    for value in (None, ""):
        result = start(world, **{unset: value})
        assert result.returncode != 0
        assert says in result.stderr
        assert calls(world, "ip") == [] and calls(world, "keepalived") == []


def test_refuses_a_node_without_a_config(world: dict[str, Path]) -> None:
    result = start(world, NODE_NAME="lb-9")
    assert result.returncode == 64
    assert (
        f"keepalived-entrypoint: no config for node 'lb-9' at {world['conf'] / 'lb-9.conf'}" in result.stderr
    )
    assert calls(world, "ip") == [] and calls(world, "keepalived") == []


def test_the_image_default_config_dir_is_the_manifests() -> None:
    """The Dockerfile's and the entrypoint's config directory: where the pod mounts the Secret."""
    from components.edge_pod import KEEPALIVED_CONFIG_DIR as CONFIG_DIR

    dockerfile = (ROOT / "images" / "keepalived" / "Dockerfile").read_text()
    assert f"ENV KEEPALIVED_CONFIG_DIR={CONFIG_DIR}\n" in dockerfile
    assert '"${KEEPALIVED_CONFIG_DIR:-' + CONFIG_DIR + "}" in ENTRYPOINT.read_text()
    assert 'ENTRYPOINT ["/usr/local/bin/keepalived-entrypoint"]' in dockerfile
    assert os.access(ENTRYPOINT, os.R_OK)


def test_the_manifest_gives_the_entrypoint_what_it_needs() -> None:
    """Every variable the entrypoint refuses to start without is set in the pod, and
    its pid directory is a writable volume (the root filesystem is read-only)."""
    import re

    from conftest import rendered

    from halb.render import manifests

    text = ENTRYPOINT.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    # HALB_HANDOFF_KEY: required once the steer listener runs (HALB_STEER_PORT set, as the manifest does).
    assert required == {"NODE_NAME", "KEEPALIVED_VIP", "KEEPALIVED_INTERFACE", "HALB_HANDOFF_KEY"}
    (pid_default,) = re.findall(r"\$\{KEEPALIVED_PID_DIR:-([^}]+)\}", text)
    (ds,) = [d for d in manifests(rendered("prod")) if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    (ka,) = [c for c in spec["containers"] if c["name"] == "keepalived"]
    env = {e["name"]: e for e in ka["env"]}
    assert required <= set(env)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["HALB_HANDOFF_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "edge-handoff-key", "key": "key"}
    }
    assert (
        env["KEEPALIVED_INTERFACE"]["value"] == "eth0" and env["KEEPALIVED_VIP"]["value"] == "10.10.10.2/24"
    )
    assert ka["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in ka["volumeMounts"]}
    assert not mounts[pid_default].get("readOnly", False)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[pid_default]["name"]]


HELPERS = {
    "/usr/local/bin/halb-haproxy": ROOT / "images" / "haproxy" / "halb-haproxy",
    "/usr/local/bin/halb-keepalived": ROOT / "images" / "keepalived" / "halb-keepalived",
    "/usr/local/bin/halb-bgp": ROOT / "images" / "frr" / "halb-bgp",
}


def helper_parser(path: Path, env: dict[str, str]) -> Any:
    """The image's own argparse parser, built with the container's environment."""
    module = load_script(path)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        return module.parser()
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.parametrize("stack", ["lab", "prod", "lab-bgp"])
def test_every_helper_command_in_the_pod_is_one_the_helper_takes(stack: str) -> None:
    """Commands, args and preStop hooks that call the images' helpers parse with
    the helpers' own parsers (a misspelt flag would only fail in a running pod)."""
    from conftest import rendered

    from halb.render import manifests

    (ds,) = [d for d in manifests(rendered(stack)) if d["kind"] == "DaemonSet"]
    seen = []
    for c in ds["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        main = c.get("command", []) + c.get("args", [])
        if c["name"] == "frr":  # the image's entrypoint is `halb-bgp run`; the spec gives its flags
            main = ["/usr/local/bin/halb-bgp", "run", *main]
        for argv in (main, pre_stop):
            if argv and argv[0] in HELPERS:
                try:
                    helper_parser(HELPERS[argv[0]], env).parse_args(argv[1:])
                except SystemExit as refused:
                    raise AssertionError(f"{c['name']}: {argv} refused by {argv[0]}") from refused
                seen.append((c["name"], argv[1]))
    # keepalived's watch-config and steer are started by entrypoint.sh, not the spec; in
    # BGP mode steer is a container of its own (the keepalived image, its own command).
    bgp = [("frr", "run"), ("frr", "withdraw"), ("steer", "steer"), ("steer", "wait-done")]
    daemon = bgp if stack == "lab-bgp" else [("keepalived", "handoff")]
    assert sorted(seen) == sorted([("haproxy", "drain"), ("haproxy-reload", "watch-config"), *daemon])


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_the_steer_daemon_gets_every_load_balancers_address(stack: str) -> None:
    """HALB_STEER_LISTEN, _PORT, _PEERS, _VIP, _PORTS, _STATE_FILE: entrypoint.sh passes each to
    `halb-keepalived steer`; PEERS is every load balancer's address, comma-separated, PORTS
    every traffic port."""
    from conftest import rendered, settings_of

    from components.edge_firewall import traffic_ports
    from components.edge_pod import STEER_ENV, STEER_STATE_FILE
    from halb.render import manifests

    s = settings_of(stack)
    (ds,) = [d for d in manifests(rendered(stack)) if d["kind"] == "DaemonSet"]
    (ka,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "keepalived"]
    env = {e["name"]: e["value"] for e in ka["env"] if "value" in e}
    fields = ("listen", "port", "peers", "vip", "ports", "state_file")
    addr, port, peers, vip, ports, state = (env[STEER_ENV[f]] for f in fields)
    assert addr == "$(HOST_IP)" and int(port) == s.vrrp.handoff.port
    assert peers.split(",") == [str(s.address(n)) for n in s.lb_nodes]
    assert (vip, ports, state) == (str(s.vip.ip), ",".join(map(str, traffic_ports(s))), STEER_STATE_FILE)
    argv = ["steer", "--listen", "192.0.2.11", "--port", port, "--peers", peers, "--vip", vip,
            "--ports", ports, "--interface", s.vip.interface, "--state-file", state]  # fmt: skip
    helper_parser(HELPERS["/usr/local/bin/halb-keepalived"], {}).parse_args(argv)
    # The entrypoint starts it with exactly these variables, each quoted: nothing split by the shell.
    text = ENTRYPOINT.read_text()
    for flag, field in (("--listen", "listen"), ("--port", "port"), ("--peers", "peers"), ("--vip", "vip"),
                        ("--ports", "ports"), ("--state-file", "state_file")):  # fmt: skip
        assert f'{flag} "${STEER_ENV[field]}"' in text
    assert "set -- $HALB" not in text
