"""The open-file limit the lab's containers get, and whether this machine allows it.

A cluster's container runtime gives containers a high RLIMIT_NOFILE
(containerd: 1048576 on common distributions), and HAProxy, started as root,
raises its soft limit to what `maxconn` needs (about 2 per connection) and
refuses to start when it cannot. podman here starts from the repo's
containers.conf (20000, this machine's hard limit). The lab asks for what the
stack needs when that is more; raising a hard limit needs CAP_SYS_RESOURCE,
which some machines (this one) withhold even from root: then the stack cannot
run in the lab, and `lab up` says so before making anything.
"""

from __future__ import annotations

import resource
from pathlib import Path

from components.settings import Settings
from halb.lab.base import LabInputError

CONTAINERS_CONF_NOFILE = 20000
CAP_SYS_RESOURCE = 24
# HAProxy 2.6 wants 2 per connection plus a few of its own (40017 for 20000).
HAPROXY_EXTRA_FDS = 100


def haproxy_needs(s: Settings) -> int:
    return 2 * s.load_balancer.max_conn + HAPROXY_EXTRA_FDS


def can_raise_hard_limit() -> bool:
    status = Path("/proc/self/status").read_text()
    eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(eff.split()[1], 16) >> CAP_SYS_RESOURCE & 1)


def nofile_for(s: Settings) -> int | None:
    """The limit to run the pods with (None: the runtime's default suffices)."""
    need = haproxy_needs(s)
    if need <= CONTAINERS_CONF_NOFILE:
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    if (hard == resource.RLIM_INFINITY or need <= hard) or (can_raise_hard_limit() and need <= nr_open):
        return need
    fits = (min(hard, CONTAINERS_CONF_NOFILE) - HAPROXY_EXTRA_FDS) // 2
    raise LabInputError(
        f"rancher-ha-lb:loadBalancer.maxConn: {s.load_balancer.max_conn} needs {need} open files for "
        f"HAProxy; this machine allows {hard} and withholds CAP_SYS_RESOURCE to raise it, so HAProxy "
        f"would refuse to start (a cluster's runtime gives 1048576). For the lab, use maxConn <= {fits} "
        "(Pulumi.lab.yaml does)"
    )
