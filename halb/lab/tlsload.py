"""TLS load from the client namespace: handshakes per second, and sessions resumed.

    python -m halb.lab.tlsload handshakes --target ADDR:PORT --sni NAME --cafile F
        [--key ecdsa|rsa] [--version 1.2|1.3] [--resume] [--seconds S] [--workers N]
    python -m halb.lab.tlsload resume --target ADDR:PORT --sni NAME --cafile F
        [--version 1.2|1.3] [--sessions N]

handshakes: N processes open a new TLS connection each in a loop for S
seconds (with --resume, each offering the session of its first one) and
print {"handshakes", "resumed", "failed", "seconds"}. With TLS 1.2 the
cipher list picks the server's key (ECDHE-ECDSA or ECDHE-RSA); TLS 1.3
leaves it to the signature algorithms (ECDSA first).

resume: N sessions are made (each a full handshake and a request, so TLS
1.3's tickets arrive), then it prints "saved" and waits for a line on
stdin (the caller's fault happens then); each session is offered again, and
it prints {"sessions", "resumed", "new", "failed"}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import ssl
import sys
import time
from typing import Any

CIPHERS = {"ecdsa": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}
TIMEOUT_S = 2.0
MAX_SECONDS = 600.0
MAX_SESSIONS = 10_000


def context(cafile: str, version: str, key: str = "ecdsa") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if version == "1.2":
        ctx.maximum_version = ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(CIPHERS[key])
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def connect(
    ctx: ssl.SSLContext, host: str, port: int, sni: str, session: ssl.SSLSession | None, request: bool
) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=TIMEOUT_S)
    tls = ctx.wrap_socket(raw, server_hostname=sni, session=session)
    if request:  # TLS 1.3 sends its tickets after the handshake: read an answer to have them
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(65536):
            pass
    return tls


def _handshakes(args: argparse.Namespace, out: Any) -> None:
    host, port = args.target.rsplit(":", 1)
    ctx = context(args.cafile, args.version, args.key)
    session = None
    if args.resume:
        first = connect(ctx, host, int(port), args.sni, None, request=True)
        session = first.session
        first.close()
    done = resumed = failed = 0
    end = time.monotonic() + min(args.seconds, MAX_SECONDS)
    while time.monotonic() < end:
        try:
            s = connect(ctx, host, int(port), args.sni, session, request=False)
            resumed += bool(s.session_reused)
            s.close()
            done += 1
        except (OSError, ssl.SSLError):
            failed += 1
    out.put((done, resumed, failed))


def handshakes(args: argparse.Namespace) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_handshakes, args=(args, queue)) for _ in range(args.workers)]
    start = time.monotonic()
    for p in procs:
        p.start()
    results = [queue.get(timeout=args.seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    return {
        "handshakes": sum(r[0] for r in results),
        "resumed": sum(r[1] for r in results),
        "failed": sum(r[2] for r in results),
        "seconds": round(time.monotonic() - start, 3),
    }


def resume(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.target.rsplit(":", 1)
    ctx = context(args.cafile, args.version)
    sessions = []
    for _ in range(min(args.sessions, MAX_SESSIONS)):
        s = connect(ctx, host, int(port), args.sni, None, request=True)
        sessions.append(s.session)
        s.close()
    print("saved", flush=True)
    sys.stdin.readline()
    resumed = new = failed = 0
    for session in sessions:
        try:
            s = connect(ctx, host, int(port), args.sni, session, request=False)
        except (OSError, ssl.SSLError):
            failed += 1
            continue
        if s.session_reused:
            resumed += 1
        else:
            new += 1
        s.close()
    return {"sessions": len(sessions), "resumed": resumed, "new": new, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.tlsload")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("handshakes", "resume"):
        c = sub.add_parser(name)
        c.add_argument("--target", required=True)
        c.add_argument("--sni", required=True)
        c.add_argument("--cafile", required=True)
        c.add_argument("--version", choices=("1.2", "1.3"), default="1.3")
    h = sub.choices["handshakes"]
    h.add_argument("--key", choices=tuple(CIPHERS), default="ecdsa")
    h.add_argument("--resume", action="store_true")
    h.add_argument("--seconds", type=float, default=10.0)
    h.add_argument("--workers", type=int, default=2)
    sub.choices["resume"].add_argument("--sessions", type=int, default=200)
    args = p.parse_args(argv)
    result = handshakes(args) if args.command == "handshakes" else resume(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
