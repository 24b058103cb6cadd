"""The delay line (halb/lab/jitter.py) delays a link as netem would, and leaves it as it was.

In namespaces of the test's own: a switch with a bridge and two hosts on 198.51.100.0/24.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from conftest import require_root_tools

from halb.lab.base import ip
from halb.lab.jitter import JitterLink

pytestmark = pytest.mark.netns

ECHO = textwrap.dedent("""
    import socket, sys, time
    if sys.argv[1] == "serve":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9999)); s.settimeout(30)
        print("ready", flush=True)
        try:
            while True:
                d, a = s.recvfrom(2048); s.sendto(d, a)
        except socket.timeout:
            pass
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
        rtts, lost = [], 0
        for i in range(int(sys.argv[2])):
            t = time.monotonic(); s.sendto(str(i).encode(), ("198.51.100.2", 9999))
            try:
                while s.recvfrom(2048)[0] != str(i).encode():
                    pass
                rtts.append(round((time.monotonic() - t) * 1000, 2))
            except socket.timeout:
                lost += 1
            time.sleep(0.01)
        print(sorted(rtts), lost)
""")


@pytest.fixture
def segment() -> Iterator[tuple[str, str]]:
    require_root_tools("ip", "nft")
    tag = f"hj{os.getpid()}"
    sw, a, b = f"{tag}-sw", f"{tag}-a", f"{tag}-b"
    made: list[str] = []
    server = None
    try:
        for ns in (sw, a, b):
            ip("netns", "add", ns)
            made.append(ns)
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        for ns, port, addr in ((a, "pa", "198.51.100.1"), (b, "pb", "198.51.100.2")):
            ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", sw, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", ECHO, "serve"],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        _wait_ready(server)
        yield sw, a
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def _wait_ready(server: subprocess.Popen[str]) -> None:
    """The echo server bound before the first probe: a probe sent earlier is lost (a CI flake)."""
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], 30)
    if not ready or server.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start in 30 s")


def _rtts(ns: str, count: int) -> tuple[list[float], int]:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, "ask", str(count)],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    rtts, lost = out.strip().rsplit(" ", 1)
    return [float(x) for x in rtts.strip("[]").split(",") if x.strip()], int(lost)


def _state(sw: str) -> tuple[str, str, str]:
    links = subprocess.run(
        ["ip", "-n", sw, "-d", "link", "show", "pa"], capture_output=True, text=True
    ).stdout
    every = subprocess.run(["ip", "-n", sw, "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["ip", "netns", "exec", sw, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout  # fmt: skip
    flags = " ".join(w for w in links.split() if "flood" in w or w in ("on", "off"))
    return (
        flags,
        " ".join(sorted(line.split(":")[1].split("@")[0].strip() for line in every.splitlines())),
        tables,
    )


def test_the_line_delays_both_ways_and_leaves_the_link_as_it_was(segment: tuple[str, str]) -> None:
    sw, a = segment
    before, lost = _rtts(a, 20)
    assert lost == 0 and max(before) < 10
    state = _state(sw)
    with JitterLink(sw, "pa", delay_ms=20, jitter_ms=10, seconds=30) as line:
        during, lost = _rtts(a, 100)
    assert lost == 0
    median = during[len(during) // 2]
    # Each way ~20 ms: a round trip ~40 ms; the spread of two normal draws of 10 ms each.
    assert 30 < median < 50, during
    assert during[-1] - during[0] > 15, during  # jitter, not a fixed delay
    assert line.result["from_host"] >= 100 and line.result["to_host"] >= 100
    assert line.result["send_errors"] == 0
    assert 15 < line.result["delay_ms"]["p50"] < 25
    after, lost = _rtts(a, 20)
    assert lost == 0 and max(after) < 10
    assert _state(sw) == state  # flooding on again, the relay's veths and its table gone
