"""A lab app replica: answers with its host, service and path, and holds long-lived connections.

python -m halb.lab.app --node app-1 --service shop --replica 0 --address 192.0.2.200 --port 8080
    [--proxy-protocol] [--tcp-echo]

A stand-in for the user's app images (the lab cannot run those): one replica
per address, as each pod has its own IP. What it answers:
- any path: `host=N service=S replica=R path=/the/path` (the request target, query included)
- /healthz: `ok`; /headers: the request's headers; /client: `client=IP`, the peer it saw
- /ws: a websocket echo (RFC 6455); /stream: a chunked `tick N host=.. service=.. replica=..`
  line a second (`?seconds=S`, default 3600); /slow?seconds=S: the body after S s (at most 600)
- --tcp-echo: no HTTP; a greeting `hello host=N service=S replica=R`, then every byte echoed
- --proxy-protocol: every connection opens with a PROXY v2 header (HAProxy's `send-proxy-v2`
  and `check-send-proxy`), whose source /client reports; a connection without one is closed
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import math
import os
import shutil
import socket
import struct
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import StreamRequestHandler, TCPServer, ThreadingTCPServer
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER_TIMEOUT_S = 5.0  # a peer that opens a connection but sends no PROXY header
IDLE_TIMEOUT_S = 600.0  # a websocket or TCP echo peer that has gone quiet
SLOW_MAX_S = 600.0
STREAM_DEFAULT_S = 3600.0
STREAM_MAX_S = 86400.0


class WebSocketError(ConnectionError):
    """A frame the codec refuses, or the peer gone mid-frame."""


class ProxyHeaderError(ValueError):
    """The connection did not open with a valid PROXY v2 header."""


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept that proves the server read this Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final frame; a client must mask what it sends and a server must not (RFC 6455 5.1)."""
    n, bit = len(payload), 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def _exact(read: Callable[[int], bytes], n: int) -> bytes:
    data = read(n)
    if len(data) < n:
        raise WebSocketError("connection closed mid-frame")
    return data


def read_ws_frame(read: Callable[[int], bytes], *, masked: bool) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of the next frame; `masked`: the peer is a client, so it must mask."""
    b0, b1 = _exact(read, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _exact(read, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _exact(read, 8))
    if bool(b1 & 0x80) != masked:
        raise WebSocketError("client frames must be masked and server frames must not")
    if n > MAX_MESSAGE:
        raise WebSocketError(f"a frame of {n} bytes is over {MAX_MESSAGE}")
    key = _exact(read, 4) if masked else b""
    payload = _exact(read, n)
    return bool(b0 & 0x80), b0 & 0x0F, _xor(payload, key) if masked else payload


def ws_echo(read: Callable[[int], bytes], write: Callable[[bytes], object]) -> None:
    """Echo each message until the client closes; a ping gets its pong (RFC 6455 5.5)."""
    opcode, message = TEXT, b""
    while True:  # ends with the client's close, EOF or the idle timeout
        fin, op, payload = read_ws_frame(read, masked=True)
        if op == CLOSE:
            write(ws_frame(CLOSE, payload[:2], mask=False))
            return
        if op == PING:
            write(ws_frame(PONG, payload, mask=False))
            continue
        if op == PONG:
            continue
        if op not in (CONT, TEXT, BINARY):
            raise WebSocketError(f"unknown opcode {op:#x}")
        if op != CONT:
            opcode, message = op, b""
        message += payload
        if len(message) > MAX_MESSAGE:
            raise WebSocketError(f"a message over {MAX_MESSAGE} bytes")
        if fin:
            write(ws_frame(opcode, message, mask=False))
            message = b""


def read_proxy_v2(read: Callable[[int], bytes]) -> str | None:
    """The source address a PROXY v2 header names; None for LOCAL or no address (the peer's counts)."""
    head = read(16)
    if len(head) < 16 or head[:12] != PROXY_V2_SIGNATURE:
        raise ProxyHeaderError("no PROXY v2 signature")
    ver_cmd, family, length = struct.unpack("!BBH", head[12:])
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
        raise ProxyHeaderError(f"version/command {ver_cmd:#04x} is not v2 LOCAL or PROXY")
    body = read(length)
    if len(body) < length:
        raise ProxyHeaderError("the header is cut short")
    if ver_cmd & 0x0F == 0:
        return None  # LOCAL: the proxy's own connection, e.g. a health check
    af, size = {1: (socket.AF_INET, 4), 2: (socket.AF_INET6, 16)}.get(family >> 4, (None, 0))
    if af is None:
        return None  # UNSPEC or a unix socket: the spec says to use the connection's own addresses
    if length < 2 * size + 4:
        raise ProxyHeaderError(f"{length} address bytes are too few for family {family:#04x}")
    return socket.inet_ntop(af, body[:size])


def accept_client(handler: StreamRequestHandler, proxy_protocol: bool) -> str | None:
    """The client's address: the peer's or the PROXY header's; None when the header is missing."""
    peer = str(handler.client_address[0])
    if not proxy_protocol:
        return peer
    handler.connection.settimeout(HEADER_TIMEOUT_S)
    try:
        source = read_proxy_v2(handler.rfile.read)
    except (ProxyHeaderError, OSError):
        return None
    handler.connection.settimeout(None)
    return source or peer


def _query_seconds(target: str, default: float, most: float) -> float:
    values = parse_qs(urlsplit(target).query).get("seconds")
    seconds = float(values[0]) if values else default
    if not math.isfinite(seconds):
        raise ValueError(seconds)
    return min(max(seconds, 0.0), most)


def make_handler(
    node: str, service: str, replica: int, *, proxy_protocol: bool = False
) -> type[BaseHTTPRequestHandler]:
    who = f"host={node} service={service} replica={replica}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        client_ip: str | None = None

        def setup(self) -> None:
            super().setup()
            self.client_ip = accept_client(self, proxy_protocol)

        def handle(self) -> None:
            if self.client_ip is not None:
                super().handle()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            try:
                if path == "/ws":
                    self._websocket()
                elif path == "/stream":
                    self._stream(_query_seconds(self.path, STREAM_DEFAULT_S, STREAM_MAX_S))
                elif path == "/slow":
                    time.sleep(_query_seconds(self.path, 0.0, SLOW_MAX_S))
                    self._answer(f"{who} path={self.path}\n".encode())
                elif path == "/healthz":
                    self._answer(b"ok\n")
                elif path == "/headers":
                    # What reached the app: the forwarding headers the edge set, nothing a client forged.
                    self._answer("".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode())
                elif path == "/client":
                    self._answer(f"client={self.client_ip}\n".encode())
                else:
                    self._answer(f"{who} path={self.path}\n".encode())
            except ValueError:
                self._answer(b"seconds must be a number\n", 400)

        def _answer(self, payload: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _websocket(self) -> None:
            key = self.headers.get("Sec-WebSocket-Key")
            if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
                self._answer(b"a websocket upgrade expected\n", 400)
                return
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws_accept(key))
            self.end_headers()
            self.close_connection = True
            self.connection.settimeout(IDLE_TIMEOUT_S)
            with contextlib.suppress(OSError):  # the client went away or broke the protocol
                ws_echo(self.rfile.read, self.wfile.write)

        def _stream(self, seconds: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for n in range(int(seconds)):
                    if n:
                        time.sleep(1)
                    line = f"tick {n} {who}\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True  # the client went away, which is how a stream ends

        def log_message(self, format: str, *args: object) -> None:
            pass  # health checks every 2 s would drown the log

    return Handler


def make_echo_handler(
    node: str, service: str, replica: int, *, proxy_protocol: bool = False
) -> type[StreamRequestHandler]:
    greeting = f"hello host={node} service={service} replica={replica}\n".encode()

    class Echo(StreamRequestHandler):
        def handle(self) -> None:
            if accept_client(self, proxy_protocol) is None:
                return
            self.connection.settimeout(IDLE_TIMEOUT_S)
            with contextlib.suppress(OSError):
                self.wfile.write(greeting)
                while data := self.rfile.read1(65536):  # ends with EOF or the idle timeout
                    self.wfile.write(data)

    return Echo


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a benchmark opens its long-lived connections at once


class _TCPServer(ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def nginx_binary() -> str:
    """Debian's nginx as `make deps` unpacks it beside the venv (or one on PATH)."""
    unpacked = Path(sys.executable).parent.parent / "nginx" / "usr" / "sbin" / "nginx"
    return str(unpacked) if unpacked.exists() else shutil.which("nginx") or str(unpacked)


def nginx_conf(node: str, service: str, replica: int, address: str, port: int, work: Path) -> str:
    """The same answers from Debian's nginx (the data-path benchmarks' stand-in: faster
    than the edge, so the edge is what they measure). One worker, nothing on disk but `work`."""
    tmp = work / f"{node}-{service}-{replica}"
    body = f"host={node} service={service} replica={replica}\\n"
    return "\n".join([
        "worker_processes 1;",
        f"pid {tmp}.pid;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {tmp}.body; proxy_temp_path {tmp}.proxy; fastcgi_temp_path {tmp}.fcgi;",
        f"    uwsgi_temp_path {tmp}.uwsgi; scgi_temp_path {tmp}.scgi;",
        "    keepalive_requests 1000000;",
        "    server {",
        f"        listen {address}:{port} reuseport;",
        "        default_type text/plain;",
        '        location = /healthz { return 200 "ok\\n"; }',
        '        location = /headers { return 200 "x-forwarded-for: $http_x_forwarded_for\\n'
        'x-forwarded-proto: $http_x_forwarded_proto\\n"; }',
        f'        location / {{ return 200 "{body}"; }}',
        "    }",
        "}",
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.app")
    p.add_argument("--node", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--replica", type=int, default=0)
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proxy-protocol", action="store_true", help="expect a PROXY v2 header first")
    p.add_argument("--tcp-echo", action="store_true", help="a greeting and a TCP echo instead of HTTP")
    args = p.parse_args(argv)
    where = (args.address, args.port)
    who = (args.node, args.service, args.replica)
    server: TCPServer
    if args.tcp_echo:
        server = _TCPServer(where, make_echo_handler(*who, proxy_protocol=args.proxy_protocol))
    else:
        server = _HTTPServer(where, make_handler(*who, proxy_protocol=args.proxy_protocol))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
