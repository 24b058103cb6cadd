"""HAProxy's preStop (`halb-haproxy drain`) when only HAProxy goes: it serves until the
node draws no new traffic. With VRRP that is the VIP leaving the node; in BGP mode the
VIP never leaves `lo`, so it is halb-bgp's state saying the VIP is withdrawn."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

DRAIN = ROOT / "images" / "haproxy" / "halb-haproxy"
# An address of every machine's loopback: bindable, so "the VIP is still here".
LOCAL_VIP = "127.0.0.1"


@pytest.fixture
def master_cli(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A stand-in for HAProxy's master CLI: it records each command and answers with an empty line."""
    path = tmp_path / "master.sock"
    seen: list[str] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                seen.append(conn.recv(4096).decode().strip())
                conn.sendall(b"\n\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, seen
    stop.set()
    t.join(timeout=5)
    server.close()


def _drain(sock: Path, *extra: str, timeout: float = 8.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRAIN), "drain", "--socket", str(sock), "--vip", LOCAL_VIP,
         "--timeout", f"{timeout:g}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_bgp_drain_ends_when_the_vip_is_withdrawn_though_it_stays_on_the_node(
    tmp_path: Path, master_cli: tuple[Path, list[str]]
) -> None:
    sock, seen = master_cli
    state = tmp_path / "bgp.json"
    state.write_text(json.dumps({"announced": True, "reason": "healthy", "at": 0}))
    began = time.monotonic()
    proc = _drain(sock, "--withdrawn-file", str(state))
    time.sleep(1.5)  # the started-file wait (1 s), then draining while announced
    assert proc.poll() is None
    state.write_text(json.dumps({"announced": False, "reason": "haproxy unhealthy", "at": 1}))
    out, err = proc.communicate(timeout=10)
    took = time.monotonic() - began
    assert proc.returncode == 0, err
    assert took < 4, (took, out)  # not the 8 s timeout: the VIP on `lo` never leaves
    assert "still serving until it is withdrawn" in out and "withdrawn; stopping" in out
    assert "set server be_halb_drain/serving state maint" in " ".join(seen)  # /healthz 503 first


def test_bgp_drain_waits_out_a_missing_or_torn_state_file(
    tmp_path: Path, master_cli: tuple[Path, list[str]]
) -> None:
    sock, _ = master_cli
    state = tmp_path / "bgp.json"
    state.write_text('{"announced": fal')  # a torn write reads as "not yet"
    proc = _drain(sock, "--withdrawn-file", str(state), timeout=2)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "gave up after 2 s; stopping" in out


def test_vrrp_drain_still_waits_for_the_vip_to_leave(master_cli: tuple[Path, list[str]]) -> None:
    """Without --withdrawn-file the VIP is what counts: still local here, so the timeout."""
    sock, _ = master_cli
    began = time.monotonic()
    proc = _drain(sock, timeout=2)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "gave up after 2 s" in out and time.monotonic() - began >= 2
