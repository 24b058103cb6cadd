"""vrrp-exporter without root or network: a real FIFO, keepalived's lines, /metrics text.

The writer here opens the FIFO the way keepalived 2.2.7 does (lib/notify.c
fifo_open: O_RDWR | O_NONBLOCK, kept open until exit) and writes its lines
(vrrp_notify.c: `INSTANCE "NAME" STATE PRIORITY`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, load_script
from prometheus_client import CollectorRegistry, generate_latest

from halb.lab.base import wait_until
from halb.lab.metrics import Samples, parse

SCRIPT = ROOT / "images" / "keepalived" / "vrrp-exporter"
KEEPALIVED_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW


def load_exporter() -> ModuleType:
    return load_script(SCRIPT)


ve = load_exporter()


def samples(exporter: Any) -> Samples:
    """/metrics as the HTTP handler would serve it, parsed back."""
    registry = CollectorRegistry()
    registry.register(exporter)
    return parse(generate_latest(registry).decode())


def value(exporter: Any, name: str, **labels: str) -> float | None:
    return samples(exporter).get((name, tuple(sorted(labels.items()))))


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    return wait_until(cond, timeout, poll=0.02)


class Running:
    """The exporter's FIFO loop in a thread, as main() runs it."""

    def __init__(self, tmp: Path, haproxy_file: Path | None = None) -> None:
        self.fifo_path = tmp / "vrrp-notify.fifo"
        self.state_file = tmp / "vrrp-exporter.json"
        self.logs: list[str] = []
        self.vrrp = ve.make_vrrp("VI_51", "eth0", 51, str(self.state_file), self.logs.append)
        cfg = ve.Config("192.0.2.10/24", "halbt-none0", str(haproxy_file) if haproxy_file else None)
        self.exporter = ve.Exporter(cfg, self.vrrp, str(self.state_file), self.logs.append)
        self.fifo = ve.Fifo(str(self.fifo_path), self.logs.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=ve.run, args=(self.exporter, self.fifo, self.stop, self.logs.append)
        )
        self.thread.start()
        # Opened for reading, not just created: a writer that closes before
        # any reader has it open loses what it wrote (keepalived keeps its end open).
        assert wait_for(lambda: self.fifo.fd is not None), self.logs

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        self.fifo.close()

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.exporter, name, **labels)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    try:
        yield r
    finally:
        r.close()


def keepalived_writer(path: Path) -> int:
    return os.open(path, KEEPALIVED_FLAGS)


def say(fd: int, *lines: str) -> None:
    os.write(fd, "".join(f"{line}\n" for line in lines).encode())


STATE = "keepalived_vrrp_state"
LABELS = {"iname": "VI_51", "interface": "eth0", "vrid": "51"}


# --- the state machine -------------------------------------------------------------


def test_lines_drive_state_and_count_masters() -> None:
    vrrp = ve.Vrrp()
    seq = ["BACKUP 200", "MASTER 200", "FAULT 0", "BACKUP 200", "MASTER 200", "MASTER 200", "STOP 200"]
    changed = [vrrp.feed(f'INSTANCE "VI_1" {s}', float(i + 1)) for i, s in enumerate(seq)]
    assert changed == [True, True, True, True, True, False, True]
    inst = vrrp.instances["VI_1"]
    assert (inst.state, inst.become_master, inst.since) == (0, 2, 7.0)
    assert vrrp.lines == {"BACKUP": 2, "MASTER": 3, "FAULT": 1, "STOP": 1}


def test_events_groups_and_junk_change_no_state() -> None:
    vrrp = ve.Vrrp()
    vrrp.feed('INSTANCE "VI_1" MASTER 200', 1.0)
    assert not vrrp.feed('INSTANCE "VI_1" MASTER_PRIORITY 150', 2.0)
    assert not vrrp.feed('GROUP "G1" FAULT 0', 3.0)
    assert not vrrp.feed("INSTANCE VI_1 MASTER 200", 4.0)  # unquoted: not keepalived's
    assert not vrrp.feed('INSTANCE "VI_1" MASTER', 5.0)
    inst = vrrp.instances["VI_1"]
    assert (inst.state, inst.priority, inst.since) == (2, 150, 1.0)
    assert "G1" not in vrrp.instances
    assert vrrp.lines["malformed"] == 2 and vrrp.lines["MASTER_PRIORITY"] == 1


def test_state_round_trips_through_json() -> None:
    vrrp = ve.Vrrp()
    vrrp.feed('INSTANCE "VI_1" MASTER 200', 5.0)
    again = ve.Vrrp()
    again.load(json.loads(json.dumps(vrrp.dump())))
    assert again.instances == vrrp.instances and again.lines == vrrp.lines


# --- the FIFO, as keepalived uses it ----------------------------------------------------


def test_creates_the_fifo_keepalived_can_open_read_write(running: Running) -> None:
    st = running.fifo_path.stat()
    assert stat.S_ISFIFO(st.st_mode)
    # Others' rw: keepalived is uid 0 without CAP_DAC_OVERRIDE in the pod.
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert st.st_uid == os.geteuid()


def test_a_transition_reaches_metrics(running: Running) -> None:
    fd = keepalived_writer(running.fifo_path)
    try:
        before = time.time()
        say(fd, 'INSTANCE "VI_51" BACKUP 200', 'INSTANCE "VI_51" MASTER 200')
        assert wait_for(lambda: running.value(STATE, **LABELS) == 2), running.logs
        assert running.value("keepalived_become_master_total", iname="VI_51") == 1
        assert running.value("keepalived_up") == 1
        assert running.value("keepalived_vrrp_priority", iname="VI_51") == 200
        ts = running.value("keepalived_vrrp_last_transition_timestamp_seconds", iname="VI_51")
        assert ts is not None and before <= ts <= time.time()
        assert running.value("keepalived_vrrp_notify_lines_total", kind="MASTER") == 1
    finally:
        os.close(fd)


def test_writer_presence_is_keepalived_up(running: Running) -> None:
    fd = keepalived_writer(running.fifo_path)
    # Opening without writing (keepalived idle in BACKUP) is seen within the 1 s poll.
    assert wait_for(lambda: running.value("keepalived_up") == 1, 5.0)
    say(fd, 'INSTANCE "VI_51" MASTER 200')
    assert wait_for(lambda: running.value(STATE, **LABELS) == 2)
    os.close(fd)  # what the kernel does when keepalived dies, SIGKILL included
    assert wait_for(lambda: running.value("keepalived_up") == 0, 5.0)
    # Last announced state kept: a SIGKILLed keepalived says nothing more.
    assert running.value(STATE, **LABELS) == 2
    fd = keepalived_writer(running.fifo_path)
    try:
        say(fd, 'INSTANCE "VI_51" BACKUP 200')
        assert wait_for(lambda: running.value(STATE, **LABELS) == 1)
        assert running.value("keepalived_up") == 1
    finally:
        os.close(fd)


def test_a_writers_exit_wakes_the_reader_at_once(tmp_path: Path) -> None:
    fifo = ve.Fifo(str(tmp_path / "f"), print)
    assert fifo.open()
    fd = keepalived_writer(tmp_path / "f")
    try:
        assert fifo.read(0.0) == b""  # writer there, nothing said
        say(fd, 'INSTANCE "VI_51" BACKUP 200')
        assert fifo.read(5.0) == b'INSTANCE "VI_51" BACKUP 200\n'
        threading.Timer(0.2, os.close, (fd,)).start()
        started = time.monotonic()
        assert fifo.read(10.0) is None
        # Woken by the hang-up, not by the timeout.
        assert time.monotonic() - started < 5.0
    finally:
        fifo.close()


def test_clean_stop_reports_init(running: Running) -> None:
    fd = keepalived_writer(running.fifo_path)
    say(fd, 'INSTANCE "VI_51" MASTER 200', 'INSTANCE "VI_51" STOP 200')
    os.close(fd)
    assert wait_for(lambda: running.value("keepalived_vrrp_notify_lines_total", kind="STOP") == 1)
    assert wait_for(lambda: running.value("keepalived_up") == 0)
    assert running.value(STATE, **LABELS) == 0
    assert running.value("keepalived_become_master_total", iname="VI_51") == 1


def test_split_lines_are_joined(running: Running) -> None:
    fd = keepalived_writer(running.fifo_path)
    try:
        os.write(fd, b'INSTANCE "VI_51" MAS')
        time.sleep(0.2)
        assert running.value(STATE, **LABELS) == 0
        os.write(fd, b"TER 200\n")
        assert wait_for(lambda: running.value(STATE, **LABELS) == 2)
    finally:
        os.close(fd)


def test_keepalived_replacing_its_fifo_is_followed(running: Running) -> None:
    """keepalived unlinks a FIFO it created on stop/reload and makes a new one."""
    fd = keepalived_writer(running.fifo_path)
    say(fd, 'INSTANCE "VI_51" BACKUP 200')
    assert wait_for(lambda: running.value(STATE, **LABELS) == 1)
    running.fifo_path.unlink()
    os.close(fd)
    # keepalived's mkfifo; EEXIST if the exporter re-created it first: both use that one.
    with contextlib.suppress(FileExistsError):
        os.mkfifo(running.fifo_path, 0o600)
    fd = keepalived_writer(running.fifo_path)
    try:
        say(fd, 'INSTANCE "VI_51" MASTER 200')
        assert wait_for(lambda: running.value(STATE, **LABELS) == 2, 5.0), running.logs
    finally:
        os.close(fd)


def test_restart_keeps_state_and_reads_what_waited_in_the_pipe(tmp_path: Path) -> None:
    first = Running(tmp_path)
    fd = keepalived_writer(first.fifo_path)
    try:
        say(fd, 'INSTANCE "VI_51" BACKUP 200', 'INSTANCE "VI_51" MASTER 200')
        assert wait_for(lambda: first.value(STATE, **LABELS) == 2)
        first.close()
        # keepalived keeps writing while no exporter reads: it holds the pipe itself.
        say(fd, 'INSTANCE "VI_51" FAULT 0', 'INSTANCE "VI_51" BACKUP 200', 'INSTANCE "VI_51" MASTER 200')
        second = Running(tmp_path)
        try:
            assert wait_for(lambda: second.value("keepalived_become_master_total", iname="VI_51") == 2)
            assert second.value(STATE, **LABELS) == 2
            assert any("state restored" in line for line in second.logs)
        finally:
            second.close()
    finally:
        os.close(fd)


def test_unreadable_state_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "vrrp-exporter.json").write_text("{not json")
    r = Running(tmp_path)
    try:
        assert any("ignoring unreadable state file" in line for line in r.logs)
        assert r.value(STATE, **LABELS) == 0
        assert r.value("keepalived_become_master_total", iname="VI_51") == 0
    finally:
        r.close()


def test_a_non_fifo_at_the_path_is_reported_not_used(tmp_path: Path) -> None:
    (tmp_path / "vrrp-notify.fifo").write_text("")
    logs: list[str] = []
    fifo = ve.Fifo(str(tmp_path / "vrrp-notify.fifo"), logs.append)
    assert fifo.open() is False and fifo.open() is False
    assert logs == [f"cannot open {tmp_path / 'vrrp-notify.fifo'}: {tmp_path / 'vrrp-notify.fifo'} exists "
                    "and is not a FIFO; retrying"]  # fmt: skip


def test_fifo_is_opened_without_o_creat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fs.protected_fifos judges only O_CREAT opens of others' FIFOs in sticky dirs."""
    flags: list[int] = []
    real_open = os.open

    def spy(path: Any, flag: int, *args: Any) -> int:
        flags.append(flag)
        return real_open(path, flag, *args)

    monkeypatch.setattr(ve.os, "open", spy)
    fifo = ve.Fifo(str(tmp_path / "f"), lambda _: None)
    assert fifo.open()
    fifo.close()
    assert flags and all(not f & os.O_CREAT and f & os.O_NOFOLLOW for f in flags)


# --- haproxy-watch's file and the kernel's addresses ------------------------------------------


@pytest.mark.parametrize(("content", "expected"), [("0\n", 1.0), ("1\n", 0.0), ("x\n", None), (None, None)])
def test_haproxy_up_is_the_watchers_view(tmp_path: Path, content: str | None, expected: float | None) -> None:
    path = tmp_path / "haproxy-down"
    if content is not None:
        path.write_text(content)
    exporter = ve.Exporter(ve.Config("192.0.2.10/24", "halbt-none0", str(path)), ve.Vrrp(), None, print)
    assert value(exporter, "halb_haproxy_up") == expected


def test_no_watcher_no_haproxy_metric() -> None:
    exporter = ve.Exporter(ve.Config("192.0.2.10/24", "halbt-none0", None), ve.Vrrp(), None, print)
    names = {name for name, _ in samples(exporter)}
    assert "halb_haproxy_up" not in names
    # No such interface: the VIP is not held here, and the exporter says so.
    assert value(exporter, "halb_vip_held", vip="192.0.2.10") == 0
    assert value(exporter, "keepalived_up") == 0


def rtattr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def newaddr(index: int, addr: str, seq: int = 1) -> bytes:
    body = struct.pack("=BBBBI", 2, 24, 0, 0, index) + rtattr(1, bytes(map(int, addr.split("."))))
    body += rtattr(2, bytes(map(int, addr.split("."))))
    return struct.pack("=IHHII", 16 + len(body), 20, 2, seq, 0) + body


def test_netlink_address_dump_is_parsed() -> None:
    data = newaddr(2, "192.0.2.11") + newaddr(2, "192.0.2.10") + newaddr(3, "198.51.100.1")
    found = {(k, ve._address(p[8:]).pop()) for k, p in ve._messages(data) if k == 20 and p[4] == 2}
    assert found == {(20, "192.0.2.11"), (20, "192.0.2.10")}


# --- the command line ----------------------------------------------------------------------


GOOD = ["--listen", "192.0.2.11", "--fifo", "/run/halb/f", "--instance", "VI_51", "--interface", "eth0",
        "--vrid", "51", "--vip", "192.0.2.10/24"]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--listen", "192.0.2.10"], "--listen must not be the VIP"),
        (["--port", "0"], "--port 0 is not in 1..65535"),
        (["--vrid", "256"], "--vrid 256 is not in 1..255"),
        (["--vip", "192.0.2.300/24"], "192.0.2.300"),
        (["--listen", "$(HOST_IP)"], "$(HOST_IP)"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        ve.parse_args(GOOD + change)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_good_flags_parse() -> None:
    args = ve.parse_args([*GOOD, "--listen", "127.0.0.1"])
    assert args.listen == ["192.0.2.11", "127.0.0.1"] and args.port == 9165


STEER_STATE = {
    "handoff_messages": {"accepted": 3, "unauthenticated": 1, "replayed": 2},
    "firewall_refused": {"vrrp_refused": 40, "handoff_refused": 5, "off_vip_refused": 0},
}


def test_handoff_verdicts_and_firewall_refusals_come_from_steers_file(tmp_path: Path) -> None:
    path = tmp_path / "steer.json"
    cfg = ve.Config("192.0.2.10/24", "halbt-none0", None, str(path))
    exporter = ve.Exporter(cfg, ve.Vrrp(), None, print)
    names = {name for name, _ in samples(exporter)}
    assert not any(n.startswith(("halb_handoff", "halb_firewall")) for n in names)  # nothing written yet
    path.write_text(json.dumps(STEER_STATE))
    got = {r: value(exporter, "halb_handoff_messages_total", result=r) for r in ve.HANDOFF_RESULTS}
    # Every verdict has a series from the start (increase() sees the first forged message).
    assert got == {
        "accepted": 3,
        "unauthenticated": 1,
        "replayed": 2,
        "stale": 0,
        "foreign": 0,
        "malformed": 0,
    }
    refused = {
        r: value(exporter, "halb_firewall_refused_packets_total", rule=r)
        for r in ("vrrp", "handoff", "off_vip")
    }
    assert refused == {"vrrp": 40, "handoff": 5, "off_vip": 0}
    path.write_text("{not json")
    assert value(exporter, "halb_handoff_messages_total", result="accepted") is None  # unreadable: no series
    assert value(exporter, "keepalived_up") == 0  # and the rest is served


def exported_names(tmp_path: Path) -> set[str]:
    """Every metric name /metrics has once keepalived spoke and the watcher wrote."""
    (tmp_path / "down").write_text("0\n")
    (tmp_path / "steer.json").write_text(json.dumps(STEER_STATE))
    cfg = ve.Config("192.0.2.10/24", "halbt-none0", str(tmp_path / "down"), str(tmp_path / "steer.json"))
    exporter = ve.Exporter(cfg, ve.Vrrp(), None, print)
    exporter.feed(b'INSTANCE "VI_51" MASTER 200\n', 1.0)
    return {name for name, _ in samples(exporter)}


def test_every_documented_metric_is_exported(tmp_path: Path) -> None:
    """The module docstring's list is what /metrics has (the rules and dashboard use these)."""
    block = (ve.__doc__ or "").split("Metrics:\n")[1].split("\n\n")[0]
    documented = set(re.findall(r"^  ([a-z_]+)", block, re.M))
    assert len(documented) == 10
    assert documented <= exported_names(tmp_path), documented - exported_names(tmp_path)
