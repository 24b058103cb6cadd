"""`halb demo`: the lab in one screen, for a newcomer.

Brings the lab stack up, serves requests through the VIP, kills the MASTER
host while a client sends a request every 20 ms, shows the new MASTER and
the measured outage, and tears everything down (also on Ctrl-C or error).
"""

from __future__ import annotations

import time

from halb.lab.faults import inject
from halb.lab.lab import Lab
from halb.lab.measure import outage
from halb.lab.state import locked
from halb.lab.teardown import teardown
from halb.stackfile import load_stack_file, stack_path

PROBE_S = 4.0
FAULT_AT_S = 1.0


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/5] {text}", flush=True)


def _roles(lab: Lab) -> str:
    return "   ".join(f"{n['vrrp_state']} {n['name']}" for n in lab.status()["nodes"] if n["role"] != "apps")


def run_demo(prefix: str) -> int:
    print("rancher-ha-lb demo: the lab stack's edge tier, the images built from images/ and run as")
    print("pods from the manifests the Pulumi program renders (Pulumi.lab.yaml, 192.0.2.0/24), under podman.")
    lab = Lab.create(load_stack_file(stack_path("lab")), "lab", prefix)
    try:
        _step(1, "lab up: the edge pods (HAProxy + keepalived) on 2 load-balancer hosts, 2 apps hosts")
        with locked(prefix, print, "demo"):
            lab.up(lambda line: print(f"    {line}", flush=True))
        print(f"    VIP {lab.plan.vip}   {_roles(lab)}")

        _step(2, "6 requests through the VIP from the client namespace")
        for a in lab.request(6, timeout=1.0, interval=0.05):
            print(f"    {a.ms:5.1f} ms  {a.answer if a.ok else 'FAILED ' + str(a.error)}")

        master = lab.master()
        _step(3, f"crash the MASTER host {master} (daemons SIGKILLed, link down) under a 20 ms probe")
        probe = lab.start_probe(100_000, 0.02, 0.2, PROBE_S)
        try:
            time.sleep(FAULT_AT_S)
            fault_t = time.monotonic()
            inject(lab, "crash", master)
            result = outage(probe.attempts(grace_s=20), fault_t)
        finally:
            probe.stop()
        print(f"    new MASTER: {lab.master()}   {_roles(lab)}")
        print(
            f"    measured outage {result.outage_s * 1000:.0f} ms: {result.failed} of {result.total} "
            "requests failed (the seed's timers: 2.8 s for the same fault, docs/failover.md)"
        )

        _step(4, "requests again, now through the new MASTER")
        for a in lab.request(4, timeout=1.0, interval=0.05):
            print(f"    {a.ms:5.1f} ms  {a.answer if a.ok else 'FAILED ' + str(a.error)}")
    finally:
        _step(5, "lab down")
        with locked(prefix, print, "demo"):
            teardown(prefix, lambda line: print(f"    {line}", flush=True))
    print("\nnext: halb lab up, then lab status / request / fault KIND / handoff / down")
    return 0
