"""halb-keepalived's handoff messages: only an authentic, fresh, new message from
the peer it names steers flows; everything else is counted and ignored. Then
the steering rules for every traffic port, checked by nft in a namespace of the
test's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, load_script

from components.edge_pod import STEER_TABLE
from halb.lab.base import wait_until

SCRIPT = ROOT / "images" / "keepalived" / "halb-keepalived"
KEY = b"k" * 43
PEERS = {"192.0.2.11", "192.0.2.12"}
NOW = 1_800_000_000.0


def load() -> ModuleType:
    return load_script(SCRIPT)


hk = load()


def genuine(sender: str = "192.0.2.11", at: float = NOW, nonce: str = "00ff00ff00ff00ff") -> bytes:
    message: bytes = hk.sign(KEY, sender, 20.0, at, nonce)
    return message


def test_a_genuine_message_is_accepted_once_then_a_replay() -> None:
    v = hk.Verifier(KEY, PEERS)
    assert v.judge(genuine(), "192.0.2.11", NOW + 0.2) == ("accepted", 20.0)
    assert v.judge(genuine(), "192.0.2.11", NOW + 1.0) == ("replayed", 0.0)
    # The handoff sends each of its repeats with a nonce of its own: not replays.
    assert v.judge(genuine(nonce="1111111111111111"), "192.0.2.11", NOW + 0.3)[0] == "accepted"
    assert v.counts["accepted"] == 2 and v.counts["replayed"] == 1


@pytest.mark.parametrize(
    ("data", "source", "result"),
    [
        # A genuine message captured and sent again 10 s later (the lab's forged-handoff drill).
        (genuine(at=NOW - 10), "192.0.2.11", "stale"),
        (genuine(at=NOW + 10), "192.0.2.11", "stale"),
        # Forged: no key, a changed field, another key, the old unsigned format.
        (b"halb-handoff/2 192.0.2.11 300 1800000000000 00ff00ff00ff00ff " + b"0" * 64, "192.0.2.11",
         "unauthenticated"),
        (genuine().replace(b" 20 ", b" 300 "), "192.0.2.11", "unauthenticated"),
        (hk.sign(b"other key", "192.0.2.11", 20.0, NOW, "00ff00ff00ff00ff"), "192.0.2.11", "unauthenticated"),
        (b"halb-handoff/1 192.0.2.11 300", "192.0.2.11", "malformed"),
        # A peer's genuine message resent by the other peer: the sender it names is not the source.
        (genuine("192.0.2.11"), "192.0.2.12", "unauthenticated"),
        # Not a peer at all (the firewall drops these first; the listener refuses them too).
        (genuine("192.0.2.99"), "192.0.2.99", "foreign"),
        (b"\xff\xfe garbage", "192.0.2.12", "malformed"),
    ],
    ids=["replayed-10s-later", "from-the-future", "forged-mac", "changed-seconds", "wrong-key", "v1",
         "resent-by-other-peer", "not-a-peer", "garbage"],
)  # fmt: skip
def test_anything_else_is_refused_and_counted(data: bytes, source: str, result: str) -> None:
    v = hk.Verifier(KEY, PEERS)
    assert v.judge(data, source, NOW) == (result, 0.0)
    assert v.counts[result] == 1 and sum(v.counts.values()) == 1


def test_drain_seconds_are_bounded() -> None:
    v = hk.Verifier(KEY, PEERS)
    long = hk.sign(KEY, "192.0.2.11", 1e9, NOW, "2222222222222222")
    assert v.judge(long, "192.0.2.11", NOW) == ("accepted", hk.MAX_DRAIN_S)


def test_seen_nonces_are_forgotten_after_they_could_matter() -> None:
    v = hk.Verifier(KEY, PEERS)
    for i in range(50):
        v.judge(genuine(at=NOW + i, nonce=f"{i:016x}"), "192.0.2.11", NOW + i)
    assert len(v.seen) <= 2 * hk.REPLAY_WINDOW_S + 1


def test_without_the_key_steer_and_handoff_refuse_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hk.KEY_ENV, raising=False)
    with pytest.raises(SystemExit, match="HALB_HANDOFF_KEY is not set"):
        hk.handoff_key()


@pytest.mark.netns
def test_the_steering_rules_cover_every_traffic_port_and_load(netns: str, tmp_path: Path) -> None:
    rules = hk.steer_rules("192.0.2.10", [80, 443, 7000], "192.0.2.11", "eth0")
    assert "tcp dport { 80, 443, 7000 }" in rules
    assert hk.STEER_TABLE == STEER_TABLE  # the table the lab reads is the one the listener makes
    path = tmp_path / "steer.nft"
    path.write_text(rules)
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip", "halb_steer"],
                            capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert "tcp dport { 80, 443, 7000 }" in listed and 'dup to 192.0.2.11 device "eth0" drop' in listed


def _steer(netns: str, me: str, tmp: Path, *prefix: str) -> subprocess.Popen[str]:
    """A steer listener on `me` (BGP mode's flags), its files under `tmp`."""
    tmp.mkdir()
    cmd = [*prefix, sys.executable, str(SCRIPT), "steer", "--listen", me, "--port", "9166",
           "--peers", ",".join(LISTENERS), "--vip", "203.0.113.10", "--ports", "80,443",
           "--interface", "eth0", "--state-file", str(tmp / "steer.json"), "--drain-file",
           str(tmp / "draining"), "--told-file", str(tmp / "told"), "--drain-seconds", "20"]  # fmt: skip
    env = {**os.environ, hk.KEY_ENV: KEY.decode()}
    return subprocess.Popen(["ip", "netns", "exec", netns, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip


LISTENERS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.sendto(sys.stdin.buffer.read(), (sys.argv[2], 9166))
"""


def _table(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip", STEER_TABLE],
                          capture_output=True, text=True, timeout=30, check=False).stdout  # fmt: skip


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _steers_to(netns: str, old: str) -> bool:
    return f'dup to {old} device "eth0" drop' in _table(netns)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


@pytest.mark.netns
def test_a_draining_bgp_host_tells_its_peers_before_it_withdraws(netns: str, tmp_path: Path) -> None:
    """BGP mode: the drain flag (the preStop's, or a cordon's) makes steer tell the peers, which
    steer this host's flows back; --told-file then lets halb-bgp withdraw. A second host leaving
    during that drain takes the steering over. The listener needs NET_ADMIN for its rules:
    without it the message is accepted and nothing steers."""
    for addr in LISTENERS:
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{addr}/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [_steer(netns, "192.0.2.11", a), _steer(netns, "192.0.2.12", b)]
    try:
        assert wait_until(lambda: _read(a / "told") == "0" and _read(b / "told") == "0", 10, 0.05)
        assert _table(netns) == ""  # nobody drains: no steering
        (a / "draining").write_text("1\n")
        assert wait_until(lambda: _read(a / "told").startswith("1 "), 10, 0.02)
        assert wait_until(lambda: _steers_to(netns, "192.0.2.11"), 10, 0.05), _table(netns)
        assert wait_until(lambda: '"accepted": 3' in _read(b / "steer.json"), 10, 0.1), _read(
            b / "steer.json"
        )
        (a / "draining").write_text("0\n")
        assert wait_until(lambda: _read(a / "told") == "0", 10, 0.02)
        # .13 leaves while .11's drain runs: its message replaces the rules, not adds to them.
        message = hk.sign(KEY, "192.0.2.13", 20.0, time.time(), "1313131313131313")
        cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", SEND, "192.0.2.13", "192.0.2.12"]
        subprocess.run(cmd, input=message, check=True, timeout=30)
        assert wait_until(lambda: _steers_to(netns, "192.0.2.13"), 10, 0.05), _table(netns)
        assert not _steers_to(netns, "192.0.2.11") and _table(netns).count("dup to") == 1
    finally:
        _stop(procs)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "ip", STEER_TABLE], check=False)
    # Without NET_ADMIN (the steer container's one capability): accepted, but no rule loads.
    c, d = tmp_path / "c", tmp_path / "d"
    no_admin = ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"]
    procs = [_steer(netns, "192.0.2.11", c), _steer(netns, "192.0.2.12", d, *no_admin)]
    try:
        assert wait_until(lambda: _read(c / "told") == "0" and _read(d / "told") == "0", 10, 0.05)
        (c / "draining").write_text("1\n")
        assert wait_until(lambda: '"accepted": 3' in _read(d / "steer.json"), 10, 0.1), _read(
            d / "steer.json"
        )
        assert _table(netns) == ""
    finally:
        _stop(procs)
    out = procs[1].stdout.read() if procs[1].stdout else ""
    assert "Operation not permitted" in out, out


# Three TCP segments with ACK set (mid-stream: conntrack `new`, not a SYN) to the VIP, each a
# flow of its own, with TTL 64, 1 and 0: a client's, and what a steered copy may arrive with.
RAW_ACKS = """
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
src, dst = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for ttl, sport in ((64, 40001), (1, 40002), (0, 40003)):
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1000, 2000, 5 << 4, 0x10, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 40, 0, 0, ttl, 6, 0) + addrs
    s.sendto(ip + tcp, (dst, 0))
"""


@pytest.mark.netns
def test_a_steered_copy_is_never_steered_again(netns: str, tmp_path: Path) -> None:
    """`dup` lowers the copy's TTL as a forward would, from the 1 the rule gives it to 0: a host
    steering to the sender would otherwise steer it straight back, without end. Only the
    client's segment (TTL 64) is steered; those with TTL 1 and 0 are not."""
    sender = f"{netns}-s"
    subprocess.run(["ip", "netns", "add", sender], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "peer0", "netns", sender], check=True)
        for args in (["-n", netns, "addr", "add", "192.0.2.11/24", "dev", "eth0"],
                     ["-n", netns, "addr", "add", "203.0.113.10/32", "dev", "lo"],
                     ["-n", netns, "link", "set", "lo", "up"],
                     ["-n", sender, "addr", "add", "192.0.2.99/24", "dev", "peer0"],
                     ["-n", sender, "link", "set", "peer0", "up"],
                     ["-n", sender, "route", "add", "203.0.113.10/32", "via", "192.0.2.11"]):  # fmt: skip
            subprocess.run(["ip", *args], check=True)
        path = tmp_path / "steer.nft"
        path.write_text(hk.steer_rules("203.0.113.10", [80], "192.0.2.12", "eth0"))
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", str(path)], check=True, timeout=30)
        send = [sys.executable, "-c", RAW_ACKS, "192.0.2.99", "203.0.113.10"]
        subprocess.run(["ip", "netns", "exec", sender, *send], check=True, timeout=30)

        def counted() -> int:
            return sum(int(n) for n in re.findall(r"counter packets (\d+)", _table(netns)))

        assert wait_until(lambda: counted() >= 1, 5, 0.05), _table(netns)
        time.sleep(0.3)  # the other two have arrived too
        assert counted() == 1, _table(netns)
    finally:
        subprocess.run(["ip", "netns", "del", sender], check=False)
