"""HTTPS in the lab, on the shipped images and the rendered pod (root, network namespaces).

The lab's CA stands in for cert-manager (halb/lab/certs.py). From the client
namespace, over the VIP: every TLS hostname with its own certificate and
service, h2, HSTS, HTTP's 308, forwarding headers a client cannot forge, a
renewal served without a reload or a failed handshake, a malformed renewal
refused, and sessions that resume on the new MASTER after a crash.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import lab_value, running_lab, stack_raw, with_overrides

from halb.lab.base import wait_until

S = lab_value("services")
pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    services = [
        {**S[0], "tls": {"issuer": "lab-ca", "keyAlgorithms": ["ECDSA", "RSA"], "redirect": False}},
        {**S[1], "hostnames": [*S[1]["hostnames"], "*.blog.lab.invalid"], "tls": {"secretName": "blog-tls"}},
    ]
    with running_lab(with_overrides(stack_raw("lab"), services=services)) as lab:
        yield lab


def client(lab: Any, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.plan.client_netns, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def curl(lab: Any, url: str, host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    vip = str(lab.plan.vip)
    return client(
        lab, "curl", "-sS", "--max-time", "3", "--cacert", str(lab.ca.root),
        "--resolve", f"{host}:443:{vip}", "--resolve", f"{host}:80:{vip}", *extra, url,
    )  # fmt: skip


def s_client(lab: Any, host: str, *extra: str) -> str:
    done = client(
        lab, "openssl", "s_client", "-connect", f"{lab.plan.vip}:443", "-servername", host,
        "-CAfile", str(lab.ca.root), "-verify_return_error", *extra, timeout=20,
    )  # fmt: skip
    return done.stdout + done.stderr


def served_serial(lab: Any, host: str) -> str:
    out = client(
        lab, "sh", "-c",
        f"echo | openssl s_client -connect {lab.plan.vip}:443 -servername {host} 2>/dev/null | openssl x509 -noout -serial",
    ).stdout  # fmt: skip
    return out.strip().removeprefix("serial=")


def test_every_tls_hostname_answers_with_its_service_and_certificate(lab: Any) -> None:
    status = lab.status()
    assert status["tls_ca"] == str(lab.ca.root)
    for host, service in (
        ("shop.lab.invalid", "shop"),
        ("blog.lab.invalid", "blog"),
        ("x.blog.lab.invalid", "blog"),
    ):
        done = curl(
            lab, f"https://{host}/", host, "-w", "\n%{http_code} %{http_version} %{ssl_verify_result}"
        )
        assert done.returncode == 0, done.stderr
        body, meta = done.stdout.rsplit("\n", 1)
        assert f"service={service} " in body + " " and meta == "200 2 0", done.stdout  # h2, verified
        cert = s_client(lab, host)
        assert "Verify return code: 0 (ok)" in cert
        expected = "shop.lab.invalid" if service == "shop" else "blog.lab.invalid"
        assert re.search(rf"subject=CN ?= ?{re.escape(expected)}", cert), cert
    # The chain was served (tls.crt has a blank line between leaf and intermediate).
    assert "rancher-ha-lb lab intermediate" in s_client(lab, "shop.lab.invalid", "-showcerts")


def test_ecdsa_and_rsa_for_one_name_both_served(lab: Any) -> None:
    rsa_only = s_client(lab, "shop.lab.invalid", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256", "-tls1_2")
    ecdsa = s_client(lab, "shop.lab.invalid", "-tls1_2")
    assert "Server public key is 2048 bit" in rsa_only and "Peer signature type: RSA" in rsa_only
    assert "Server public key is 256 bit" in ecdsa and "Peer signature type: ECDSA" in ecdsa
    # A client without SNI gets the default certificate: the first TLS service's.
    no_sni = client(lab, "openssl", "s_client", "-connect", f"{lab.plan.vip}:443", "-noservername").stdout
    assert re.search(r"subject=CN ?= ?shop\.lab\.invalid", no_sni), no_sni


def test_http_redirects_a_tls_service_and_hsts_only_over_https(lab: Any) -> None:
    done = curl(lab, "http://blog.lab.invalid/a/b?c=d&e", "blog.lab.invalid", "-o", "/dev/null",
                "-w", "%{http_code} %{redirect_url}")  # fmt: skip
    assert done.stdout == "308 https://blog.lab.invalid/a/b?c=d&e", done.stdout
    # shop says redirect: false: HTTP serves it.
    assert "service=shop" in curl(lab, "http://shop.lab.invalid/", "shop.lab.invalid").stdout
    heads = curl(lab, "https://shop.lab.invalid/", "shop.lab.invalid", "-D", "-", "-o", "/dev/null").stdout
    assert "strict-transport-security: max-age=63072000" in heads.lower()
    plain = curl(lab, "http://shop.lab.invalid/", "shop.lab.invalid", "-D", "-", "-o", "/dev/null").stdout
    assert "strict-transport-security" not in plain.lower()


def test_forwarding_headers_are_the_edges_not_the_clients(lab: Any) -> None:
    forged = [
        "-H",
        "X-Forwarded-For: 203.0.113.99",
        "-H",
        "X-Forwarded-Proto: gopher",
        "-H",
        "Forwarded: for=1.2.3.4",
    ]
    for scheme in ("https", "http"):
        seen = curl(lab, f"{scheme}://shop.lab.invalid/headers", "shop.lab.invalid", *forged).stdout
        pairs = [line.split(": ", 1) for line in seen.splitlines() if ": " in line]
        headers = {k.lower(): v for k, v in pairs}  # h2 sends them lower-case
        assert headers.get("x-forwarded-for") == str(lab.plan.client_address), seen
        assert headers.get("x-forwarded-proto") == scheme and "forwarded" not in headers, seen


def test_a_renewal_is_served_without_a_reload_or_a_failed_handshake(lab: Any) -> None:
    from halb.lab.apply import renew

    before = served_serial(lab, "shop.lab.invalid")
    master = lab.master()
    reload_log = lab.pods.log(master, "haproxy-reload")
    reloads = reload_log.read_text().count("reloaded:")
    probe = lab.start_probe(100_000, 0.02, 0.5, 12.0, host="shop.lab.invalid", tls=True)
    time.sleep(1.0)
    renew(lab, "shop", lambda _: None)
    assert wait_until(lambda: served_serial(lab, "shop.lab.invalid") not in ("", before), 30, poll=0.5)
    attempts = probe.attempts(grace_s=20)
    failed = [a for a in attempts if not a.ok]
    assert len(attempts) > 300 and failed == [], failed[:3]
    assert reload_log.read_text().count("reloaded:") == reloads  # the runtime API, not a reload
    assert "updated in the running HAProxy" in lab.pods.log(master, "haproxy-tls").read_text()


def test_a_malformed_renewal_is_never_loaded_and_lab_status_says_why(lab: Any) -> None:
    from halb.lab.certs import wanted

    serving = served_serial(lab, "blog.lab.invalid")
    (item,) = [i for i in wanted(lab.plan.settings) if i.secret == "blog-tls"]
    good, other = lab.ca.issue(item), lab.ca.issue(item)
    bad = {**good, "data": {**good["data"], "tls.key": other["data"]["tls.key"]}}  # another key
    lab.ca.store(bad)
    for n in lab.plan.lb_nodes:
        lab.pods.update_objects(n.name)
    try:

        def refused() -> bool:
            nodes = [n for n in lab.status()["nodes"] if n["role"] == "load-balancer"]
            certs = [((n.get("tls") or {}).get("certificates") or {}).get("blog-tls", {}) for n in nodes]
            return all(c.get("state") == "rejected" for c in certs)

        assert wait_until(refused, 30, poll=0.5), lab.status()
        st = next(n for n in lab.status()["nodes"] if n["role"] == "load-balancer")["tls"]["certificates"][
            "blog-tls"
        ]
        assert st == {"state": "rejected", "error": "the key does not match the certificate", "serving": True}
        assert served_serial(lab, "blog.lab.invalid") == serving
        assert (
            "blog-tls: refused (the key does not match the certificate)"
            in lab.pods.log(lab.master(), "haproxy-tls").read_text()
        )
    finally:
        lab.ca.store(good)
        for n in lab.plan.lb_nodes:
            lab.pods.update_objects(n.name)
    assert wait_until(lambda: served_serial(lab, "blog.lab.invalid") not in ("", serving), 30, poll=0.5)


def _session(lab: Any, version: str, path: str, flag: str) -> str:
    # TLS 1.3 sends its ticket after the handshake: a client that hangs up at
    # once (echo |) may never store one. Ask for a page and read to the close.
    request = r"GET / HTTP/1.1\r\nHost: shop.lab.invalid\r\nConnection: close\r\n\r\n"
    out = client(lab, "sh", "-c",
                 f"printf '{request}' | openssl s_client -ign_eof {version} -connect {lab.plan.vip}:443 "
                 f"-servername shop.lab.invalid -CAfile {lab.ca.root} {flag} {path} 2>/dev/null").stdout  # fmt: skip
    line = next((ln for ln in out.splitlines() if ln.startswith(("New,", "Reused,"))), "")
    return line.split(",")[0]


def test_sessions_resume_on_the_new_master_after_a_crash(lab: Any, tmp_path: Any) -> None:
    from halb.lab.faults import inject

    master = lab.master()
    for v in ("-tls1_2", "-tls1_3"):
        assert _session(lab, v, str(tmp_path / v), "-sess_out") == "New"
        assert (tmp_path / v).stat().st_size > 0, v
    # Both hosts derived the same keys from the one Secret.
    keys = {n.name: (lab.pods.pod_dir(n.name, "edge") / "volumes" / "haproxy-run" / "tls" / "ticket-keys").read_text()
            for n in lab.plan.lb_nodes}  # fmt: skip
    assert len(set(keys.values())) == 1 and len(next(iter(keys.values())).split()) == 3
    inject(lab, "crash", master)
    try:
        assert wait_until(lambda: lab.master() not in (None, master), 10, poll=0.1)
        for v in ("-tls1_2", "-tls1_3"):
            assert _session(lab, v, str(tmp_path / v), "-sess_in") == "Reused", v
    finally:
        inject(lab, "restore", master)
    assert all(len(base64.b64decode(k)) == 80 for k in next(iter(keys.values())).split())
