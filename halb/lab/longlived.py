"""Long-lived connections held across a change, counting the ones it cut.

python -m halb.lab.longlived --kind ws --host 203.0.113.10 --port 80 --count 5 --seconds 10
    [--host-header shop.example.test] [--source ADDR] [--interval 1] [--open-timeout 3]

Against the lab app (halb/lab/app.py): `ws` sends a message on /ws every interval and
expects its echo, `stream` reads /stream's tick a second, `tcp` sends a line to a
--tcp-echo listener every interval and expects it back. A connection is `held` when it
still answers at the end and `cut` when it broke on the way (EOF, reset, a timeout, a
wrong echo). Prints the report as one JSON line; exit 0 when none was cut or failed to open.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal, TypedDict

from halb.lab.app import CLOSE, PING, PONG, TEXT, read_ws_frame, ws_accept, ws_frame

Kind = Literal["ws", "stream", "tcp"]
KINDS: tuple[Kind, ...] = ("ws", "stream", "tcp")
REPLY_TIMEOUT_S = 3.0  # an echo or a tick later than this is a cut (the app ticks every second)
MAX_COUNT = 10_000
MAX_LINE = 4096


class Report(TypedDict):
    kind: str
    count: int
    opened: int
    failed_to_open: int
    cut: int
    held: int
    messages: int
    errors: list[str]  # a few distinct reasons, for the reader of a failed run


class CutError(ConnectionError):
    """The peer closed, or answered something other than what was expected."""


class _Session:
    """One connection: `handshake()` opens it, `exchange()` proves it still works."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.host_header = host_header
        self.sent = 0

    def line(self) -> bytes:
        got = self.file.readline(MAX_LINE)
        if not got.endswith(b"\n"):
            raise CutError("the peer closed" if not got else f"a line cut short: {got[:60]!r}")
        return got

    def request(self, head: str) -> tuple[int, dict[str, str]]:
        """Status and headers (names lower-cased) of the answer to a GET."""
        self.sock.sendall(head.encode())
        status = self.line().split()
        if len(status) < 2 or not status[0].startswith(b"HTTP/"):
            raise CutError(f"not an HTTP answer: {b' '.join(status)[:60]!r}")
        headers: dict[str, str] = {}
        for _ in range(100):
            name, _, value = self.line().decode("latin-1").partition(":")
            if not name.strip():
                return int(status[1]), headers
            headers[name.strip().lower()] = value.strip()
        raise CutError("over 100 header lines")

    def handshake(self) -> None:
        raise NotImplementedError

    def exchange(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        self.drop()

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


class _Ws(_Session):
    def handshake(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        status, headers = self.request(
            f"GET /ws HTTP/1.1\r\nHost: {self.host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        if status != 101 or headers.get("sec-websocket-accept") != ws_accept(key):
            raise CutError(f"the websocket upgrade was answered {status}")

    def exchange(self) -> int:
        self.sent += 1
        text = f"message {self.sent}".encode()
        self.sock.sendall(ws_frame(TEXT, text, mask=True))
        for _ in range(16):  # a proxy's pings may come first
            fin, op, payload = read_ws_frame(self.file.read, masked=False)
            if op == PING:
                self.sock.sendall(ws_frame(PONG, payload, mask=True))
            elif op == CLOSE:
                raise CutError("the server closed the websocket")
            elif op == TEXT and fin and payload == text:
                return 1
            elif op != PONG:
                raise CutError(f"a wrong echo: {payload[:60]!r}")
        raise CutError("no echo among 16 frames")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(ws_frame(CLOSE, struct.pack("!H", 1000), mask=True))
            self.sock.settimeout(1.0)
            read_ws_frame(self.file.read, masked=False)  # the server's close, so neither side resets
        self.drop()


class _Stream(_Session):
    def handshake(self) -> None:
        status, headers = self.request(f"GET /stream HTTP/1.1\r\nHost: {self.host_header}\r\n\r\n")
        if status != 200:
            raise CutError(f"/stream was answered {status}")
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.left = 0  # bytes left in the current chunk
        self.buf = b""

    def _more(self) -> bytes:
        if self.chunked and self.left == 0:
            self.left = int(self.line().split(b";")[0].strip(), 16)
            if self.left == 0:
                raise CutError("the stream ended")
        data = self.file.read1(min(self.left, MAX_LINE) if self.chunked else MAX_LINE)
        if not data:
            raise CutError("the peer closed")
        if self.chunked:
            self.left -= len(data)
            if self.left == 0 and self.file.read(2) != b"\r\n":
                raise CutError("a chunk without its CRLF")
        return data

    def exchange(self) -> int:
        reads = 0
        while b"\n" not in self.buf:
            reads += 1
            if reads > 64 or len(self.buf) > MAX_LINE:
                raise CutError(f"no tick line: {self.buf[:60]!r}")
            self.buf += self._more()
        *lines, self.buf = self.buf.split(b"\n")
        if not all(line.startswith(b"tick ") for line in lines):
            raise CutError(f"not a tick: {lines[0][:60]!r}")
        return len(lines)


class _Tcp(_Session):
    def handshake(self) -> None:
        if not self.line().startswith(b"hello "):
            raise CutError("no greeting")

    def exchange(self) -> int:
        self.sent += 1
        text = f"line {self.sent}\n".encode()
        self.sock.sendall(text)
        if (got := self.line()) != text:
            raise CutError(f"a wrong echo: {got[:60]!r}")
        return 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.drop()


SESSIONS: dict[str, type[_Session]] = {"ws": _Ws, "stream": _Stream, "tcp": _Tcp}


@dataclass
class _Conn:
    status: str = "opening"  # then failed, or open and at last cut or held
    messages: int = 0
    error: str | None = None


class Holder:
    """`count` connections opened by start() and closed by stop(), held across a change."""

    def __init__(
        self,
        kind: Kind,
        host: str,
        port: int,
        count: int,
        *,
        host_header: str | None = None,
        source: str | None = None,
        interval: float = 1.0,
        open_timeout: float = 3.0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1 to {MAX_COUNT}, not {count}")
        if not 0 < interval <= 3600:
            raise ValueError(f"interval must be over 0 and at most 3600 s, not {interval}")
        if not 0 < open_timeout <= 600:
            raise ValueError(f"open_timeout must be over 0 and at most 600 s, not {open_timeout}")
        self.kind, self.host, self.port, self.count = kind, host, port, count
        self.host_header = host_header or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        self.source, self.interval, self.open_timeout = source, interval, open_timeout
        self._conns = [_Conn() for _ in range(count)]
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> None:
        """Open the connections; returns once each is open or failed (or the open timeout passed)."""
        if self._threads:
            raise RuntimeError("a Holder starts once")
        for i, conn in enumerate(self._conns):
            t = threading.Thread(target=self._run, args=(conn,), name=f"longlived-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + 2 * self.open_timeout + 1  # connect, then the handshake
        while time.monotonic() < deadline and any(c.status == "opening" for c in self._conns):
            time.sleep(0.01)

    @property
    def opened(self) -> int:
        """Connections that opened (still open, or cut or held since)."""
        return sum(c.status not in ("opening", "failed") for c in self._conns)

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less once no connection is left open."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and any(
            c.status in ("opening", "open") for c in self._conns
        ):
            time.sleep(min(left, 0.1))

    def stop(self) -> Report:
        """Prove each connection still answers, close it cleanly and report."""
        self._stop.set()
        deadline = time.monotonic() + 2 * self.open_timeout + REPLY_TIMEOUT_S + 2
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        statuses = [c.status for c in self._conns]
        opened = sum(s != "opening" and s != "failed" for s in statuses)
        held = statuses.count("held")  # one still "open" did not answer its last exchange in time
        return Report(
            kind=self.kind,
            count=self.count,
            opened=opened,
            failed_to_open=self.count - opened,
            cut=opened - held,
            held=held,
            messages=sum(c.messages for c in self._conns),
            errors=sorted({c.error for c in self._conns if c.error})[:5],
        )

    def _run(self, conn: _Conn) -> None:
        try:
            sock = socket.create_connection(
                (self.host, self.port), self.open_timeout, (self.source, 0) if self.source else None
            )
        except OSError as e:
            conn.status, conn.error = "failed", f"open: {e}"
            return
        session = SESSIONS[self.kind](sock, self.host_header)
        try:
            session.handshake()
        except (OSError, ValueError) as e:
            session.drop()
            conn.status, conn.error = "failed", f"open: {e}"
            return
        conn.status = "open"
        sock.settimeout(REPLY_TIMEOUT_S)
        try:
            while True:  # ends with the first answer that comes once stop() is called, or an error
                conn.messages += session.exchange()
                if self._stop.is_set():
                    break
                if self.kind != "stream":  # the stream's ticks pace themselves
                    self._stop.wait(self.interval)
            conn.status = "held"
        except (OSError, ValueError) as e:
            conn.status, conn.error = "cut", f"{type(e).__name__}: {e}"
        finally:
            session.close()


def hold(
    kind: Kind,
    host: str,
    port: int,
    count: int,
    seconds: float,
    *,
    host_header: str | None = None,
    source: str | None = None,
    interval: float = 1.0,
    open_timeout: float = 3.0,
) -> Report:
    """Hold `count` connections for `seconds` and report how many were cut."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be 0 or more, not {seconds}")
    holder = Holder(
        kind, host, port, count, host_header=host_header, source=source, interval=interval,
        open_timeout=open_timeout,
    )  # fmt: skip
    holder.start()
    holder.wait(seconds)
    return holder.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.longlived")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--host-header", help="the Host header for ws and stream (default host:port)")
    p.add_argument("--source", help="the local address to connect from")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between messages (ws, tcp)")
    p.add_argument("--open-timeout", type=float, default=3.0)
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be 1 to 65535, not {args.port}")
    if not (math.isfinite(args.seconds) and args.seconds >= 0):
        p.error(f"--seconds must be 0 or more, not {args.seconds}")
    try:
        holder = Holder(
            args.kind, args.host, args.port, args.count, host_header=args.host_header, source=args.source,
            interval=args.interval, open_timeout=args.open_timeout,
        )  # fmt: skip
    except ValueError as e:
        p.error(str(e))
    holder.start()
    holder.wait(args.seconds)
    report = holder.stop()
    print(json.dumps(report), flush=True)
    return 0 if report["cut"] == 0 and report["failed_to_open"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
