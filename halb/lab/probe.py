"""The lab client: a new TCP connection + HTTP request per attempt, open loop.

    python -m halb.lab.probe --target 192.0.2.10:80 [--host-header H] [--tls --cafile F]
        [--interval 0.02] [--timeout 0.2] (--count N | --duration S) [--json]

With --tls each attempt is a new TLS connection (SNI: the host header),
verified against --cafile: a failed handshake is a failed attempt.

Runs in the client namespace. Bounded by --count and --duration both.
Timestamps are CLOCK_MONOTONIC, which namespaces share, so the caller can
line them up with the moment it injected a fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

MAX_COUNT = 100_000
MAX_DURATION_S = 600.0


@dataclass
class Attempt:
    t: float  # monotonic start
    ok: bool
    ms: float
    answer: str | None = None  # "host=app-1 service=shop replica=0"
    error: str | None = None


async def attempt(
    host: str, port: int, host_header: str | None, timeout: float, tls: ssl.SSLContext | None = None
) -> Attempt:
    start = time.monotonic()
    request = f"GET / HTTP/1.1\r\nHost: {host_header or host}\r\nConnection: close\r\n\r\n".encode()

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=(host_header or host) if tls else None
        )
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read()  # to EOF: Connection: close
        finally:
            writer.close()

    try:
        raw = await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        return Attempt(start, False, (time.monotonic() - start) * 1000, None, "timeout")
    except ssl.SSLError as err:
        return Attempt(start, False, (time.monotonic() - start) * 1000, None, f"TLS: {err.reason or err}")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return Attempt(start, False, (time.monotonic() - start) * 1000, None, reason)
    ms = (time.monotonic() - start) * 1000
    text = raw.decode(errors="replace")
    status = text.split(" ", 2)[1] if text.startswith("HTTP/") else "?"
    body = text.split("\r\n\r\n", 1)[-1].strip()
    if status != "200":
        return Attempt(start, False, ms, body or None, f"HTTP {status}")
    return Attempt(start, True, ms, body)


async def _run(
    host: str,
    port: int,
    host_header: str | None,
    interval: float,
    timeout: float,
    count: int,
    duration: float,
    tls: ssl.SSLContext | None = None,
) -> list[Attempt]:
    # Open loop: a new attempt every `interval` whatever is still in flight,
    # so one lost request does not blind the probe for its whole timeout.
    # SIGUSR1 ends it early (a caller that waited for something to finish).
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop.set)
    start = time.monotonic()
    tasks = []
    for i in range(min(count, MAX_COUNT)):
        at = start + i * interval
        if at - start >= min(duration, MAX_DURATION_S) or stop.is_set():
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(attempt(host, port, host_header, timeout, tls)))
    return list(await asyncio.gather(*tasks))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.probe")
    p.add_argument("--target", required=True, help="ADDRESS:PORT")
    p.add_argument("--host-header")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=0.2)
    p.add_argument("--count", type=int, default=MAX_COUNT)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="one JSON document at the end")
    p.add_argument("--tls", action="store_true", help="a new TLS connection per attempt")
    p.add_argument("--cafile", help="the CA that signs the edge's certificates (with --tls)")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    tls = None
    if args.tls:
        tls = ssl.create_default_context(cafile=args.cafile)
        # One full handshake per attempt, as a new client's: no session reuse.
        tls.options |= ssl.OP_NO_TICKET
    results = asyncio.run(
        _run(host, int(port), args.host_header, args.interval, args.timeout, args.count, args.duration, tls)
    )
    if args.json:
        json.dump({"attempts": [asdict(a) for a in results]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for a in results:
            what = a.answer if a.ok else f"FAILED ({a.error})"
            print(f"{a.ms:7.1f} ms  {what}")
    return 0 if results and all(a.ok for a in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())


class Background:
    """A lab tool started in the background that prints one JSON document at its end."""

    what = "the tool"

    def __init__(self, cmd: list[str], duration: float, env: dict[str, str]) -> None:
        import subprocess

        self.duration = duration
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def result(self, grace_s: float) -> tuple[Any, str]:
        """(its JSON or None, its stderr), once it ends (bounded: its duration + grace_s)."""
        import subprocess

        try:
            out, err = self.proc.communicate(timeout=self.duration + grace_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ProbeError(f"{self.what} did not finish within {self.duration + grace_s:g} s") from None
        try:
            return json.loads(out), err
        except ValueError:
            return None, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ProbeRun(Background):
    """A probe started in the background; `attempts()` waits for its JSON."""

    what = "the probe"

    def finish(self, grace_s: float = 5.0) -> list[Attempt]:
        """End the probe now (SIGUSR1: no new attempt) and return what it saw."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
        self.duration = 0.0
        return self.attempts(grace_s)

    def attempts(self, grace_s: float) -> list[Attempt]:
        """Every attempt, once the probe ends (bounded: its duration + grace_s)."""
        data, err = self.result(grace_s)
        try:
            return [Attempt(**a) for a in data["attempts"]]
        except (KeyError, TypeError):
            raise ProbeError(f"probe failed: {err.strip()}") from None


class ProbeError(Exception):
    """The probe itself failed (not a request through it)."""
