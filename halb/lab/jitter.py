"""Jitter on one host's link, by a delay line in userspace: this lab's kernel has no netem.

    python -m halb.lab.jitter --port PORT --relay RELAY --delay-ms D --jitter-ms J --seconds S

Runs in the switch namespace. Every frame the host sends arrives on its
switch port PORT, where a packet socket sees it before an nftables netdev
ingress hook drops it (taps come first in the kernel's receive path; this
kernel has neither netem nor tc's drop action); the line sends it
on RELAY, a veth whose peer is a bridge port, after a delay drawn from a
normal distribution (mean D, deviation J, never below 0: netem's
`delay D J distribution normal`). Frames the bridge sends towards the host
leave through that peer, arrive on RELAY and go out of PORT the same way.
Each direction keeps its order (a frame never departs before the one ahead
of it), like netem with a rate or a FIFO child: jitter, not reordering.
Prints one JSON line: frames each way, the delays drawn, sends that failed.

`JitterLink` sets it up and takes it down again (halb/lab/network.py's
switch namespace, the lab's own): the veth pair, the ingress drop (a table of its own), the
port's flooding switched off (the bridge would also flood to PORT directly)
and this process, whose PID it records and alone stops.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from halb.lab.base import in_ns, ip, run

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_VNET_HDR = 15
FRAME_MAX = 65536 + 64


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # Each frame with its virtio-net header: a veth hands on TCP and UDP with their checksums
    # still to be filled in (and may hand on a GSO super-frame); the header tells the kernel
    # so again when the frame is sent, so it arrives as valid as the host sent it.
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((ifname, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def relay(
    port: str, relay_if: str, delay_ms: float, jitter_ms: float, seconds: float, seed: int | None
) -> dict[str, Any]:
    rng = random.Random(seed)
    socks = {port: _packet_socket(port), relay_if: _packet_socket(relay_if)}
    other = {port: relay_if, relay_if: port}
    sel = selectors.DefaultSelector()
    for name, s in socks.items():
        sel.register(s, selectors.EVENT_READ, name)
    queue: list[tuple[float, int, str, bytes]] = []  # (due, seq, out interface, frame)
    last_due = {port: 0.0, relay_if: 0.0}
    stats = {"from_host": 0, "to_host": 0, "send_errors": 0}
    delays: list[float] = []
    seq = 0
    stop = {"now": False}

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + seconds
    while not stop["now"] and time.monotonic() < end:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out_if, frame = heapq.heappop(queue)
            try:
                socks[out_if].send(frame)
            except OSError:
                stats["send_errors"] += 1
        wait = min(end - now, queue[0][0] - now if queue else 0.05)
        for key, _ in sel.select(timeout=max(0.0, wait)):
            in_if = key.data
            while True:
                try:
                    frame, addr = socks[in_if].recvfrom(FRAME_MAX)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own send
                out_if = other[in_if]
                d = max(0.0, rng.gauss(delay_ms, jitter_ms)) / 1000.0
                due = max(time.monotonic() + d, last_due[out_if])
                last_due[out_if] = due
                delays.append(d)
                seq += 1
                heapq.heappush(queue, (due, seq, out_if, frame))
                stats["from_host" if in_if == port else "to_host"] += 1
    delays.sort()
    pick = (lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))] * 1000, 2)) if delays else None
    return {**stats, "delay_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)} if pick else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halb.lab.jitter")
    p.add_argument("--port", required=True)
    p.add_argument("--relay", required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    print(json.dumps(relay(a.port, a.relay, a.delay_ms, a.jitter_ms, a.seconds, a.seed)), flush=True)
    return 0


class JitterLink:
    """The delay line on `port` of the switch namespace `ns`, while the context lasts."""

    def __init__(self, ns: str, port: str, delay_ms: float, jitter_ms: float, seconds: float) -> None:
        self.ns, self.port = ns, port
        self.relay, self.peer = f"j{port}", f"k{port}"
        self.table = f"halb_jitter_{port}"
        self.args = (delay_ms, jitter_ms, seconds)
        self.proc: subprocess.Popen[str] | None = None
        self.result: dict[str, Any] = {}

    # The lab's own runners: a failure is a LabError naming the command (one line in the bench).
    def _ip(self, *args: str, check: bool = True) -> None:
        ip("-n", self.ns, *args, check=check)

    def _nft(self, script: str, check: bool = True) -> None:
        run(in_ns(self.ns, "nft", "-f", "-"), check=check, stdin=script)

    def __enter__(self) -> JitterLink:
        try:
            self._ip("link", "add", self.relay, "type", "veth", "peer", "name", self.peer)
            self._ip("link", "set", self.peer, "master", "br0", "up")
            self._ip("link", "set", self.relay, "up")
            delay_ms, jitter_ms, seconds = self.args
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "halb.lab.jitter", "--port", self.port,
                 "--relay", self.relay, "--delay-ms", f"{delay_ms:g}", "--jitter-ms", f"{jitter_ms:g}",
                 "--seconds", f"{seconds + 30:g}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(0.3)  # its sockets bound before the port's frames stop reaching the bridge
            self._nft(
                f"table netdev {self.table} {{\n chain divert {{\n"
                f'  type filter hook ingress device "{self.port}" priority 0; policy drop;\n }}\n}}\n'
            )
            self._ip("link", "set", "dev", self.port, "type", "bridge_slave", "flood", "off",
                     "mcast_flood", "off", "bcast_flood", "off")  # fmt: skip
        except BaseException:
            self._undo()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._undo()

    def _undo(self) -> None:
        self._ip("link", "set", "dev", self.port, "type", "bridge_slave", "flood", "on", "mcast_flood", "on",
                 "bcast_flood", "on", check=False)  # fmt: skip
        self._nft(f"delete table netdev {self.table}", check=False)
        if self.proc is not None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate(timeout=10)
            lines = [x for x in out.splitlines() if x.strip()]
            self.result = json.loads(lines[-1]) if lines else {}
            self.proc = None
        self._ip("link", "del", self.relay, check=False)


if __name__ == "__main__":
    sys.exit(main())
