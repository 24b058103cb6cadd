"""A node's VRRP state as its vrrp-exporter reports it: what `lab status` shows.

The exporter in each edge pod is the source a cluster's Prometheus scrapes,
so the lab reads the same: /metrics, fetched from inside the host's network
namespace (the exporter listens on the node's address and 127.0.0.1) with a
short timeout. When it does not answer (the pod is starting, the exporter
is restarting) the caller falls back to keepalived's log and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.keepalived_conf import instance_name
from halb.lab.base import LabError, in_ns, run
from halb.lab.topology import LabPlan

SCRAPE_TIMEOUT_S = 0.5
# keepalived_vrrp_state's values (images/keepalived/vrrp-exporter).
STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT"}

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Exposition text -> {(name, sorted labels): value}; ValueError if it is not one."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The first sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    for (n, have), v in sorted(samples.items()):
        if n == name and want <= set(have):
            return v
    return None


@dataclass(frozen=True)
class VrrpView:
    """One node's VRRP state and where it was read (`lab status --json`)."""

    state: str  # MASTER, BACKUP, FAULT, INIT, STOPPED, DOWN (and STOPPING, UNKNOWN from a log)
    source: str  # "exporter", or why not
    become_master_total: float | None = None
    vip_held: bool | None = None


def view(samples: Samples, plan: LabPlan) -> VrrpView | None:
    """The exporter's answer as a state; None if it lacks the instance's metrics."""
    s = plan.settings
    state = value(samples, "keepalived_vrrp_state", iname=instance_name(s))
    up = value(samples, "keepalived_up")
    if state is None or up is None or int(state) not in STATES:
        return None
    held = value(samples, "halb_vip_held", vip=str(s.vip.ip))
    return VrrpView(
        # The gauge keeps the last state keepalived announced; a SIGKILLed
        # keepalived announces nothing, its FIFO closing is what tells.
        state=STATES[int(state)] if up == 1 else "STOPPED",
        source="exporter",
        become_master_total=value(samples, "keepalived_become_master_total", iname=instance_name(s)),
        vip_held=None if held is None else held == 1,
    )


def scrape(netns: str, port: int, timeout: float = SCRAPE_TIMEOUT_S) -> tuple[Samples | None, str]:
    """(samples, "") or (None, why) for 127.0.0.1:port/metrics inside `netns`."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        result = run(
            in_ns(netns, "curl", "-fsS", "--noproxy", "*", "--max-time", str(timeout), url),
            timeout=timeout + 5,
            check=False,
        )
    except LabError as err:
        return None, str(err)
    if result.returncode != 0:
        why = result.stderr.strip().removeprefix("curl: ").split("\n")[0] or f"curl exit {result.returncode}"
        return None, f"exporter at {url} did not answer: {why}"
    try:
        return parse(result.stdout), ""
    except ValueError as err:
        return None, f"exporter at {url}: not Prometheus text ({err})"


def exporter_view(plan: LabPlan, node: str) -> tuple[VrrpView | None, str]:
    """(view, "") from the node's exporter, or (None, why not)."""
    samples, why = scrape(plan.node(node).netns, plan.settings.vrrp.metrics_port)
    if samples is None:
        return None, why
    v = view(samples, plan)
    if v is None:
        return None, f"exporter has no keepalived_vrrp_state for {instance_name(plan.settings)} yet"
    return v, ""
