"""images/keepalived/haproxy-watch against a local stand-in for HAProxy's /healthz, no root.

The watcher keeps one keep-alive connection to /healthz and writes 1 (down)
or 0 (up) to the file keepalived tracks. These run the shipped script as a
process, on 127.0.0.1, and check the mechanism, not only the outcome: a death
is seen through the socket's close even when the next ask is seconds away,
the way back needs `rise` good answers, a stop signal ends it at once, and a
file it cannot write is reported once and never ends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from halb.lab.base import wait_until

WATCH = ROOT / "images" / "keepalived" / "haproxy-watch"


class FakeHaproxy:
    """HTTP/1.1 keep-alive /healthz on 127.0.0.1; `die` closes the listener and every connection."""

    def __init__(self, port: int = 0) -> None:
        self.status = 200
        self.delay = 0.0  # seconds before each answer: a busy HAProxy
        self.requests: list[float] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = self._listener.getsockname()[1]
        self._alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._alive:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._alive:
                conn.close()
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, _, buf = buf.partition(b"\r\n\r\n")
                    with self._lock:
                        self.requests.append(time.monotonic())
                    time.sleep(self.delay)
                    body = b"OK\n" if self.status == 200 else b"stopping\n"
                    head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    conn.sendall(head + body)
        except OSError:
            return

    def die(self) -> float:
        """Close everything as a killed HAProxy's kernel does; returns when."""
        self._alive = False
        # shutdown, not only close: it wakes the accept() blocked in the other thread.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()
        return time.monotonic()

    def answered(self) -> int:
        with self._lock:
            return len(self.requests)


class Watcher:
    def __init__(self, port: int, file: Path, *extra: str) -> None:
        self.file = file
        self.proc = subprocess.Popen(
            [sys.executable, str(WATCH), "--port", str(port), "--file", str(file), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def value(self) -> str | None:
        try:
            return self.file.read_text().strip()
        except FileNotFoundError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def make(port: int, file: Path, *extra: str) -> Watcher:
        w = Watcher(port, file, *extra)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


def test_death_is_seen_through_the_socket_not_the_next_ask(
    tmp_path: Path, spawn: Callable[..., Watcher]
) -> None:
    server = FakeHaproxy()
    # Asks 5 s apart: only the keep-alive socket's close can tell it sooner.
    w = spawn(server.port, tmp_path / "down", "--interval", "5", "--rise", "1")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01), (w.out, w.err)
    asked = server.answered()
    died = server.die()
    assert wait_until(lambda: w.value() == "1", 2.0, poll=0.002), (w.out, w.err)
    flipped = time.monotonic() - died
    assert flipped < 1.0, flipped  # measured ~ms; far below the 5 s ask
    assert server.answered() == asked  # no ask in between: the close told it
    assert wait_until(lambda: any("down (" in line for line in w.out), 2)
    assert "haproxy-watch: down ([Errno 111] Connection refused)" in w.out, w.out
    assert w.proc.poll() is None


def test_down_within_a_tenth_of_a_second_at_the_default_interval(
    tmp_path: Path, spawn: Callable[..., Watcher]
) -> None:
    server = FakeHaproxy()
    w = spawn(server.port, tmp_path / "down")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)
    died = server.die()
    assert wait_until(lambda: w.value() == "1", 2.0, poll=0.002)
    # ~100 ms on a loaded machine: the close, one refused reconnect, one rename.
    assert time.monotonic() - died < 0.5


def test_a_busy_haproxy_is_not_down_a_hung_one_is(tmp_path: Path, spawn: Callable[..., Watcher]) -> None:
    """Saturated, /healthz answers late: failing over would hand the load to the next host.
    Only an answer missing for --timeout (2 s) is down."""
    server = FakeHaproxy()
    w = spawn(server.port, tmp_path / "down", "--interval", "0.05", "--rise", "1")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)
    server.delay = 0.8  # slower than the old 0.3 s limit
    asked = server.answered()
    assert wait_until(lambda: server.answered() >= asked + 3, 10, poll=0.05)
    assert w.value() == "0", (w.out, w.err)
    assert any("busy (0.8" in line for line in w.out), w.out
    server.delay = 3.0  # hung
    assert wait_until(lambda: w.value() == "1", 6, poll=0.05), (w.out, w.err)
    assert any(line.startswith("haproxy-watch: down (time") for line in w.out), w.out


def test_back_up_only_after_rise_good_answers(tmp_path: Path, spawn: Callable[..., Watcher]) -> None:
    server = FakeHaproxy()
    w = spawn(server.port, tmp_path / "down", "--interval", "0.05", "--rise", "4")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)
    port = server.port
    server.die()
    assert wait_until(lambda: w.value() == "1", 2.0, poll=0.005)
    back = FakeHaproxy(port)

    def flipped() -> bool:
        before = back.answered()
        value = w.value()
        after = back.answered()
        if value == "0":
            assert after >= 4, after  # not before the 4th good answer
            return True
        # The 5th ask follows the write: still down at 5 answers would mean it never rises.
        assert before <= 4, before
        return False

    assert wait_until(flipped, 5.0, poll=0.002), (w.out, back.answered())
    # The line follows the write: wait for it, do not race it.
    assert wait_until(lambda: "haproxy-watch: up (4 good answers)" in w.out, 2.0, poll=0.01), w.out


def test_an_answer_other_than_200_is_down(tmp_path: Path, spawn: Callable[..., Watcher]) -> None:
    """A soft-stopping HAProxy answers 503 on /healthz (`monitor fail if { stopping }`)."""
    server = FakeHaproxy()
    w = spawn(server.port, tmp_path / "down", "--interval", "0.05")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)
    server.status = 503
    assert wait_until(lambda: w.value() == "1", 2.0, poll=0.005)
    assert wait_until(lambda: "haproxy-watch: down (not 200)" in w.out, 2.0, poll=0.01), w.out
    server.status = 200
    assert wait_until(lambda: w.value() == "0", 2.0, poll=0.005)


def test_the_file_is_replaced_whole_and_readable_by_keepalived(
    tmp_path: Path, spawn: Callable[..., Watcher]
) -> None:
    server = FakeHaproxy()
    down = tmp_path / "down"
    w = spawn(server.port, down, "--interval", "0.05")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)
    assert down.read_text() == "0\n" and down.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["down"]  # no .tmp left behind
    inode = down.stat().st_ino
    server.die()
    assert wait_until(lambda: w.value() == "1", 2.0, poll=0.005)
    assert down.stat().st_ino != inode  # renamed into place, never rewritten in place


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_it_at_once(
    sig: signal.Signals, tmp_path: Path, spawn: Callable[..., Watcher]
) -> None:
    server = FakeHaproxy()
    w = spawn(server.port, tmp_path / "down", "--interval", "5", "--rise", "1")
    assert wait_until(lambda: w.value() == "0", 10, poll=0.01)  # asleep on the socket for 5 s
    sent = time.monotonic()
    w.proc.send_signal(sig)
    assert w.proc.wait(timeout=5) == 0
    assert time.monotonic() - sent < 1.0


def test_an_unwritable_file_is_reported_once_and_never_ends_it(
    tmp_path: Path, spawn: Callable[..., Watcher]
) -> None:
    server = FakeHaproxy()
    missing = tmp_path / "not-yet"  # root may write anywhere; nobody writes into nothing
    w = spawn(server.port, missing / "down", "--interval", "0.05")
    assert wait_until(lambda: len(server.requests) >= 6, 10, poll=0.01)
    port = server.port
    server.die()  # a state change: it tries to write again, and fails again
    time.sleep(0.3)
    server = FakeHaproxy(port)
    assert wait_until(lambda: server.answered() >= 4, 10, poll=0.01)
    assert w.proc.poll() is None
    errors = [line for line in w.err if "cannot write" in line]
    assert errors == [f"haproxy-watch: cannot write {missing / 'down'}: No such file or directory"], w.err
    assert not any("Traceback" in line for line in w.err)
    missing.mkdir()  # the volume appears: the next answer writes
    assert wait_until(lambda: w.value() == "0", 5, poll=0.01), (w.out, w.err)
    assert os.path.exists(missing / "down")
