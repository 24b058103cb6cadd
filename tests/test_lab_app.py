"""The lab app stand-in and the long-lived client, on 127.0.0.1 without root.

Each test runs `python -m halb.lab.app` as a subprocess on a free port and kills
only that PID: what the lab runs in a pod is what is tested here.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from halb.lab.app import CLOSE, PING, PONG, TEXT, read_ws_frame, ws_accept, ws_frame
from halb.lab.longlived import Holder, hold, main

ROOT = Path(__file__).resolve().parent.parent
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
WHO = "host=app-1 service=shop replica=2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def app(*flags: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    cmd = [sys.executable, "-m", "halb.lab.app", "--node", "app-1", "--service", "shop", "--replica", "2"]
    with tempfile.TemporaryFile() as err:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [*cmd, "--address", "127.0.0.1", "--port", str(port), *flags],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    err.seek(0)
                    pytest.fail(f"the app exited {proc.returncode}: {err.read().decode()}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert time.monotonic() < deadline, "the app did not listen within 10 s"
                time.sleep(0.02)
            yield port, proc
        finally:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def plain() -> Iterator[int]:
    with app() as (port, _):
        yield port


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def proxy_v2_ipv4(src: str, dst: str, sport: int, dport: int) -> bytes:
    """Written out byte by byte, as HAProxy's send-proxy-v2 sends it (not with the app's parser)."""
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIGNATURE + b"\x21\x11" + struct.pack("!H", len(addrs)) + addrs


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True  # it closed with our request unread


def test_body_names_host_service_replica_and_path(plain: int) -> None:
    assert get(plain, "/api/x?y=1") == (200, f"{WHO} path=/api/x?y=1\n")
    assert get(plain, "/") == (200, f"{WHO} path=/\n")
    assert get(plain, "/healthz") == (200, "ok\n")
    status, headers = get(plain, "/headers")
    assert status == 200 and "Host: 127.0.0.1:" in headers


def test_client_is_the_peer_address(plain: int) -> None:
    assert get(plain, "/client") == (200, "client=127.0.0.1\n")


def test_slow_answers_after_the_delay(plain: int) -> None:
    t0 = time.monotonic()
    assert get(plain, "/slow?seconds=0.3") == (200, f"{WHO} path=/slow?seconds=0.3\n")
    assert 0.3 <= time.monotonic() - t0 < 2
    assert get(plain, "/slow?seconds=soon")[0] == 400


def test_stream_ticks_a_line_a_second(plain: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=5)
    try:
        conn.request("GET", "/stream?seconds=2")
        r = conn.getresponse()
        assert r.getheader("Transfer-Encoding") == "chunked"
        t0 = time.monotonic()
        assert r.read().decode() == f"tick 0 {WHO}\ntick 1 {WHO}\n"
        assert 0.8 < time.monotonic() - t0 < 3
    finally:
        conn.close()
    report = hold("stream", "127.0.0.1", plain, 2, 0.5)
    assert (report["opened"], report["held"], report["cut"]) == (2, 2, 0), report
    assert report["messages"] >= 4  # tick 0 and, at stop, the last check's tick 1 on each


def test_ws_frames_round_trip_every_length_encoding() -> None:
    for n in (0, 125, 126, 65535, 65536):
        payload = os.urandom(n)
        for mask in (True, False):
            data = ws_frame(TEXT, payload, mask=mask)
            assert read_ws_frame(io.BytesIO(data).read, masked=mask) == (True, TEXT, payload)
    with pytest.raises(ConnectionError, match="masked"):
        read_ws_frame(io.BytesIO(ws_frame(TEXT, b"x", mask=False)).read, masked=True)
    with pytest.raises(ConnectionError, match="mid-frame"):
        read_ws_frame(io.BytesIO(ws_frame(TEXT, b"xyz", mask=True)[:-1]).read, masked=True)
    # RFC 6455 1.3's own example.
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_ws_answers_ping_and_close(plain: int) -> None:
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as s:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        s.sendall(
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 101 Switching Protocols\r\n"
        head = b"".join(iter(f.readline, b"\r\n"))
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        s.sendall(ws_frame(PING, b"are you there", mask=True))
        assert read_ws_frame(f.read, masked=False) == (True, PONG, b"are you there")
        s.sendall(ws_frame(TEXT, b"hello", mask=True))
        assert read_ws_frame(f.read, masked=False) == (True, TEXT, b"hello")
        s.sendall(ws_frame(CLOSE, struct.pack("!H", 1000), mask=True))
        assert read_ws_frame(f.read, masked=False) == (True, CLOSE, struct.pack("!H", 1000))
        assert f.read(1) == b""
        f.close()


def test_ws_held_when_nothing_happens(plain: int) -> None:
    holder = Holder("ws", "127.0.0.1", plain, 3, interval=0.2)
    holder.start()
    time.sleep(0.5)
    report = holder.stop()
    assert (report["kind"], report["count"], report["opened"], report["failed_to_open"]) == ("ws", 3, 3, 0)
    assert (report["held"], report["cut"], report["errors"]) == (3, 0, []), report
    assert report["messages"] >= 9  # at least 3 echoes each (0 s, 0.2 s, 0.4 s) and the last check


def test_ws_cut_when_the_app_dies() -> None:
    with app() as (port, proc):
        holder = Holder("ws", "127.0.0.1", port, 3, interval=0.2)
        holder.start()
        time.sleep(0.5)
        proc.kill()
        proc.wait(5)
        report = holder.stop()
    assert (report["opened"], report["cut"], report["held"]) == (3, 3, 0), report
    assert report["messages"] >= 6 and report["errors"], report


def test_tcp_echo_greets_and_echoes() -> None:
    with app("--tcp-echo") as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            assert f.readline() == f"hello {WHO}\n".encode()
            s.sendall(b"abc\x00\xff")
            assert f.read(5) == b"abc\x00\xff"
            f.close()
        report = hold("tcp", "127.0.0.1", port, 2, 0.5, interval=0.2)
    assert (report["opened"], report["held"], report["cut"], report["failed_to_open"]) == (2, 2, 0, 0), report
    assert report["messages"] >= 6


def test_proxy_protocol_source_reaches_client() -> None:
    with app("--proxy-protocol") as (port, _):
        for header, client in [
            (proxy_v2_ipv4("198.51.100.7", "127.0.0.1", 40000, port), "198.51.100.7"),
            (SIGNATURE + b"\x20\x00\x00\x00", "127.0.0.1"),  # LOCAL, as a health check may send it
        ]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(header + b"GET /client HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                f = s.makefile("rb")
                answer = f.read()
                f.close()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert answer.endswith(f"\r\n\r\nclient={client}\n".encode()), answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /client HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_by_peer(s)


def test_proxy_protocol_tcp_echo() -> None:
    with app("--tcp-echo", "--proxy-protocol") as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(proxy_v2_ipv4("198.51.100.7", "127.0.0.1", 40000, port) + b"ping\n")
            f = s.makefile("rb")
            assert f.readline() == f"hello {WHO}\n".encode()
            assert f.readline() == b"ping\n"
            f.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"no header here, just bytes\n")
            assert closed_by_peer(s)


def test_cli_prints_one_json_line(plain: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--kind", "ws", "--host", "127.0.0.1", "--port", str(plain), "--count", "2", "--seconds", "0.3"]
    assert main([*argv, "--interval", "0.1", "--host-header", "shop.example.test"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["held"], report["cut"], report["failed_to_open"]) == (2, 0, 0)


def test_cli_fails_when_nothing_opens(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["--kind", "tcp", "--host", "127.0.0.1", "--port", str(port), "--count", "2"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["opened"], report["failed_to_open"], report["cut"]) == (0, 2, 0)
    assert report["errors"] and "refused" in report["errors"][0].lower()


@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "udp", "--host", "h", "--port", "80"],
        ["--kind", "ws", "--port", "80"],
        ["--kind", "ws", "--host", "h", "--port", "80", "--count", "0"],
        ["--kind", "ws", "--host", "h", "--port", "0"],
    ],
)
def test_cli_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
