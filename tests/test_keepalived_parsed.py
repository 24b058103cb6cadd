"""Each node's keepalived.conf read back into its blocks and held against the settings.

Substring checks let a wrong value through when it is right somewhere else
(every node's `unicast_src_ip` set to the first balancer's address reads
fine in the first node's file). Here every file of every stack, and of
generated settings, is parsed (tests/kaconf.py) and each value is compared
with what the settings say it must be for that node.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from decimal import Decimal
from typing import Any

import pytest
from conftest import ROOT, STACKS, rendered, settings_of, stack_raw, with_overrides
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaconf import Conf, ConfError, Stmt, parse

from components.keepalived import WATCH_HUNG_S, render_all
from components.keepalived_conf import render_keepalived_conf
from components.settings import Settings, parse_settings


def entrypoint_rttime_hard_us() -> int:
    """The hard RLIMIT_RTTIME the keepalived image's entrypoint runs keepalived under."""
    text = (ROOT / "images" / "keepalived" / "entrypoint.sh").read_text()
    (limits,) = re.findall(r"^rttime=(\d+):(\d+)$", text, flags=re.M)
    assert 'exec prlimit --rttime="$rttime" keepalived' in text
    return int(limits[1])


def instance(conf: Conf, s: Settings) -> Stmt:
    (vi,) = conf.all("vrrp_instance")
    assert vi.args == [f"VI_{s.vip.router_id}"]
    return vi


def check_node(s: Settings, node: str, text: str, auth_pass: str | None = None) -> None:
    """Everything in `node`'s keepalived.conf that the settings decide."""
    conf = parse(text)
    chk, v = s.vrrp.check, s.vrrp
    assert [st.keyword for st in conf.top] == (
        ["global_defs", "vrrp_script", "track_file"]
        + (["track_file"] if chk.watch else [])
        + ["vrrp_instance"]
    )

    g = conf.one("global_defs")
    assert g.value("router_id") == node
    assert g.has("enable_script_security") and g.value("script_user") == "root"
    assert g.value("vrrp_notify_fifo") == "/run/halb/vrrp-notify.fifo"
    assert g.has("fifo_write_vrrp_states_on_reload")
    assert g.value("umask") == "0133"  # the exporter (uid 65534) reads the FIFO
    assert int(g.value("vrrp_garp_master_delay")) == 1
    assert int(g.value("vrrp_garp_master_repeat")) == 3
    assert int(g.value("vrrp_garp_master_refresh")) == v.garp_refresh
    assert int(g.value("vrrp_garp_master_refresh_repeat")) == 2
    # Split-brain recovery: the loser adverts once more, the winner answers with GARPs.
    assert g.value("vrrp_higher_prio_send_advert") == "true"
    assert int(g.value("vrrp_garp_lower_prio_repeat")) == 3
    # The VRRP process SCHED_RR (CAP_SYS_NICE): adverts on time on a saturated host.
    assert int(g.value("vrrp_rt_priority")) == 40
    # ... and keepalived never sets its RLIMIT_RTTIME (2.2.7 resets it to 0 on a reload):
    # the entrypoint does, lower, so keepalived's own setrlimit fails.
    assert int(g.value("vrrp_rlimit_rttime")) > entrypoint_rttime_hard_us()

    script = conf.one("vrrp_script", "chk_haproxy")
    argv = shlex.split(script.value("script"))
    assert argv[0] == "/usr/bin/curl" and argv[-1] == f"http://127.0.0.1:{s.load_balancer.stats_port}/healthz"
    assert "-fsS" in argv  # an HTTP error status fails the check
    max_time = float(argv[argv.index("--max-time") + 1])
    # curl gives up before keepalived kills it, and not much sooner: a slow answer is not a dead HAProxy.
    assert chk.timeout - 0.5 <= max_time < chk.timeout
    timers = {k: int(script.value(k)) for k in ("interval", "timeout", "fall", "rise")}
    assert timers == {"interval": chk.interval, "timeout": chk.timeout, "fall": chk.fall, "rise": chk.rise}

    # The preStop handoff's flag: weight 0, so its presence alone means FAULT.
    drain = conf.one("track_file", "draining")
    assert drain.value("file") == "/run/halb/draining" and drain.value("weight") == "0"
    assert not drain.has("init_file")
    if chk.watch:
        tf = conf.one("track_file", "haproxy_down")
        assert tf.value("file") == "/run/halb/haproxy-down" and tf.value("weight") == "0"
        assert not tf.has("init_file")

    vi = instance(conf, s)
    assert vi.value("state") == "BACKUP" and vi.has("nopreempt")
    assert vi.value("interface") == s.vip.interface
    assert int(vi.value("virtual_router_id")) == s.vip.router_id
    assert int(vi.value("priority")) == s.priority(node)
    explicit = s.hosts[node].priority
    if explicit is not None:
        assert int(vi.value("priority")) == explicit
    assert Decimal(vi.value("advert_int")) == Decimal(str(v.advert_interval))
    assert int(vi.value("version")) == v.version

    if v.unicast:
        assert ipaddress.IPv4Address(vi.value("unicast_src_ip")) == s.address(node)
        peers = [ipaddress.IPv4Address(p) for p in vi.one("unicast_peer").items()]
        assert sorted(peers) == sorted(s.address(n) for n in s.lb_nodes if n != node)
        # An advert from anyone not listed is dropped (VRRPv3 has no authentication).
        assert vi.has("check_unicast_src")
    else:
        assert not vi.has("unicast_src_ip") and not vi.has("unicast_peer")
        assert not vi.has("check_unicast_src")

    if auth_pass is None:
        assert not vi.has("authentication")
    else:
        auth = vi.one("authentication")
        assert auth.value("auth_type") == "PASS" and auth.value("auth_pass") == auth_pass

    assert vi.one("track_script").items() == ["chk_haproxy"]
    assert vi.one("track_file").items() == ["draining"] + (["haproxy_down"] if chk.watch else [])
    assert vi.one("virtual_ipaddress").items() == [f"{s.vip.address} dev {s.vip.interface}"]


def check_all(s: Settings, confs: dict[str, str], auth_pass: str | None = None) -> None:
    assert sorted(confs) == sorted(f"{n}.{ext}" for n in s.lb_nodes for ext in ("conf", "nft"))
    for node in s.lb_nodes:
        check_node(s, node, confs[f"{node}.conf"], auth_pass)
    # Across the files: one election, distinct priorities, each node its own address.
    instances = [instance(parse(confs[f"{n}.conf"]), s) for n in s.lb_nodes]
    prios = [int(vi.value("priority")) for vi in instances]
    assert len(set(prios)) == len(prios)
    if s.vrrp.unicast:
        assert len({vi.value("unicast_src_ip") for vi in instances}) == len(instances)


@pytest.mark.parametrize("stack", STACKS)
def test_every_nodes_conf_in_the_clusters_secret_matches_the_settings(stack: str) -> None:
    """What the pods mount: the Secret's data, read back node by node."""
    secret = next(
        r for r in rendered(stack).of_type("kubernetes:core/v1:Secret") if r.name == "edge-keepalived-config"
    )
    check_all(settings_of(stack), secret.inputs["stringData"])


def test_v2_with_auth_pass_and_multicast() -> None:
    raw = with_overrides(
        stack_raw("lab"), secret=True, vrrp={"version": 2, "advertInterval": 3, "unicast": False},
        vrrpAuthPass="s3cr~t",
    )  # fmt: skip
    s = parse_settings(raw)
    check_all(s, render_all(s, "s3cr~t"), "s3cr~t")


def test_the_reader_refuses_what_keepalived_would_misread() -> None:
    with pytest.raises(ConfError):
        parse("vrrp_instance VI_1 {\n    state BACKUP\n")
    with pytest.raises(ConfError):
        parse("}\n")
    conf = parse(
        'global_defs {  # a comment\n    router_id a ! another\n}\nvrrp_script x {\n    script "a b"\n}\n'
    )
    assert conf.one("global_defs").value("router_id") == "a"
    assert conf.one("vrrp_script", "x").value("script") == "a b"


# --- generated settings --------------------------------------------------------------

NET = ipaddress.IPv4Network("198.51.100.0/24")


@st.composite
def edge_settings(draw: Any) -> dict[str, Any]:
    """A valid `hosts`/`vip`/`vrrp` triple: 2-6 balancers, timers within every bound."""
    n = draw(st.integers(2, 6))
    host_ids = draw(st.lists(st.integers(1, 250), min_size=n + 1, max_size=n + 1, unique=True))
    vip_id, lb_ids = host_ids[0], host_ids[1:]
    names = draw(
        st.lists(st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z"), min_size=n, max_size=n, unique=True)
    )
    explicit = draw(st.booleans())
    prios = draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True)) if explicit else None
    hosts: dict[str, Any] = {}
    for i, (name, hid) in enumerate(zip(names, lb_ids, strict=True)):
        host: dict[str, Any] = {"role": "load-balancer", "address": str(NET[hid])}
        if prios is not None:
            host["priority"] = prios[i]
        hosts[name] = host
    hosts["apps-only"] = {"role": "apps"}
    version = draw(st.sampled_from([2, 3]))
    if version == 2:
        advert: float = draw(st.integers(1, 255))
    else:
        advert = draw(st.integers(1, 4095)) / 100
    interval = draw(st.integers(1, 3600))
    vrrp = {
        "version": version,
        "advertInterval": advert,
        "unicast": draw(st.booleans()),
        "garpRefresh": draw(st.integers(0, 86400)),
        "check": {
            "interval": interval,
            "timeout": draw(st.integers(1, interval)),
            "fall": draw(st.integers(1, 255)),
            "rise": draw(st.integers(1, 255)),
            "watch": draw(st.booleans()),
        },
    }
    vip = {
        "address": f"{NET[vip_id]}/24",
        # Names Linux refuses or that cannot carry a VIP are the settings' to refuse (tested there).
        "interface": draw(
            st.from_regex(r"\A[a-z][a-z0-9]{0,7}\Z").filter(lambda i: i not in ("lo", "all", "default"))
        ),
        "routerId": draw(st.integers(1, 255)),
    }
    return {"hosts": hosts, "vip": vip, "vrrp": vrrp}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_settings(), st.integers(1, 65535).filter(lambda p: p not in (80, 443, 9165, 9166)))
def test_generated_settings_render_each_node_its_own_conf(edge: dict[str, Any], stats_port: int) -> None:
    lb = {"statsPort": stats_port}
    s = parse_settings(with_overrides(stack_raw("lab"), loadBalancer=lb, **edge))
    check_all(s, render_all(s, None))


def test_a_render_for_one_node_is_not_anothers() -> None:
    s = settings_of("lab")
    one, two = (render_keepalived_conf(s, n) for n in s.lb_nodes)
    with pytest.raises(AssertionError):
        check_node(s, s.lb_nodes[0], two)
    check_node(s, s.lb_nodes[0], one)


@pytest.mark.parametrize("stack", STACKS)
def test_one_slow_answer_is_busy_not_a_failover(stack: str) -> None:
    """The poll calls HAProxy dead no sooner than haproxy-watch calls it hung: a
    saturated HAProxy answering /healthz slowly once must not move the VIP (with
    fall 1 the overload drill moved it: curl's 0.8 s ran out once, FAULT)."""
    s = settings_of(stack)
    conf = parse(render_keepalived_conf(s, s.lb_nodes[0], None if s.vrrp_auth_pass is None else "x"))
    script = conf.one("vrrp_script")
    fall, interval = int(script.value("fall")), int(script.value("interval"))
    assert fall >= 2 and fall * interval >= WATCH_HUNG_S
    watch = rendered_watch_command(stack)
    assert watch[watch.index("--timeout") + 1] == f"{WATCH_HUNG_S:g}"


def rendered_watch_command(stack: str) -> list[str]:
    from halb.render import manifests

    edge = next(d for d in manifests(rendered(stack)) if d["kind"] == "DaemonSet")
    containers = {c["name"]: c for c in edge["spec"]["template"]["spec"]["containers"]}
    command: list[str] = containers["haproxy-watch"]["command"]
    return command
