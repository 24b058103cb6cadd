"""`lab apply`, `lab drain`, `lab uncordon`: changes to a running lab, the way
Kubernetes makes them.

apply renders the new stack and changes what a `pulumi up` would change:
- Secrets and ConfigMaps are updated; each pod's kubelet brings its volumes
  up to date in place after its sync delay (HALB_LAB_SYNC_S, halb/lab/pods.py)
  and the pod's own watchers reload HAProxy and keepalived: nothing restarts;
- a DaemonSet whose pod template changed (an image, a port, the security
  context) has its pods replaced, `maxUnavailable` nodes at a time: each old
  pod is deleted as the API deletes one (preStop hooks: the VIP handed over
  first; stop signal; grace period), the new one started and awaited ready
  before the next node;
- the apps (Deployments: the lab's stand-in replicas and the cluster-DNS
  records of their headless Services) follow the new services.
Bad new settings exit 2 and leave the running lab untouched. The lab's hosts,
VIP and interface cannot change under a running lab: `lab down` and `lab up`.

drain: `kubectl drain NODE --ignore-daemonsets` leaves DaemonSet pods where
they are; a node that then goes down for maintenance (or a NoExecute taint)
has its edge pod evicted: deleted gracefully, its preStop handing the VIP
over. `lab drain` does that and keeps the pod off until `lab uncordon`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.problems import InputError
from components.settings import RawConfig, parse_settings
from halb.lab.base import LabError, LabInputError, Out, ip, wait_until, write_text_atomic
from halb.lab.faults import lab_images, lb_host
from halb.lab.journal import same_process
from halb.lab.lab import Lab
from halb.lab.limits import nofile_for
from halb.lab.minted import mint_all
from halb.lab.pods import sync_delay_s
from halb.lab.topology import app_command, plan_lab

READY_S = 60.0


def _refuse_topology_change(old: Lab, new_plan: Any) -> None:
    before = {(n.name, n.role, n.address) for n in old.plan.nodes}
    after = {(n.name, n.role, n.address) for n in new_plan.nodes}
    problems = []
    if before != after:
        problems.append(
            "rancher-ha-lb:hosts: the running lab's hosts cannot change; `lab down`, then `lab up`"
        )
    if (old.plan.vip, old.plan.prefixlen, old.plan.interface) != (
        new_plan.vip,
        new_plan.prefixlen,
        new_plan.interface,
    ):
        problems.append(
            "rancher-ha-lb:vip: the running lab's VIP and interface cannot change; `lab down`, then `lab up`"
        )
    if problems:
        raise LabInputError("\n".join(problems))


def pod_ready(lab: Lab, node: str) -> bool:
    """Every container running and ready, and the host in the tier again: MASTER or BACKUP,
    or (bgp) announcing the VIP."""
    cs = lab.pods.status(node).get("containers", {})
    in_tier = lab.bgp_state(node).get("announced") is True if lab.plan.bgp else (
        lab.vrrp_state(node) in ("MASTER", "BACKUP"))  # fmt: skip
    return bool(cs) and all(c.get("state") == "running" and c.get("ready") for c in cs.values()) and in_tier


def _max_unavailable(doc: dict[str, Any]) -> int:
    ru = doc.get("spec", {}).get("updateStrategy", {}).get("rollingUpdate", {})
    value = ru.get("maxUnavailable", 1)
    return value if isinstance(value, int) and value > 0 else 1


def _replace_pods(
    lab: Lab, nodes: list[str], images: dict[str, str], batch: int, hooks: bool, out: Out
) -> None:
    for i in range(0, len(nodes), batch):
        group = nodes[i : i + batch]
        for node in group:
            out(f"{node}: replacing the edge pod{'' if hooks else ' (no preStop hooks: baseline)'}")
            lab.pods.delete(node, hooks=hooks)
            lab.pods.start(node, images, lambda _: None)
        for node in group:
            if not wait_until(lambda n=node: pod_ready(lab, n), READY_S, poll=0.2):  # type: ignore[misc]
                raise LabError(f"{node}: the new pod was not ready after {READY_S:g} s\n" + lab.log_tails())
            out(f"{node}: new pod ready")


def _sync_apps(lab: Lab, new: Lab) -> list[str]:
    """The Deployments' replicas and the DNS records, as the new stack wants them."""
    # A replica whose command changes (tcpPort-only, proxyProtocol) is replaced, as its pod would be.
    old = {(r.service, r.index, r.node, r.address, r.port, " ".join(app_command(lab.plan.settings, r, "")))
           for r in lab.plan.replicas}  # fmt: skip
    want = {(r.service, r.index, r.node, r.address, r.port, " ".join(app_command(new.plan.settings, r, "")))
            for r in new.plan.replicas}  # fmt: skip
    said = []
    for service, index, node, address, _, _ in sorted(old - want):
        name = f"{node}.app-{service}-{index}"
        for e in lab.journal.entries("supervisor"):
            if e.get("name") == name and same_process(int(e["pid"]), e.get("start")):
                os.kill(int(e["pid"]), signal.SIGTERM)
        ip("-n", lab.plan.node(node).netns, "addr", "del", f"{address}/{lab.plan.prefixlen}",
           "dev", lab.plan.interface, check=False)  # fmt: skip
        said.append(f"stopped {service} replica {index}")
    for service, index, node, address, _, _ in sorted(want - old):
        ip("-n", lab.plan.node(node).netns, "addr", "add", f"{address}/{lab.plan.prefixlen}",
           "dev", lab.plan.interface)  # fmt: skip
        (r,) = [r for r in new.plan.replicas if (r.service, r.index) == (service, index)]
        new._spawn(new.plan.node(node).netns, f"{node}.app-{service}-{index}",
                   app_command(new.plan.settings, r, sys.executable))  # fmt: skip
        said.append(f"started {service} replica {index} on {node}")
    write_text_atomic(lab.dir / "dns-records.json", json.dumps(new.plan.dns_records(), indent=1))
    return said


def apply(
    lab: Lab,
    raw: RawConfig,
    stack: str,
    out: Out,
    baseline: bool = False,
    written: Callable[[], None] = lambda: None,
) -> str:
    """Bring the running lab to `raw`'s stack; returns what was done.

    `written` is called when the new objects are in place: the moment a
    cluster's API server would have them, from which its kubelets sync."""
    try:
        new_plan = plan_lab(parse_settings(raw), lab.plan.prefix, lab.plan.lab_id)
    except InputError as err:
        raise LabInputError(err.problems) from None
    _refuse_topology_change(lab, new_plan)
    nofile_for(new_plan.settings)
    sync_s = sync_delay_s()
    from halb.render import render_files  # imports Pulumi

    with tempfile.TemporaryDirectory() as tmp:
        files = render_files(raw, stack)
        for rel, text in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(text)
        # All checks passed: from here the lab changes.
        lab.state.config, lab.state.secret_keys, lab.state.stack = (
            dict(raw.values),
            sorted(raw.secret_keys),
            stack,
        )
        lab.save()
        for rel, text in files.items():
            path = lab.dir / "render" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    new = Lab.load(lab.plan.prefix)
    issued = new.ca.issue_all(new.plan.settings)  # cert-manager's stand-in, for new TLS services
    minted = mint_all(new.dir, new.pods.manifests())  # pulumi_random's stand-in, for new minted Secrets
    said = _sync_apps(lab, new) + ([f"issued {', '.join(issued)}"] if issued else [])
    said += [f"minted {', '.join(minted)}"] if minted else []
    specs = new.pods.specs()
    images = new._images(out, {c.image for _, s in specs for c in s.containers}) if specs else lab_images(lab)
    live = [n.name for n in new.plan.lb_nodes if n.name not in new.state.crashed + new.state.drained]
    replace: list[str] = []
    in_place: list[str] = []
    for node in live:
        template = new.pods.running_template(node)
        wanted = next((doc["spec"]["template"] for doc, _ in new.pods.scheduled(node)), None)
        (replace if baseline or template != wanted else in_place).append(node)
    written()
    for node in in_place:
        new.pods.update_objects(node)
    if in_place:
        out(f"{', '.join(in_place)}: Secrets and ConfigMaps updated; the kubelets sync them in {sync_s:g} s")
        time.sleep(sync_s + 0.5)
        said.append(f"updated in place on {', '.join(in_place)} (volumes synced after {sync_s:g} s)")
    if replace:
        batch = min(_max_unavailable(doc) for doc in new.pods.daemonsets())
        _replace_pods(new, replace, images, batch, hooks=not baseline, out=out)
        said.append(f"replaced the pods on {', '.join(replace)}, {batch} node at a time")
    return "applied: " + ("; ".join(said) or "nothing changed")


def renew(lab: Lab, service: str, out: Out) -> str:
    """A TLS service's certificates issued again (new keys, new serials), as
    cert-manager renews them: the Secrets change, the pods' volumes follow."""
    names = lab.ca.renew(lab.plan.settings, service)
    live = [n.name for n in lab.plan.lb_nodes if n.name not in lab.state.crashed + lab.state.drained]
    for node in live:
        lab.pods.update_objects(node)
    out(f"{', '.join(names)}: issued again; the kubelets sync them in {sync_delay_s():g} s")
    return f"renewed {service}: {', '.join(names)}"


def drain(lab: Lab, node: str, out: Out, hooks: bool = True) -> str:
    """`hooks=False`: evicted without its preStop hooks (the changes benchmark's baseline)."""
    n = _lb_node(lab, node)
    if n in lab.state.drained:
        return f"{n} is drained already"
    lab.state.drained.append(n)
    lab.save()
    how = "preStop: the VIP is handed over first" if hooks else "no preStop hooks: baseline"
    out(f"{n}: cordoned; evicting its edge pod ({how})")
    lab.pods.delete(n, hooks=hooks)
    return f"drained {n}: no edge pod runs there until `lab uncordon {n}`"


def uncordon(lab: Lab, node: str, out: Out) -> str:
    n = _lb_node(lab, node)
    if n not in lab.state.drained:
        return f"{n} is not drained"
    lab.pods.start(n, lab_images(lab), out)
    lab.state.drained.remove(n)
    lab.save()
    if not wait_until(lambda: pod_ready(lab, n), READY_S, poll=0.2):
        raise LabError(f"{n}: its pod was not ready after {READY_S:g} s\n" + lab.log_tails())
    return f"uncordoned {n}: its edge pod runs again" + ("" if lab.plan.bgp else " (BACKUP: nopreempt)")


def _lb_node(lab: Lab, node: str) -> str:
    n = lb_host(lab, node)
    if n in lab.state.crashed:
        raise LabError(f"{node} is crashed; `lab fault restore --node {node}` first")
    return n
