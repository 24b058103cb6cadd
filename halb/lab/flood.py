"""Overload from the client namespace: many connections held at once, slow and fast.

    python -m halb.lab.flood --target IP:PORT --connections N --seconds S [--host H]

Half the connections are slow clients (slowloris: a request's headers a line
every SLOW_LINE_S, never finished), half fast ones (a keep-alive GET every
FAST_EVERY_S, the answer read). Whatever closes is opened again until the end:
the pressure stays at N. Prints one JSON line: what opened, what was answered,
what the edge closed. One process, one selector; every loop bounded by time.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

SLOW_LINE_S = 2.0
FAST_EVERY_S = 2.0


@dataclass
class Conn:
    sock: socket.socket
    slow: bool
    connected: bool = False
    next_at: float = 0.0
    buf: bytearray = field(default_factory=bytearray)


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return int(want)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halb.lab.flood")
    p.add_argument("--target", required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--host", default="overload.lab.invalid")
    args = p.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    limit = raise_nofile(args.connections + 64)
    total = min(args.connections, limit - 64)
    sel = selectors.DefaultSelector()
    conns: dict[int, Conn] = {}
    stats = {"wanted": args.connections, "opened": 0, "connected": 0, "answers": 0, "closed_by_edge": 0,
             "connect_errors": 0}  # fmt: skip
    request = f"GET / HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()

    def open_one(slow: bool) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, int(port)))
        if err not in (0, errno.EINPROGRESS):
            stats["connect_errors"] += 1
            s.close()
            return
        c = Conn(s, slow)
        conns[s.fileno()] = c
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, c)
        stats["opened"] += 1

    def close(c: Conn, by_edge: bool) -> None:
        sel.unregister(c.sock)
        conns.pop(c.sock.fileno(), None)
        c.sock.close()
        if by_edge:
            stats["closed_by_edge"] += 1

    for i in range(total):
        open_one(slow=i % 2 == 0)
    end = time.monotonic() + args.seconds
    for _ in range(10_000_000):  # bounded by time below, and by count
        now = time.monotonic()
        if now >= end:
            break
        for key, events in sel.select(timeout=0.1):
            c: Conn = key.data
            if events & selectors.EVENT_WRITE and not c.connected:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    stats["connect_errors"] += 1
                    close(c, by_edge=False)
                    continue
                c.connected = True
                stats["connected"] += 1
                sel.modify(c.sock, selectors.EVENT_READ, c)
                if c.slow:
                    c.sock.send(f"GET / HTTP/1.1\r\nHost: {args.host}\r\n".encode())
                c.next_at = now
            elif events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    close(c, by_edge=True)
                    continue
                if b"HTTP/1.1 " in data and not c.slow:
                    stats["answers"] += data.count(b"HTTP/1.1 ")
        for c in list(conns.values()):
            if not c.connected or now < c.next_at:
                continue
            try:
                c.sock.send(b"X-Slow: 1\r\n" if c.slow else request)
            except OSError:
                close(c, by_edge=True)
                continue
            c.next_at = now + (SLOW_LINE_S if c.slow else FAST_EVERY_S)
        # Keep the pressure: reopen what closed, half slow, half fast.
        missing = total - len(conns)
        for i in range(min(missing, 256)):
            open_one(slow=i % 2 == 0)
    stats["held_at_end"] = sum(1 for c in conns.values() if c.connected)
    for c in list(conns.values()):
        close(c, by_edge=False)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
