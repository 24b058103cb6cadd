"""Pure renderer: Settings + node name -> that node's keepalived.conf.

Fixes the seed's bugs by construction: distinct priorities (no arbitrary
election), a health check exec'd without a shell that asks this node's
HAProxy on its own port and path (the seed's `ss -ltn | grep 80` never ran,
and would have matched :8080), VRRPv3 by default, and `auth_pass` only with
VRRPv2 and only 1..8 characters (validated in settings).
"""

from __future__ import annotations

from components.edge_pod import DRAIN_FILE, HAPROXY_DOWN_FILE, NOTIFY_FIFO
from components.settings import Settings

CHECK_NAME = "chk_haproxy"
# keepalived's names of the two files it tracks (components/edge_pod.py).
WATCH_NAME = "haproxy_down"
DRAIN_NAME = "draining"
# One fixed binary with arguments: keepalived execs it without a shell.
CURL = "/usr/bin/curl"


def health_url(s: Settings) -> str:
    """HAProxy's own health endpoint on this host (host networking: 127.0.0.1 is the node)."""
    return f"http://127.0.0.1:{s.load_balancer.stats_port}/healthz"


def check_command(s: Settings) -> str:
    # --max-time below the vrrp_script timeout, so curl fails before keepalived kills it.
    max_time = max(0.2, s.vrrp.check.timeout - 0.2)
    return f"{CURL} -fsS -o /dev/null --noproxy * --max-time {max_time:g} {health_url(s)}"


def instance_name(s: Settings) -> str:
    return f"VI_{s.vip.router_id}"


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


# Below the kernel's threaded interrupt handlers (SCHED_FIFO 50), above every normal task.
VRRP_RT_PRIORITY = 40
# keepalived's own RLIMIT_RTTIME for that process, in microseconds: more than
# the hard limit the image's entrypoint sets (200 ms), so keepalived's
# setrlimit fails and it leaves the entrypoint's in place. When keepalived's
# succeeds, 2.2.7 resets the limit to zero on the next reload (an uninitialised
# saved value), and the kernel kills the real-time process at its next tick:
# the lab saw it after nearly every reload, and its respawn dropped the VIP.
VRRP_RLIMIT_RTTIME_US = 400_000


def render_keepalived_conf(s: Settings, node: str, auth_pass: str | None = None) -> str:
    """keepalived.conf for `node`; `auth_pass` is given only when VRRPv2 auth is on."""
    if node not in s.lb_nodes:
        raise ValueError(f"{node!r} is not a load-balancer host (have: {', '.join(s.lb_nodes)})")
    if (auth_pass is None) != (s.vrrp_auth_pass is None):
        raise ValueError("auth_pass must be given exactly when settings.vrrp_auth_pass is set")
    v, chk, iface = s.vrrp, s.vrrp.check, s.vip.interface
    lines = [
        f"# keepalived.conf for {node}, rendered by rancher-ha-lb; do not edit.",
        "global_defs {",
        f"    router_id {node}",
        # The check runs as root (it needs no privilege, but keepalived refuses
        # an unprivileged user that does not exist in a minimal image).
        "    enable_script_security",
        "    script_user root",
        # After script_user: a fifo without an owner takes the default script
        # user, and that lookup ('keepalived_script') fails in a minimal image.
        f"    vrrp_notify_fifo {NOTIFY_FIFO}",
        # A reload re-announces BACKUP/FAULT states (2.2.7: not MASTER's).
        "    fifo_write_vrrp_states_on_reload",
        # keepalived's default umask 0177 would create the fifo root-only 0600;
        # the exporter (uid 65534) must be able to read one keepalived created.
        "    umask 0133",
        # Tell switches and clients quickly and repeatedly who holds the VIP.
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_repeat 3",
        f"    vrrp_garp_master_refresh {v.garp_refresh}",
        "    vrrp_garp_master_refresh_repeat 2",
        # After a split brain heals, the loser advertises once more before it
        # yields, and the winner answers that with GARPs: clients whose ARP
        # cache points at the loser move at once, not at the next refresh.
        "    vrrp_higher_prio_send_advert true",
        "    vrrp_garp_lower_prio_repeat 3",
        # The VRRP process real-time (SCHED_RR, CAP_SYS_NICE): a host whose HAProxy
        # saturates the CPU still sends its 50 ms adverts on time; at normal
        # priority it waited up to 570 ms on the run queue and the VIP moved.
        f"    vrrp_rt_priority {VRRP_RT_PRIORITY}",
        f"    vrrp_rlimit_rttime {VRRP_RLIMIT_RTTIME_US}",
        "}",
        "",
        f"vrrp_script {CHECK_NAME} {{",
        f'    script "{check_command(s)}"',
        f"    interval {chk.interval}",
        f"    timeout {chk.timeout}",
        f"    fall {chk.fall}",
        f"    rise {chk.rise}",
        "}",
        "",
    ]
    lines += [
        f"track_file {DRAIN_NAME} {{",
        f'    file "{DRAIN_FILE}"',
        "    weight 0",
        "}",
        "",
    ]
    if chk.watch:
        lines += [
            # weight 0: any non-zero value puts the instance in FAULT at once
            # (inotify). keepalived only reads it: a missing or unreadable file
            # counts as 0, so the poll decides until the watcher has spoken.
            # (No `init_file`: keepalived would create it root-owned 0600 in the
            # sticky emptyDir, and the watcher, uid 65534, could never replace it.)
            f"track_file {WATCH_NAME} {{",
            f'    file "{HAPROXY_DOWN_FILE}"',
            "    weight 0",
            "}",
            "",
        ]
    lines += [
        f"vrrp_instance {instance_name(s)} {{",
        # All BACKUP + nopreempt: a recovered host does not take the VIP back
        # (one failover, not two); priorities only order a cold start.
        "    state BACKUP",
        "    nopreempt",
        f"    interface {iface}",
        f"    virtual_router_id {s.vip.router_id}",
        f"    priority {s.priority(node)}",
        f"    advert_int {_fmt_seconds(v.advert_interval)}",
        f"    version {v.version}",
    ]
    if v.unicast:
        peers = [str(s.address(n)) for n in s.lb_nodes if n != node]
        lines += [f"    unicast_src_ip {s.address(node)}", "    unicast_peer {"]
        lines += [f"        {p}" for p in peers]
        # An advert from an address not listed above is dropped, not obeyed:
        # VRRPv3 has no authentication (the edge's nft table also filters).
        lines += ["    }", "    check_unicast_src"]
    if auth_pass is not None:
        lines += [
            "    authentication {",
            "        auth_type PASS",
            f"        auth_pass {auth_pass}",
            "    }",
        ]
    lines += ["    track_script {", f"        {CHECK_NAME}", "    }"]
    lines += (
        ["    track_file {", f"        {DRAIN_NAME}"]
        + ([f"        {WATCH_NAME}"] if chk.watch else [])
        + ["    }"]
    )
    lines += [
        "    virtual_ipaddress {",
        f"        {s.vip.address} dev {iface}",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)
