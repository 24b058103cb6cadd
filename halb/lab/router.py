"""The lab's upstream router for a `bgp` stack: FRR between the client and the hosts.

A namespace of its own (`~router`): one leg on the hosts' segment at the
stack's one peer address, one to the client on a TEST-NET of its own. It
forwards in that namespace only, hashes flows over its ECMP next hops by
their L4 ports (`fib_multipath_hash_policy=1`), and peers with every
load-balancer host with BFD at the stack's timers. It runs the project's FRR
image (images/frr, the daemons alone: it is the lab's router, not a product
part) as a podman container, journalled like the pods' containers; the
router's side is what docs/bgp.md documents for a real FRR upstream.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from components.frr import CAPABILITIES as FRR_CAPABILITIES  # FRR's own demand, as in the edge pod
from halb.lab.base import LabError, ip, wait_until
from halb.lab.journal import Journal
from halb.lab.podman import podman
from halb.lab.state import ROUTER_HASHES
from halb.lab.topology import LabPlan

BFD_PROFILE = "lab"
# Enough for every load-balancer host a stack may have in the lab.
MAX_PATHS = 16
START_S = 30.0
DAEMONS = ("zebra", "bgpd", "bfdd")
# The resilient group: the table its rule sends the VIP to, its buckets (enough
# that three hosts' shares differ by under 1%), and how long a bucket must be idle
# before a joining host may take it (longer than any gap in a live flow's packets).
RESILIENT_TABLE = "100"
RESILIENT_BUCKETS = 128
RESILIENT_IDLE_S = 60


def render_router_conf(plan: LabPlan) -> str:
    """frr.conf of the lab's router: every load-balancer host a neighbour, ECMP over them."""
    s = plan.settings
    assert s.bgp is not None and plan.router_address is not None
    peer = s.bgp.peers[0]
    password = s.bgp.passwords.get(str(peer.address))
    lines = [
        "frr defaults datacenter",
        "hostname lab-router",
        "log stdout informational",
        "!",
        "bfd",
        f" profile {BFD_PROFILE}",
        f"  transmit-interval {s.bgp.bfd.interval}",
        f"  receive-interval {s.bgp.bfd.interval}",
        f"  detect-multiplier {s.bgp.bfd.multiplier}",
        " exit",
        "exit",
        "!",
        f"router bgp {peer.asn}",
        f" bgp router-id {plan.router_address}",
        " no bgp ebgp-requires-policy",
        # The hosts share one ASN; with several upstream ASNs this lets them be one multipath set.
        " bgp bestpath as-path multipath-relax",
    ]
    for n in plan.lb_nodes:
        lines.append(f" neighbor {n.address} remote-as {s.bgp.asn}")
        if password is not None:
            lines.append(f" neighbor {n.address} password {password}")
        lines += [f" neighbor {n.address} bfd", f" neighbor {n.address} bfd profile {BFD_PROFILE}"]
    lines += [" address-family ipv4 unicast", f"  maximum-paths {MAX_PATHS}"]
    lines += [f"  neighbor {n.address} activate" for n in plan.lb_nodes]
    lines += [" exit-address-family", "exit", ""]
    return "\n".join(lines)


def container_name(plan: LabPlan) -> str:
    return f"{plan.prefix}-{plan.lab_id}-router"


def start(
    plan: LabPlan, image: str, directory: Path, journal: Journal, hashing: str = ROUTER_HASHES[0]
) -> None:
    """The router's FRR, up with its config; journalled before it is made. With `resilient`
    hashing its main process is the mirror into a resilient group (its death stops the
    container), else a sleep."""
    assert plan.router_netns is not None
    conf_dir = directory / "router"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "frr.conf"
    conf.write_text(render_router_conf(plan))
    conf.chmod(0o600)  # it may hold the peers' password
    starts = "; ".join(
        f"/usr/lib/frr/{d} -d -u root -g root -P 0 -f /dev/null --log stdout -i /run/frr/{d}.pid"
        for d in DAEMONS
    )
    main = "sleep infinity"
    if hashing == "resilient":
        shutil.copy(Path(__file__).with_name("resilient.py"), conf_dir / "resilient.py")
        hops = " ".join(str(n.address) for n in plan.lb_nodes)
        main = (f"python3 -u /lab/resilient.py {plan.vip} {RESILIENT_TABLE} {RESILIENT_BUCKETS} "
                f"{RESILIENT_IDLE_S} {hops}")  # fmt: skip
    script = (
        "cp /lab/frr.conf /etc/frr/frr.conf && echo 'service integrated-vtysh-config' > /etc/frr/vtysh.conf"
        f" && {starts} && vtysh -b && exec {main}"
    )
    name = container_name(plan)
    journal.record("container", name=name)
    podman(
        "run", "-d", "--name", name, "--network", f"ns:/run/netns/{plan.router_netns}",
        "--cap-drop", "ALL", "--cap-add", ",".join(FRR_CAPABILITIES), "--read-only",
        "--tmpfs", "/run/frr:notmpcopyup", "--tmpfs", "/etc/frr:notmpcopyup,mode=0777",
        "-v", f"{conf_dir}:/lab:ro", "--entrypoint", "sh", image, "-c", script,
    )  # fmt: skip
    if not wait_until(lambda: vtysh(plan, "show bgp summary").returncode == 0, START_S, poll=0.2):
        raise LabError(f"the lab's router did not start in {START_S:g} s:\n{logs(plan)[-2000:]}")


def vtysh(plan: LabPlan, *commands: str) -> subprocess.CompletedProcess[str]:
    args = ["exec", container_name(plan), "vtysh"]
    for c in commands:
        args += ["-c", c]
    return podman(*args, check=False)


def logs(plan: LabPlan) -> str:
    done = podman("logs", container_name(plan), check=False)
    return done.stdout + done.stderr


def next_hops(plan: LabPlan) -> list[str]:
    """The VIP's next hops in the router's FIB, as the client's packets meet it: the
    resilient group's table while it holds the route (its rule comes first), else main."""
    assert plan.router_netns is not None
    out = ""
    for table in (RESILIENT_TABLE, "main"):
        out = ip("-n", plan.router_netns, "route", "show", "table", table, f"{plan.vip}/32",
                 check=False).stdout  # fmt: skip
        if out.strip():
            break
    return sorted(set(re.findall(r"via (\d+\.\d+\.\d+\.\d+)", out)))


def hop_nodes(plan: LabPlan) -> list[str]:
    """The load-balancer hosts the router sends the VIP's traffic to."""
    by_address = {str(n.address): n.name for n in plan.lb_nodes}
    return sorted(by_address[h] for h in next_hops(plan) if h in by_address)
