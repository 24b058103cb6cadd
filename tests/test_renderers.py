"""keepalived.conf and haproxy.cfg: content, and validation by the daemons."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import hypothesis
import pytest
from conftest import STACKS, haproxy_check, require_root_tools, settings_of, stack_raw, with_overrides
from hypothesis import strategies as st

from components.haproxy_cfg import (
    StaticBackend,
    StaticServer,
    dns_backends,
    render_haproxy_cfg,
)
from components.keepalived_conf import render_keepalived_conf
from components.settings import Settings, parse_settings
from components.values import auth_pass_readable


def v2_auth_settings(password: str = "s3cret") -> Settings:
    raw = with_overrides(
        stack_raw("lab"), secret=True, vrrp={"version": 2, "advertInterval": 1}, vrrpAuthPass=password
    )
    return parse_settings(raw)


def keepalived_check(netns: str, conf: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "keepalived.conf"
    path.write_text(conf)
    pids = [f"{flag}{tmp / name}" for flag, name in (("-p", "k.pid"), ("-r", "v.pid"), ("-c", "c.pid"))]
    cmd = ["ip", "netns", "exec", netns, "keepalived", "-t", "-l", "-f", str(path), *pids]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


# --- keepalived.conf content --------------------------------------------------


def test_priorities_distinct_and_all_backup_nopreempt() -> None:
    s = settings_of("prod")
    confs = {n: render_keepalived_conf(s, n) for n in s.lb_nodes}
    prios = [re.search(r"^\s+priority (\d+)$", c, re.M) for c in confs.values()]
    values = [int(m.group(1)) for m in prios if m]
    assert len(values) == 2 and len(set(values)) == 2
    for node, conf in confs.items():
        assert f"router_id {node}\n" in conf
        assert "    state BACKUP\n    nopreempt\n" in conf
        assert "enable_script_security" in conf
        assert "vrrp_garp_master_refresh 60" in conf


def test_unicast_peers_are_the_other_lb_hosts() -> None:
    s = settings_of("prod")
    conf = render_keepalived_conf(s, "lb-1")
    assert "unicast_src_ip 10.10.10.11\n    unicast_peer {\n        10.10.10.12\n    }" in conf


def test_multicast_option_drops_unicast() -> None:
    s = parse_settings(with_overrides(stack_raw("lab"), vrrp={"unicast": False}))
    conf = render_keepalived_conf(s, "lb-1")
    assert "unicast" not in conf


def test_vrrp_v3_default_has_no_authentication() -> None:
    conf = render_keepalived_conf(settings_of("lab"), "lb-1")
    assert "    version 3\n" in conf and "advert_int 0.05\n" in conf
    assert "authentication" not in conf and "auth_pass" not in conf


def test_v2_auth_pass_rendered_only_when_set() -> None:
    conf = render_keepalived_conf(v2_auth_settings(), "lb-2", "s3cret")
    assert "auth_type PASS\n        auth_pass s3cret\n" in conf
    assert "    version 2\n" in conf and "advert_int 1\n" in conf
    with pytest.raises(ValueError, match="auth_pass must be given"):
        render_keepalived_conf(v2_auth_settings(), "lb-2")


def test_check_asks_this_nodes_haproxy_on_its_own_port_without_a_shell() -> None:
    s = settings_of("lab")
    conf = render_keepalived_conf(s, "lb-1")
    script = re.search(r'script "([^"]+)"', conf)
    assert script is not None
    argv = script.group(1).split()
    assert argv[0] == "/usr/bin/curl"
    assert argv[-1] == f"http://127.0.0.1:{s.load_balancer.stats_port}/healthz"
    assert not {"|", "grep", "sh", "ss"} & set(argv)


def test_watch_file_tracked_with_weight_zero() -> None:
    conf = render_keepalived_conf(settings_of("lab"), "lb-1")
    assert 'track_file haproxy_down {\n    file "/run/halb/haproxy-down"\n    weight 0\n' in conf
    assert "    track_file {\n        draining\n        haproxy_down\n    }" in conf
    off = parse_settings(with_overrides(stack_raw("lab"), vrrp={"check": {"watch": False}}))
    assert "haproxy_down" not in render_keepalived_conf(off, "lb-1")


def test_the_prestop_drain_file_is_tracked_always() -> None:
    """`draining` = 1 (the pod's preStop) takes the instance out of MASTER."""
    for watch in (True, False):
        s = parse_settings(with_overrides(stack_raw("lab"), vrrp={"check": {"watch": watch}}))
        conf = render_keepalived_conf(s, "lb-2")
        assert 'track_file draining {\n    file "/run/halb/draining"\n    weight 0\n}' in conf
        assert "        draining\n" in conf.split("vrrp_instance", 1)[1]


def test_vip_on_configured_interface() -> None:
    conf = render_keepalived_conf(settings_of("prod"), "lb-2")
    assert "virtual_ipaddress {\n        10.10.10.2/24 dev eth0\n    }" in conf
    assert "interface eth0\n" in conf and "virtual_router_id 1\n" in conf


def test_non_lb_node_is_refused() -> None:
    with pytest.raises(ValueError, match="not a load-balancer host"):
        render_keepalived_conf(settings_of("prod"), "app-1")


# --- haproxy.cfg content --------------------------------------------------------


def test_haproxy_routes_by_host_first_service_default() -> None:
    s = settings_of("prod")
    cfg = render_haproxy_cfg(s, dns_backends(s))
    first = (
        "http-request set-var(txn.be) str({}) if !{{ var(txn.be) -m found }} {{ var(txn.host) -m str {} }}"
    )
    assert first.format("be_shop", "shop.example.com") in cfg
    assert first.format("be_shop", "www.example.com") in cfg
    assert first.format("be_api", "api.example.com") in cfg
    assert "http-request set-var(txn.be) str(be_shop) if !{ var(txn.be) -m found }\n" in cfg
    assert "use_backend be_api if { var(txn.be) -m str be_api }\n" in cfg
    assert "default_backend be_shop\n" in cfg
    assert "bind 0.0.0.0:80\n" in cfg


def test_haproxy_dns_discovery_of_headless_services() -> None:
    s = settings_of("prod")
    cfg = render_haproxy_cfg(s, dns_backends(s))
    assert "resolvers cluster\n    parse-resolv-conf" in cfg
    assert "server-template pod 4 api.web.svc.cluster.local:9000 check resolvers cluster" in cfg
    # 4 slots: 320 bytes of header and question, 16 per A record, never below DNS's 512.
    assert "    accepted_payload_size 512\n" in cfg
    assert "http-check send meth GET uri /ready ver HTTP/1.1 hdr Host api.example.com\n" in cfg


def test_haproxy_metrics_and_health_endpoint() -> None:
    cfg = render_haproxy_cfg(settings_of("prod"), dns_backends(settings_of("prod")))
    # Health and metrics on the node's own address and loopback, never the VIP.
    assert '    bind "${HOST_IP}:8404"\n    bind 127.0.0.1:8404\n' in cfg
    assert "0.0.0.0:8404" not in cfg
    assert "monitor-uri /healthz" in cfg and "monitor fail if { nbsrv(be_halb_drain) lt 1 }" in cfg
    assert "prometheus-exporter if { path /metrics }" in cfg


def test_static_backends_differ_only_in_server_lines() -> None:
    s = settings_of("lab")
    static = {svc.name: StaticBackend((StaticServer("a", "192.0.2.21", svc.port),)) for svc in s.services}
    lab_cfg = render_haproxy_cfg(s, static)
    k8s_cfg = render_haproxy_cfg(s, dns_backends(s))
    assert "server a 192.0.2.21:8080 check" in lab_cfg and "resolvers" not in lab_cfg
    strip = re.compile(
        r"^(resolvers|    (parse-resolv-conf|accepted_payload_size|resolve_retries|timeout re|hold |server))"
        r".*\n",
        re.M,
    )

    def rest(cfg: str) -> str:
        return re.sub(r"\n\n+", "\n", strip.sub("", cfg))

    assert rest(lab_cfg) == rest(k8s_cfg)


def test_missing_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="no backend given for service"):
        render_haproxy_cfg(settings_of("lab"), {})


# --- the daemons themselves judge the configs ----------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("stack", STACKS)
def test_keepalived_accepts_every_rendered_conf(stack: str, netns: str, tmp_path: Path) -> None:
    s = settings_of(stack)
    for node in s.lb_nodes:
        result = keepalived_check(netns, render_keepalived_conf(s, node), tmp_path)
        assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.netns
def test_keepalived_accepts_v2_with_auth(netns: str, tmp_path: Path) -> None:
    result = keepalived_check(netns, render_keepalived_conf(v2_auth_settings(), "lb-1", "s3cret"), tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.netns
def test_keepalived_check_catches_the_seeds_long_auth_pass(netns: str, tmp_path: Path) -> None:
    conf = render_keepalived_conf(v2_auth_settings(), "lb-1", "s3cret")
    broken = conf.replace("auth_pass s3cret", "auth_pass incommsys-vips")
    result = keepalived_check(netns, broken, tmp_path)
    assert result.returncode != 0
    assert "Truncating auth_pass" in result.stderr + result.stdout


@pytest.mark.netns
def test_keepalived_check_catches_a_bad_keyword(netns: str, tmp_path: Path) -> None:
    conf = render_keepalived_conf(settings_of("lab"), "lb-1")
    result = keepalived_check(netns, conf.replace("advert_int 0.05", "advert_int 0.005"), tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("stack", STACKS)
def test_haproxy_accepts_every_rendered_cfg_without_warnings(stack: str, tmp_path: Path) -> None:
    s = settings_of(stack)
    result = haproxy_check(render_haproxy_cfg(s, dns_backends(s)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout
    assert "[WARNING]" not in result.stderr and "[ALERT]" not in result.stderr


def test_haproxy_check_catches_a_broken_cfg(tmp_path: Path) -> None:
    s = settings_of("lab")
    broken = render_haproxy_cfg(s, dns_backends(s)).replace(
        "default_backend be_shop", "default_backend be_nope"
    )
    result = haproxy_check(broken, tmp_path)
    assert result.returncode != 0 and "be_nope" in result.stderr


# --- wildcard hostnames: routed by a real HAProxy -----------------------------------------

WILD_SERVICES = [
    {"name": "shop", "image": "ghcr.io/example/shop:1", "port": 8080, "hostnames": ["shop.lab.invalid"]},
    {"name": "blog", "image": "ghcr.io/example/blog:1", "port": 8081,
     "hostnames": ["*.blog.lab.invalid", "blog.lab.invalid"]},
    {"name": "api", "image": "ghcr.io/example/api:1", "port": 8082,
     "hostnames": ["*.api.lab.invalid", "a.blog.lab.invalid"]},
]  # fmt: skip
# Host header -> the service that must answer (shop is the default backend).
ROUTES = {
    "shop.lab.invalid": "shop",
    "blog.lab.invalid": "blog",
    "x.blog.lab.invalid": "blog",
    "X.Blog.Lab.Invalid:80": "blog",
    "a.blog.lab.invalid": "api",  # an exact name beats a wildcard
    "q.api.lab.invalid": "api",
    "x.y.blog.lab.invalid": "shop",  # a wildcard is one label
    ".blog.lab.invalid": "shop",
    "xblog.lab.invalid": "shop",
    "blog.lab.invalid.evil": "shop",
    "unknown.invalid": "shop",
}


def wild_settings() -> Settings:
    return parse_settings(with_overrides(stack_raw("lab"), services=WILD_SERVICES))


def test_wildcards_after_exact_names_matching_one_label(tmp_path: Path) -> None:
    cfg = render_haproxy_cfg(wild_settings(), dns_backends(wild_settings()))
    result = haproxy_check(cfg, tmp_path)
    assert result.returncode == 0 and "[WARNING]" not in result.stderr, result.stderr
    head = "http-request set-var(txn.be) "
    rules = [line.strip()[len(head) :] for line in cfg.splitlines() if line.strip().startswith(head)]
    unset = "if !{ var(txn.be) -m found }"
    # First match wins: exact names, then wildcards, then the default.
    assert rules == [
        f"str(be_shop) {unset} {{ var(txn.host) -m str shop.lab.invalid }}",
        f"str(be_blog) {unset} {{ var(txn.host) -m str blog.lab.invalid }}",
        f"str(be_api) {unset} {{ var(txn.host) -m str a.blog.lab.invalid }}",
        f"str(be_blog) {unset} {{ var(txn.host) -m reg '^[^.]+[.]blog[.]lab[.]invalid$' }}",
        f"str(be_api) {unset} {{ var(txn.host) -m reg '^[^.]+[.]api[.]lab[.]invalid$' }}",
        f"str(be_shop) {unset}",
    ]


APP = """
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"""


@pytest.mark.netns
def test_real_haproxy_routes_wildcards_by_host(netns: str, tmp_path: Path) -> None:
    require_root_tools("haproxy", "curl")
    s = wild_settings()
    backends = {svc.name: StaticBackend((StaticServer("a", "127.0.0.1", svc.port),)) for svc in s.services}
    (tmp_path / "haproxy.cfg").write_text(render_haproxy_cfg(s, backends))
    (tmp_path / "app.py").write_text(APP)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    in_ns = ["ip", "netns", "exec", netns]
    procs = [
        subprocess.Popen([*in_ns, sys.executable, str(tmp_path / "app.py"), svc.name, str(svc.port)])
        for svc in s.services
    ]
    procs.append(
        subprocess.Popen(
            [*in_ns, "env", "HOST_IP=127.0.0.1", "haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")]
        )
    )
    try:
        answers: dict[str, str] = {}
        deadline = time.monotonic() + 10
        for host in ROUTES:
            while True:
                result = subprocess.run(
                    [*in_ns, "curl", "-s", "--max-time", "1", "-H", f"Host: {host}", "http://127.0.0.1:80/"],
                    capture_output=True, text=True, timeout=5, check=False,
                )  # fmt: skip
                if result.returncode == 0 and result.stdout in ("shop", "blog", "api"):
                    answers[host] = result.stdout
                    break
                assert time.monotonic() < deadline, f"no answer for {host}: {result}"
                time.sleep(0.1)
        assert answers == ROUTES
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


# --- vrrpAuthPass: what the validator accepts is what keepalived reads ------------------------


def v2_no_watch(password: str) -> Settings:
    # No track_file: a real keepalived would create its file (init_file) on the host.
    raw = with_overrides(
        stack_raw("lab"),
        secret=True,
        vrrp={"version": 2, "advertInterval": 1, "check": {"watch": False}},
        vrrpAuthPass=password,
    )
    return parse_settings(raw)


def keepalived_reads(netns: str, conf: str, tmp: Path) -> tuple[int, list[str]]:
    """`keepalived -t` exit code, and the passwords a running keepalived dumps (-d), in order."""
    run_dir = tmp / uuid.uuid4().hex[:8]
    run_dir.mkdir()
    check = keepalived_check(netns, conf, run_dir)
    if check.returncode != 0:
        return check.returncode, []
    want = conf.count("auth_pass ")
    pids = [f"{flag}{run_dir / name}" for flag, name in (("-p", "k.pid"), ("-r", "v.pid"), ("-c", "c.pid"))]
    # Its own mount namespace with a private /run: nothing it writes lands on the host.
    script = 'mount -t tmpfs none /run && exec keepalived -n -l -d -P -f "$@"'
    cmd = [
        "ip",
        "netns",
        "exec",
        netns,
        "unshare",
        "-m",
        "sh",
        "-c",
        script,
        "sh",
        str(run_dir / "keepalived.conf"),
    ]
    proc = subprocess.Popen([*cmd, *pids], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the dump comes within ~0.2 s; keepalived -n runs until stopped
            if "Password = " in line:
                found.append(line.split("Password = ", 1)[1].rstrip("\n"))
                if len(found) == want:
                    break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return check.returncode, found


def instances(passwords: list[str]) -> str:
    """One rendered keepalived.conf per password, their vrrp_instance blocks in one file
    (distinct router ids and VIPs), so one keepalived reads them all."""
    head = ""
    blocks = []
    for i, password in enumerate(passwords):
        conf = render_keepalived_conf(v2_no_watch(password), "lb-1", password)
        head, block = conf.split("vrrp_instance ", 1)
        block = block.replace("VI_51 {", f"VI_{i + 1} {{", 1).replace(
            "virtual_router_id 51", f"virtual_router_id {i + 1}"
        )
        blocks.append("vrrp_instance " + block.replace("192.0.2.10/24", f"192.0.2.{100 + i}/24"))
    return head + "".join(blocks)


AUTH_CHARS = [chr(c) for c in range(0x21, 0x7F)] + list("$${}\\#!\"'~@_")


@pytest.mark.netns
@hypothesis.settings(
    max_examples=6, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
@hypothesis.given(
    passwords=st.lists(
        st.text(alphabet=st.sampled_from(AUTH_CHARS), min_size=1, max_size=8).filter(auth_pass_readable),
        min_size=1,
        max_size=40,
    )
)
@hypothesis.example(passwords=["a\\b", "$1", "$$", "a$", "'", "~x", "@x", "%d", "\\\\x", "ab$-", "12345678"])
def test_every_accepted_auth_pass_is_read_back_exactly(
    passwords: list[str], netns: str, tmp_path: Path
) -> None:
    code, read = keepalived_reads(netns, instances(passwords), tmp_path)
    assert code == 0
    assert read == passwords


REFUSED = ["{a}", "a{b", "a}b", "$_PWD", "${_HASH}", "a#b", 'a"b', "a\\#b", "a!b"]


@pytest.mark.netns
def test_refused_auth_passes_are_misread_by_keepalived(netns: str, tmp_path: Path) -> None:
    for password in REFUSED:
        assert not auth_pass_readable(password)
        conf = render_keepalived_conf(v2_no_watch("ok"), "lb-1", "ok").replace(
            "auth_pass ok", f"auth_pass {password}"
        )
        code, read = keepalived_reads(netns, conf, tmp_path)
        assert code != 0 or read != [password], password
