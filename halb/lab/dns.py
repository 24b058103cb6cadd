"""The lab's cluster DNS: headless Services answered with their pods' addresses.

    python -m halb.lab.dns --records FILE --listen ADDRESS [--ttl 5]

A stand-in for CoreDNS's `kubernetes` plugin, just enough for HAProxy's
`server-template ... resolvers cluster`: A queries for a name in FILE
(JSON: name -> [IPv4 ...], read again when it changes) get every address, AAAA for such a name gets an
empty answer (NOERROR), anything else NXDOMAIN. TTL 5 s like CoreDNS.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
from pathlib import Path

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
NXDOMAIN = 3
FORMERR = 1


def parse_question(msg: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, name, qtype, qclass, end offset) of the first question."""
    if len(msg) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount < 1:
        raise ValueError("no question")
    labels, i = [], 12
    for _ in range(128):  # bounded: a name has at most 127 labels
        if i >= len(msg):
            raise ValueError("truncated name")
        n = msg[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compression in a question")
        labels.append(msg[i : i + n].decode("ascii", errors="replace").lower())
        i += n
    if i + 4 > len(msg):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[i : i + 4])
    return qid, flags, ".".join(labels), qtype, qclass, i + 4


def answer(msg: bytes, records: dict[str, list[str]], ttl: int) -> bytes:
    try:
        qid, flags, name, qtype, qclass, end = parse_question(msg)
    except ValueError:
        qid = struct.unpack("!H", msg[:2])[0] if len(msg) >= 2 else 0
        return struct.pack("!HHHHHH", qid, 0x8000 | FORMERR, 0, 0, 0, 0)
    question = msg[12:end]
    addresses = records.get(name.rstrip("."))
    rd = flags & 0x0100
    if addresses is None or qclass != CLASS_IN:
        return struct.pack("!HHHHHH", qid, 0x8400 | rd | NXDOMAIN, 1, 0, 0, 0) + question
    rrs = b""
    count = 0
    if qtype == TYPE_A:
        for addr in addresses:
            # 0xC00C: a pointer to the name in the question.
            rrs += (
                struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + ipaddress.IPv4Address(addr).packed
            )
            count += 1
    return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, count, 0, 0) + question + rrs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.dns")
    p.add_argument("--records", type=Path, required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--ttl", type=int, default=5)
    args = p.parse_args(argv)
    records: dict[str, list[str]] = {}
    seen: float | None = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.listen, 53))
    while True:
        msg, peer = sock.recvfrom(4096)
        # Endpoints change (`lab apply`): read the records again when they did.
        mtime = args.records.stat().st_mtime
        if mtime != seen:
            records = {k.rstrip(".").lower(): v for k, v in json.loads(args.records.read_text()).items()}
            seen = mtime
        sock.sendto(answer(msg, records, args.ttl), peer)


if __name__ == "__main__":
    sys.exit(main())
