"""The hostile drills (`lab fault rogue-vrrp | forged-handoff | overload`): what
someone off the peer list, or plain load, tries; each returns what it saw.

- rogue-vrrp: the rogue namespace (on the load-balancer segment, not a peer)
  sends priority-255 VRRPv3 adverts to every LB host, from its own address
  (TTL 255) and in a peer's name as if from off the segment (TTL 254, as
  after one router). Goal: the VIP does not move; the edge table counts them.
- forged-handoff: a real `lab handoff` whose steering message is captured on
  the receiving peer; then, from the rogue, a forged message (a peer's
  source, no valid MAC) and that captured message again, 10 s after it was
  sent. Goal: no steering table appears; both are counted.
- overload: the client holds twice maxConn connections to the VIP (half
  slowloris, half keep-alive requests) for OVERLOAD_S. Goal: no VIP move,
  every /healthz answered, no container OOM-killed or restarted, and requests
  answered again once the load stops.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from components.edge_firewall import TABLE
from components.edge_pod import EXPORTER, HAPROXY, KEEPALIVED, STEER_TABLE
from halb.lab.base import LabError, in_ns, run, wait_until
from halb.lab.lab import Lab
from halb.lab.metrics import scrape, value

HOSTILE = ("rogue-vrrp", "forged-handoff", "overload")
REPLAY_AFTER_S = 10.0
OVERLOAD_S = 15.0
HEALTH_EVERY_S = 0.5
# What a caller measures the attack in (the benchmark's probe window); the
# forged-handoff's real handoff, its preparation, stays outside it.
Around = Callable[[], AbstractContextManager[Any]]


@dataclass
class Drill:
    """What a drill did and saw (`lab fault ... --json`, the failover benchmark)."""

    kind: str
    sent: int = 0
    vip_before: list[str] = field(default_factory=list)
    vip_after: list[str] = field(default_factory=list)
    counted: dict[str, float] = field(default_factory=dict)  # the defence's own counts of it
    steering_tables: int = 0
    health_failures: int = 0
    health_checks: int = 0
    restarts: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    recovered: bool = True

    def summary(self) -> str:
        moved = self.vip_before != self.vip_after
        parts = [
            f"{self.kind}: sent {self.sent}",
            f"VIP {'moved' if moved else 'stayed'} ({', '.join(self.vip_after)})",
        ]
        if self.counted:
            parts.append("counted " + ", ".join(f"{k} {v:g}" for k, v in sorted(self.counted.items())))
        if self.kind == "forged-handoff":
            parts.append(f"{self.steering_tables} steering table(s)")
        if self.kind == "overload":
            parts.append(f"/healthz failed {self.health_failures} of {self.health_checks}; "
                         f"{self.restarts} restart(s); answered again: {self.recovered}")  # fmt: skip
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rogue(lab: Lab, *args: str, timeout: float = 30) -> dict[str, Any]:
    ns = lab.plan.rogue_netns
    if ns is None:
        raise LabError("this lab has no rogue namespace; `lab down` and `lab up` again")
    out = run(in_ns(ns, sys.executable, "-m", "halb.lab.rogue", *args), timeout=timeout).stdout
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def firewall_counts(lab: Lab) -> dict[str, int]:
    """Each LB host's edge-table counters, summed by name."""
    total: dict[str, int] = {}
    for n in lab.plan.lb_nodes:
        out = run(in_ns(n.netns, "nft", "-j", "list", "counters", "table", "ip", TABLE), check=False).stdout
        try:
            items = json.loads(out).get("nftables", []) if out else []
        except ValueError:
            items = []
        for i in items:
            if "counter" in i:
                name = i["counter"]["name"]
                total[name] = total.get(name, 0) + int(i["counter"]["packets"])
    return total


def handoff_counts(lab: Lab) -> dict[str, float]:
    """halb_handoff_messages_total by verdict, summed over the LB hosts' exporters."""
    total: dict[str, float] = {}
    for n in lab.plan.lb_nodes:
        samples, _ = scrape(n.netns, lab.plan.settings.vrrp.metrics_port)
        for result in ("accepted", "unauthenticated", "replayed", "stale", "foreign", "malformed"):
            v = value(samples or {}, "halb_handoff_messages_total", result=result)
            total[result] = total.get(result, 0.0) + (v or 0.0)
    return total


def steering_tables(lab: Lab) -> int:
    return sum(
        run(in_ns(n.netns, "nft", "list", "table", "ip", STEER_TABLE), check=False).returncode == 0
        for n in lab.plan.lb_nodes
    )


def rogue_vrrp(lab: Lab, around: Around = nullcontext) -> Drill:
    s, p = lab.plan.settings, lab.plan
    d = Drill("rogue-vrrp", vip_before=lab.vip_holders())
    before = firewall_counts(lab)
    every = [str(n.address) for n in p.lb_nodes]
    common = ["vrrp", "--vrid", str(s.vip.router_id), "--vip", str(s.vip.ip),
              "--count", "40", "--interval", f"{s.vrrp.advert_interval:g}"]  # fmt: skip
    with around():
        d.sent += int(_rogue(lab, *common, "--targets", ",".join(every), "--source", str(p.rogue_address),
                             "--ttl", "255")["sent"])  # fmt: skip
        for peer in every:  # in each peer's name to the others (a host drops its own source itself), TTL 254
            others = ",".join(a for a in every if a != peer)
            d.sent += int(_rogue(lab, *common, "--targets", others, "--source", peer, "--ttl", "254")["sent"])
        time.sleep(1.0)  # a MASTER that obeyed would have left by now (3 adverts and skew)
        d.vip_after = lab.vip_holders()
    after = firewall_counts(lab)
    d.counted = {"vrrp_refused": after.get("vrrp_refused", 0) - before.get("vrrp_refused", 0)}
    return d


def _capture(lab: Lab, node_ns: str, seconds: float) -> subprocess.Popen[str]:
    port = lab.plan.settings.vrrp.handoff.port
    proc = subprocess.Popen(
        in_ns(node_ns, sys.executable, "-m", "halb.lab.rogue", "capture", "--port", str(port),
              "--seconds", f"{seconds:g}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    if '"listening"' not in proc.stdout.readline():
        proc.kill()
        raise LabError("the capture in the load-balancer host did not start")
    return proc


def forged_handoff(lab: Lab, around: Around = nullcontext) -> Drill:
    from halb.lab.handoff import handoff

    s, p = lab.plan.settings, lab.plan
    old = lab.master()
    if old is None:
        raise LabError("no MASTER to hand over from")
    new_ns = [n.netns for n in p.lb_nodes if n.name != old]
    drain = s.vrrp.handoff.drain_seconds
    cap = _capture(lab, new_ns[0], drain + 15)
    handoff(lab, lambda _: None)  # the real one: its messages are what the capture keeps
    cap.kill()
    out, _ = cap.communicate(timeout=10)
    genuine = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if not genuine:
        raise LabError("the real handoff's message was not captured")
    g = genuine[0]
    receiver = str(next(n.address for n in p.lb_nodes if n.netns == new_ns[0]))
    if not wait_until(lambda: steering_tables(Lab.load(p.prefix)) == 0, drain + 10, poll=0.2):
        raise LabError("the real handoff's steering did not end")
    lab = Lab.load(p.prefix)
    d = Drill("forged-handoff", vip_before=lab.vip_holders())
    before = handoff_counts(lab)
    port = str(s.vrrp.handoff.port)
    # Forged: the sender's address (a peer, so the firewall lets it by), the fields right, the MAC not.
    fields = bytes.fromhex(g["payload_hex"]).decode(errors="replace").split()
    forged = " ".join([*fields[:5], "0" * 64]).encode().hex() if len(fields) == 6 else b"x".hex()
    old_format = b"halb-handoff/1 %s 300" % g["source"].encode()  # what the unsigned listener obeyed
    with around():
        for data in (forged, old_format.hex()):
            d.sent += int(_rogue(lab, "udp", "--source", g["source"], "--target", receiver, "--port", port,
                                 "--payload-hex", data)["sent"])  # fmt: skip
        time.sleep(max(0.0, g["at"] + REPLAY_AFTER_S - time.time()))
        d.sent += int(_rogue(lab, "udp", "--source", g["source"], "--target", receiver, "--port", port,
                             "--payload-hex", g["payload_hex"])["sent"])  # fmt: skip
        time.sleep(0.5)
        d.steering_tables = steering_tables(lab)
    # The listener writes its counts at once; the exporter reads them at scrape.
    after = handoff_counts(lab)
    d.counted = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)}
    d.vip_after = lab.vip_holders()
    return d


def _restarts(lab: Lab) -> int:
    total = 0
    for n in lab.plan.lb_nodes:
        for c in (HAPROXY, KEEPALIVED, EXPORTER):
            total += int(lab.pods.status(n.name).get("containers", {}).get(c, {}).get("restarts", 0))
    return total


def overload(lab: Lab, around: Around = nullcontext, seconds: float = OVERLOAD_S) -> Drill:
    s, p = lab.plan.settings, lab.plan
    d = Drill("overload", vip_before=lab.vip_holders())
    restarts = _restarts(lab)
    n = 2 * s.load_balancer.max_conn
    flood = subprocess.Popen(
        # Niced: a real flood comes from other machines; here it shares the lab's CPUs with the
        # hosts, and unniced it starves their keepalived of the CPU its 50 ms adverts need.
        in_ns(p.client_netns, "nice", "-n", "19", sys.executable, "-m", "halb.lab.flood", "--target",
              f"{p.vip}:{s.load_balancer.http_port}", "--connections", str(n), "--seconds", f"{seconds:g}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stop = threading.Event()
    moved: list[list[str]] = []

    def watch() -> None:  # keepalived's own check, on every LB host, while the load lasts
        url = f"http://127.0.0.1:{s.load_balancer.stats_port}/healthz"
        for _ in range(int(seconds / HEALTH_EVERY_S) + 20):
            if stop.is_set():
                return
            for node in p.lb_nodes:
                ok = run(in_ns(node.netns, "curl", "-fsS", "-o", "/dev/null", "--max-time", "0.8", url),
                         check=False).returncode == 0  # fmt: skip
                d.health_checks += 1
                d.health_failures += not ok
            holders = Lab.load(p.prefix).vip_holders()
            if holders != d.vip_before:
                moved.append(holders)
            stop.wait(HEALTH_EVERY_S)

    t = threading.Thread(target=watch, daemon=True)
    with around():
        time.sleep(0.5)
        t.start()
        try:
            out, err = flood.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            flood.kill()
            raise LabError("the flood did not end") from None
        finally:
            stop.set()
            t.join(timeout=10)
    if flood.returncode != 0 or not out.strip():
        raise LabError(f"the flood failed: {err.strip()[-500:]}")
    d.load = json.loads(out.strip().splitlines()[-1])
    d.sent = int(d.load["opened"])
    d.vip_after = moved[0] if moved else lab.vip_holders()
    d.restarts = _restarts(Lab.load(p.prefix)) - restarts
    d.recovered = wait_until(
        lambda: all(r.ok for r in Lab.load(p.prefix).request(5, timeout=1.0)), 15, poll=0.5
    )
    return d


def drill(lab: Lab, kind: str, around: Around = nullcontext) -> Drill:
    drills: dict[str, Callable[[Lab, Around], Drill]] = {
        "rogue-vrrp": rogue_vrrp, "forged-handoff": forged_handoff, "overload": overload,
    }  # fmt: skip
    return drills[kind](lab, around)
