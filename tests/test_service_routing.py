"""Issue 21's per-service keys: a stack using every one renders and passes
`haproxy -c`; bad values are one line naming the key; a real HAProxy routes,
refuses and sticks the way docs/settings.md says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import haproxy_check, lab_value, require_root_tools, stack_raw, with_overrides

from components.haproxy_cfg import StaticBackend, StaticServer, dns_backends, render_haproxy_cfg
from components.settings import Settings, SettingsError, parse_settings

P = "rancher-ha-lb:"
IMG = "ghcr.io/example/{}:1"

# Every issue-21 key at least once; addresses are the netns test's loopback ones.
EVERY_KEY: list[dict[str, Any]] = [
    {"name": "shop", "image": IMG.format("shop"), "port": 8080, "healthPath": "/healthz", "sticky": True,
     "hostnames": ["shop.lab.invalid", "*.shop.lab.invalid"],
     "timeouts": {"client": "1m", "server": "2m", "tunnel": "2h"},
     "healthCheck": {"statuses": "200,204", "livenessPath": "/live", "startupPath": "/start",
                     "startupSeconds": 60},
     "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": False},
     "tmpSizeLimit": "128Mi"},
    {"name": "api", "image": IMG.format("api"), "port": 8081, "hostnames": ["shop.lab.invalid"],
     "paths": ["/api"], "allowFrom": ["127.0.0.2/32"]},
    {"name": "apiv2", "image": IMG.format("apiv2"), "port": 8082, "hostnames": ["shop.lab.invalid"],
     "paths": ["/api/v2"], "proxyProtocol": True},
    {"name": "files", "image": IMG.format("files"), "port": 8083, "paths": ["/static", "/api/files"]},
    {"name": "db", "image": IMG.format("db"), "port": 15432, "tcpPort": 5432, "allowFrom": ["127.0.0.2/32"],
     "timeouts": {"tunnel": "10m"}},
]  # fmt: skip


def every_key() -> Settings:
    return parse_settings(with_overrides(stack_raw("lab"), services=EVERY_KEY))


def test_a_stack_using_every_key_passes_haproxy_check(tmp_path: Path) -> None:
    s = every_key()
    cfg = render_haproxy_cfg(s, dns_backends(s))
    result = haproxy_check(cfg, tmp_path)
    assert result.returncode == 0 and "[WARNING]" not in result.stderr, result.stderr
    # Reloads keep websockets as long as the longest tunnel lets them idle.
    assert "    hard-stop-after 7200s\n" in cfg
    assert "    timeout tunnel 2h\n" in cfg and "    timeout tunnel 10m\n" in cfg
    assert "frontend tcp_db\n    mode tcp\n" in cfg and "    bind 0.0.0.0:5432\n" in cfg
    assert "    tcp-request connection reject unless { src 127.0.0.2/32 }\n" in cfg
    assert (
        "    http-request deny deny_status 403 if { var(txn.be) -m str be_api } !{ src 127.0.0.2/32 }\n"
        in cfg
    )
    assert " check send-proxy-v2 check-send-proxy " in cfg
    assert "    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host shop.lab.invalid\n" in cfg
    assert "    http-check expect status 200,204\n" in cfg
    assert '    cookie halb_shop insert indirect nocache dynamic httponly attr "SameSite=Lax"\n' in cfg


def test_sticky_refuses_to_start_without_its_key(tmp_path: Path) -> None:
    require_root_tools("haproxy")
    s = every_key()
    path = tmp_path / "h.cfg"
    path.write_text(render_haproxy_cfg(s, {svc.name: StaticBackend(()) for svc in s.services}))
    env = {k: v for k, v in os.environ.items() if k != "HALB_COOKIE_KEY"}
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False,
        env={**env, "HOST_IP": "127.0.0.1"},
    )  # fmt: skip
    assert result.returncode != 0 and "HALB_COOKIE_KEY" in result.stderr, result.stderr


BAD: list[tuple[dict[str, Any], str]] = [
    ({"paths": ["api"]}, "services[1].paths[0]: 'api' is not a path prefix (/, then segments of"),
    ({"paths": ["/api/../x"]}, "services[1].paths[0]: '/api/../x' is not a path prefix"),
    ({"paths": ["/api", "/api"]}, "services[1].paths: ['/api', '/api'] names a path twice"),
    ({"tcpPort": 80}, f"services[1].tcpPort: 80 is also {P}loadBalancer.httpPort; pick a free port"),
    ({"tcpPort": 0}, "services[1].tcpPort: 0 is not in 1..65535"),
    ({"tcpPort": 5432, "hostnames": [], "sticky": True},
     "services[1].sticky: cookie stickiness needs HTTP; the service is TCP-only"),
    ({"allowFrom": []},
     "services[1].allowFrom: empty would refuse every client; omit allowFrom to admit all"),
    ({"allowFrom": ["10.0.0.1/8"]},
     "services[1].allowFrom[0]: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    ({"allowFrom": ["office"]},
     "services[1].allowFrom[0]: 'office' is not a CIDR (e.g. 203.0.113.0/24, 2001:db8::/32)"),
    ({"timeouts": {"tunnel": "1"}},
     "services[1].timeouts.tunnel: '1' is not an HAProxy time (a whole number and a unit"),
    ({"timeouts": {"tunnel": "2d"}}, "services[1].timeouts.tunnel: '2d' is not in 1s..24h"),
    ({"timeouts": {"connect": "0ms"}}, "services[1].timeouts.connect: '0ms' is not in 1ms..1m"),
    ({"timeouts": {"idle": "1s"}},
     "services[1].timeouts.idle: unknown key; expected one of: client, connect, server, tunnel"),
    ({"sticky": "yes"}, "services[1].sticky: 'yes' is not true or false (write true)"),
    ({"proxyProtocol": 1}, "services[1].proxyProtocol: 1 is not true or false"),
    ({"healthCheck": {"statuses": "200-99"}},
     "services[1].healthCheck.statuses: '200-99' is not a list of HTTP statuses"),
    ({"healthCheck": {"path": "/x"}},
     "services[1].healthCheck.path: '/x' differs from healthPath '/healthz'; set one of them"),
    ({"healthCheck": {"startupSeconds": 1}}, "services[1].healthCheck.startupSeconds: 1 is not in 5..3600"),
    ({"healthCheck": {"livenessPath": "live"}},
     "services[1].healthCheck.livenessPath: 'live' is not a URL path"),
    ({"securityContext": {"runAsUser": 0}},
     "services[1].securityContext.runAsUser: 0 is root; app pods run as non-root"),
    ({"securityContext": {"readOnlyRootFilesystem": "no"}},
     "services[1].securityContext.readOnlyRootFilesystem: 'no' is not true or false (write false)"),
    ({"tmpSizeLimit": "64"}, "services[1].tmpSizeLimit: '64' is not in 1Mi..16Gi (the pod's writable /tmp"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"), BAD, ids=[m.split(":")[0] + " " + m.split(": ")[1][:20] for _, m in BAD]
)
def test_bad_values_are_one_line_naming_the_key(change: dict[str, Any], message: str) -> None:
    services = [EVERY_KEY[0], {**lab_value("services")[1], **change}]
    with pytest.raises(SettingsError) as err:
        parse_settings(with_overrides(stack_raw("lab"), services=services))
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(P + message), err.value.problems


# --- a real HAProxy, in a namespace of the test's own ------------------------------

APP = """
import http.server, socket, sys, threading
name, addr, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "tcp":
    s = socket.create_server((addr, port))
    def serve(c):
        with c:
            c.sendall(f"hello {name}\\n".encode())
            while data := c.recv(4096):
                c.sendall(data)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
if mode == "proxy":
    # PROXY v2 before the request (send-proxy-v2, also on checks): read and drop its 16 + len bytes.
    class S(http.server.ThreadingHTTPServer):
        def get_request(self):
            c, a = self.socket.accept()
            head = c.recv(16, socket.MSG_WAITALL)
            assert head[:12] == b"\\r\\n\\r\\n\\x00\\r\\nQUIT\\n", head
            c.recv(int.from_bytes(head[14:16], "big"), socket.MSG_WAITALL)
            return c, a
else:
    S = http.server.ThreadingHTTPServer
S((addr, port), H).serve_forever()
"""

# (Host, path, source) -> what answers: "<server> <path>", or the status.
EXPECT = [
    ("shop.lab.invalid", "/", "127.0.0.1", "shop"),
    ("x.shop.lab.invalid", "/api", "127.0.0.1", "shop"),  # the wildcard has no /api: host beats host-less
    ("shop.lab.invalid", "/api", "127.0.0.2", "api"),
    ("shop.lab.invalid", "/api/x", "127.0.0.2", "api"),
    ("shop.lab.invalid", "/apis", "127.0.0.1", "shop"),  # whole segments only
    ("shop.lab.invalid", "/api/v2/users", "127.0.0.1", "apiv2"),  # longest prefix first
    (
        "shop.lab.invalid",
        "/api/files/a",
        "127.0.0.2",
        "api",
    ),  # the host's own /api beats host-less /api/files
    ("other.invalid", "/api/files/a", "127.0.0.1", "files"),
    ("other.invalid", "/static/app.js", "127.0.0.1", "files"),
    ("other.invalid", "/", "127.0.0.1", "shop"),  # the default
    ("shop.lab.invalid", "/api", "127.0.0.1", "403"),  # allowFrom, by the TCP peer
]


def _curl(
    in_ns: list[str], host: str, path: str, source: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*in_ns, "curl", "-s", "--max-time", "2", "--interface", source, "-H", f"Host: {host}",
         "-w", "\\n%{http_code}", *extra, f"http://127.0.0.1:80{path}"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip


def _answer(in_ns: list[str], host: str, path: str, source: str) -> str:
    result = _curl(in_ns, host, path, source, "-H", "X-Forwarded-For: 127.0.0.2")
    body, _, code = result.stdout.rpartition("\n")
    return body.rsplit(" ", 1)[0] if code == "200" else code


def _tcp(ns: str, source: str) -> str:
    """One line through the TCP frontend: the greeting and the echo, or what went wrong."""
    script = (
        "import socket,sys\n"
        "try:\n"
        f"    c = socket.create_connection(('127.0.0.1', 5432), timeout=2, source_address=('{source}', 0))\n"
        "    c.sendall(b'ping\\n'); buf = b''\n"
        "    while buf.count(b'\\n') < 2 and (chunk := c.recv(100)):\n"
        "        buf += chunk\n"
        "    print(buf.decode(), end='')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    return out.stdout


@pytest.mark.netns
def test_real_haproxy_routes_paths_refuses_outsiders_and_sticks(netns: str, tmp_path: Path) -> None:
    require_root_tools("haproxy", "curl")
    s = every_key()
    # shop has two servers (stickiness needs a choice); each app listens on its own loopback address.
    servers = {
        "shop": [("shop-a", "127.0.0.11"), ("shop-b", "127.0.0.12")],
        "api": [("api", "127.0.0.13")],
        "apiv2": [("apiv2", "127.0.0.14")],
        "files": [("files", "127.0.0.15")],
        "db": [("db", "127.0.0.16")],
    }
    ports = {svc.name: svc.port for svc in s.services}
    backends = {
        n: StaticBackend(tuple(StaticServer(a, ip, ports[n]) for a, ip in v)) for n, v in servers.items()
    }
    (tmp_path / "haproxy.cfg").write_text(render_haproxy_cfg(s, backends))
    (tmp_path / "app.py").write_text(APP)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    in_ns = ["ip", "netns", "exec", netns]
    mode = {"db": "tcp", "apiv2": "proxy"}
    procs = [
        subprocess.Popen(
            [*in_ns, sys.executable, str(tmp_path / "app.py"), a, ip, str(ports[n]), mode.get(n, "http")]
        )
        for n, v in servers.items()
        for a, ip in v
    ]
    env = ["env", "HOST_IP=127.0.0.1", "HALB_COOKIE_KEY=" + "k" * 32]
    procs.append(subprocess.Popen([*in_ns, *env, "haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")]))
    try:
        deadline = time.monotonic() + 15

        # Every server up (checks pass, including PROXY v2 ones) before judging routes.
        def up() -> bool:
            shops = {_answer(in_ns, "shop.lab.invalid", "/", "127.0.0.1") for _ in range(4)}
            return (
                shops == {"shop-a", "shop-b"}
                and _answer(in_ns, "shop.lab.invalid", "/api/v2/x", "127.0.0.1") == "apiv2"
                and _tcp(netns, "127.0.0.2").startswith("hello db")
            )

        while not up():
            assert time.monotonic() < deadline, "the edge never answered"
            time.sleep(0.2)
        got = [(h, p, src, _answer(in_ns, h, p, src)) for h, p, src, _ in EXPECT]
        assert [
            (h, p, src, a.replace("shop-b", "shop").replace("shop-a", "shop")) for h, p, src, a in got
        ] == EXPECT
        assert _tcp(netns, "127.0.0.2") == "hello db\nping\n"
        assert _tcp(netns, "127.0.0.1") in ("ConnectionResetError\n", "")  # refused: closed before a greeting
        # Sticky: the cookie names a server (a pod), so any edge with the same key sends it back there.
        first = _curl(in_ns, "shop.lab.invalid", "/", "127.0.0.1", "-c", str(tmp_path / "jar"))
        pinned = first.stdout.split(" ")[0]
        assert "halb_shop" in (tmp_path / "jar").read_text()
        again = {
            _curl(in_ns, "shop.lab.invalid", "/", "127.0.0.1", "-b", str(tmp_path / "jar")).stdout.split(" ")[
                0
            ]
            for _ in range(6)
        }
        assert again == {pinned}
        unpinned = {_curl(in_ns, "shop.lab.invalid", "/", "127.0.0.1").stdout.split(" ")[0] for _ in range(6)}
        assert unpinned == {"shop-a", "shop-b"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


# --- the Kubernetes side: apps and the edge pod, on the mocks ----------------------


def test_every_key_reaches_the_pods_and_the_manifests_validate() -> None:
    from k8s_schema import validate

    from halb.mockrun import run_program
    from halb.render import manifests

    registry = {"server": "registry.example.com", "username": "ci"}
    raw = with_overrides(
        stack_raw("lab"), services=EVERY_KEY, registry=registry, registryPassword="pw", secret=True
    )
    docs = manifests(run_program(raw, "lab"))
    for d in docs:
        validate(d)
    deploy = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    shop = deploy["shop"]["spec"]["template"]["spec"]
    (c,) = shop["containers"]
    assert c["startupProbe"] == {
        "httpGet": {"path": "/start", "port": "http"}, "periodSeconds": 5, "failureThreshold": 12,
    }  # fmt: skip
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["runAsGroup"] == 1000
    assert c["securityContext"]["readOnlyRootFilesystem"] is False
    assert shop["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}}]
    # Defaults: read-only root, the image's own user, readiness path for all three probes.
    (api,) = deploy["api"]["spec"]["template"]["spec"]["containers"]
    assert (
        api["securityContext"]["readOnlyRootFilesystem"] is True and "runAsUser" not in api["securityContext"]
    )
    assert {api[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {"/"}
    # TCP-only: connect probes on a port named tcp, as HAProxy checks it.
    (db,) = deploy["db"]["spec"]["template"]["spec"]["containers"]
    assert db["ports"] == [{"name": "tcp", "containerPort": 15432}]
    assert db["readinessProbe"]["tcpSocket"] == {"port": "tcp"} and "httpGet" not in db["livenessProbe"]
    # The stack's registry pulls the apps' images too.
    assert {d["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"] for d in deploy.values()} == {
        "images-apps-pull"
    }
    (edge,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (hap,) = [x for x in edge["spec"]["template"]["spec"]["containers"] if x["name"] == "haproxy"]
    assert {"name": "tcp-0", "containerPort": 5432, "hostPort": 5432, "protocol": "TCP"} in hap["ports"]
    # The cookie key: a Secret of its own, written REDACTED (pulumi_random mints it at `pulumi up`).
    (key,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "edge-cookie-key"]
    assert key["stringData"] == {"key": "REDACTED"}


def test_the_cookie_key_is_minted_secret_and_never_a_literal() -> None:
    from halb.mockrun import run_program

    run = run_program(with_overrides(stack_raw("lab"), services=EVERY_KEY), "lab")
    password = [r for r in run.resources if r.type == "random:index/randomPassword:RandomPassword"]
    assert sorted((r.name, r.inputs["length"], r.inputs["special"]) for r in password) == [
        ("edge-cookie-key", 32, False),
        ("edge-handoff-key", 43, False),  # tests/test_edge_security.py
    ]
    value = next(r for r in password if r.name == "edge-cookie-key").outputs["result"]
    assert len(value) == 32 and value.isalnum()
    secret = [
        r for r in run.resources if r.type == "kubernetes:core/v1:Secret" and r.name == "edge-cookie-key"
    ]
    assert secret and "stringData" in secret[0].secret_paths
    for r in run.resources:
        if r is not secret[0] and r is not password[0]:
            assert value not in str(r.inputs), r.name


def test_the_steer_listener_honours_every_drain_window_the_settings_accept() -> None:
    import re

    from components.settings.models import Handoff

    script = (Path(__file__).parent.parent / "images/keepalived/halb-keepalived").read_text()
    m = re.search(r"^MAX_DRAIN_S = ([0-9.]+)$", script, re.M)
    assert m is not None
    (bound,) = [x.le for x in Handoff.model_fields["drain_seconds"].metadata if hasattr(x, "le")]
    assert float(m.group(1)) == bound == 3600
