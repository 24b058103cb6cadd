"""HTTPS: settings and their refusals, the rendered haproxy.cfg (parsed), the
pod's TLS wiring, cert-manager Certificates, the ticket seed, and halb-tls."""

from __future__ import annotations

import base64
import shlex
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, lab_value, load_script, require_root_tools, stack_raw, with_overrides
from k8s_schema import cert_manager_problems, validate

from components.edge_pod import (
    ADMIN_SOCKET,
    SERVER_STATE_FILE,
    TICKET_KEYS_FILE,
    TICKET_SECRET,
    TLS_CERTS_DIR,
    TLS_DEFAULT_CERT,
)
from components.haproxy_cfg import TLS12_CIPHERS, TLS13_CIPHERSUITES, dns_backends, render_haproxy_cfg
from components.settings import RawConfig, Settings, SettingsError, parse_settings
from halb.mockrun import RANDOM_BYTES, Run, run_program
from halb.render import manifests, render_files

P = "rancher-ha-lb:"
S = lab_value("services")
SHOP_TLS = {"issuer": "letsencrypt", "keyAlgorithms": ["ECDSA", "RSA"]}
BLOG_TLS = {"secretName": "blog-tls"}


def tls_raw(
    shop: dict[str, Any] | None = None, blog: dict[str, Any] | None = None, **changes: Any
) -> RawConfig:
    services = [
        {**S[0], "tls": SHOP_TLS if shop is None else shop},
        {
            **S[1],
            "hostnames": [*S[1]["hostnames"], "*.blog.lab.invalid"],
            "tls": BLOG_TLS if blog is None else blog,
        },
        *S[2:],
    ]
    return with_overrides(stack_raw("lab"), services=services, **changes)


def tls_settings(**kw: Any) -> Settings:
    return parse_settings(tls_raw(**kw))


def problems(raw: RawConfig) -> list[str]:
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    return err.value.problems


# --- settings ---------------------------------------------------------------------


def test_defaults() -> None:
    s = tls_settings()
    assert s.load_balancer.https_port == 443
    assert [svc.name for svc in s.tls_services] == ["shop", "blog"] and s.default_tls_service == s.services[0]
    assert s.tls.session_tickets == "shared" and s.tls.ticket_key_rotation == "12h"
    tls = s.services[0].tls
    assert tls is not None and tls.redirect and tls.issuer_kind == "ClusterIssuer"
    assert tls.hsts.header() == "max-age=63072000"
    assert parse_settings(stack_raw("lab")).tls_services == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (tls_raw(shop={"secretName": "x", "issuer": "le"}),
         f"{P}services[0].tls: secretName and issuer both set; give secretName (an existing kubernetes.io/tls "
         "Secret) or issuer (a cert-manager Certificate is created), not both"),
        (tls_raw(shop={}),
         f"{P}services[0].tls: no certificate; set secretName (an existing kubernetes.io/tls Secret in the edge "
         "namespace) or issuer (a cert-manager ClusterIssuer or Issuer)"),
        (with_overrides(stack_raw("lab"), services=[{**S[0], "hostnames": [], "tls": {"issuer": "le"}}, *S[1:]]),
         f"{P}services[0].tls.issuer: the service has no hostnames, and a Certificate needs at least one dnsName; "
         "add hostnames or use secretName"),
        (tls_raw(blog={"secretName": "b", "keyAlgorithms": ["RSA"]}),
         f"{P}services[1].tls.keyAlgorithms: only with issuer (an existing Secret has its own key)"),
        (tls_raw(shop={"issuer": "le", "additionalSecretNames": ["x"]}),
         f"{P}services[0].tls.additionalSecretNames: only with secretName (issuer: use keyAlgorithms)"),
        (tls_raw(shop={"issuer": "le", "keyAlgorithms": ["RSA", "RSA"]}),
         f"{P}services[0].tls.keyAlgorithms: ['RSA', 'RSA'] names one twice"),
        (tls_raw(blog={"secretName": "b", "additionalSecretNames": ["b"]}),
         f"{P}services[1].tls.additionalSecretNames: ['b', 'b'] names one Secret twice"),
        (tls_raw(blog={"secretName": "keepalived-config"}),
         f"{P}services[1].tls: Secret 'keepalived-config' is one the program manages; use another name"),
        (tls_raw(shop={"secretName": "s", "hsts": {"preload": True}}),
         f"{P}services[0].tls.hsts.preload: the preload list needs includeSubDomains: true and maxAge of at "
         "least 31536000 (one year)"),
        (tls_raw(tls={"defaultCertificate": "news"}),
         f"{P}tls.defaultCertificate: 'news' is not a TLS service (have: shop, blog)"),
        (tls_raw(tls={"ticketKeyRotation": "13h"}),
         f"{P}tls.ticketKeyRotation: 13h is not in 1m..12h (a key that encrypts longer weakens forward secrecy; "
         "shorter ones expire under clients' feet)"),
        (tls_raw(tls={"ticketKeyRotation": "30s"}),
         f"{P}tls.ticketKeyRotation: 30s is not in 1m..12h (a key that encrypts longer weakens forward secrecy; "
         "shorter ones expire under clients' feet)"),
        (tls_raw(loadBalancer={"httpsPort": 80}),
         f"{P}loadBalancer.httpsPort: 80 is also httpPort; every edge port needs its own (default 443)"),
        (tls_raw(vrrp={"handoff": {"port": 443}}),
         f"{P}loadBalancer.httpsPort: 443 is also {P}vrrp.handoff.port; every edge port needs its own (default 443)"),
        (tls_raw(tls={"sessionTickets": "yes"}),
         f"{P}tls.sessionTickets: 'yes' is not allowed ('shared', 'perHost' or 'off')"),
        (tls_raw(shop={"issuer": "le", "issuerKind": "Cluster"}),
         f"{P}services[0].tls.issuerKind: 'Cluster' is not allowed ('ClusterIssuer' or 'Issuer')"),
        (tls_raw(shop={"issuer": "le", "keyAlgorithms": []}), f"{P}services[0].tls.keyAlgorithms: must not be empty"),
        (tls_raw(shop={"isuer": "le"}),
         f"{P}services[0].tls.isuer: unknown key; expected one of: additionalSecretNames, hsts, issuer, "
         "issuerKind, keyAlgorithms, redirect, secretName"),
    ],
)  # fmt: skip
def test_bad_tls_settings_are_one_line_each(raw: RawConfig, expected: str) -> None:
    assert problems(raw) == [expected]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("192.0.2.7", "is an IP address; a certificate's dnsNames cannot hold it"),
        ("www.example.123", "ends in a numeric label; no certificate can name it (a top-level domain is never all digits)"),
    ],
)  # fmt: skip
def test_names_no_certificate_can_cover(host: str, why: str) -> None:
    services = [{**S[0], "hostnames": [host], "tls": BLOG_TLS}, *S[1:]]
    assert problems(with_overrides(stack_raw("lab"), services=services)) == [
        f"{P}services[0].hostnames: '{host}' {why}"
    ]


# --- haproxy.cfg, parsed ---------------------------------------------------------------


def sections(cfg: str) -> dict[str, list[list[str]]]:
    """haproxy.cfg as HAProxy reads it: section header -> its statements, each split into words."""
    out: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in cfg.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", ".")):
            continue
        words = shlex.split(line, comments=True)
        if not line.startswith(" "):
            current = out.setdefault(" ".join(words), [])
        elif current is not None:
            current.append(words)
    return out


def cfg_of(s: Settings) -> dict[str, list[list[str]]]:
    return sections(render_haproxy_cfg(s, dns_backends(s)))


def test_one_https_bind_with_sni_certificates_alpn_and_shared_tickets() -> None:
    cfg = cfg_of(tls_settings())
    (bind,) = [w for w in cfg["frontend https"] if w[0] == "bind"]
    assert bind == [
        "bind", "0.0.0.0:443", "ssl", "crt", TLS_DEFAULT_CERT, "crt", TLS_CERTS_DIR, "alpn", "h2,http/1.1",
        "tls-ticket-keys", TICKET_KEYS_FILE,
    ]  # fmt: skip
    glob = {w[0]: w[1:] for w in cfg["global"]}
    assert glob["ssl-default-bind-ciphers"] == [TLS12_CIPHERS]
    assert glob["ssl-default-bind-ciphersuites"] == [TLS13_CIPHERSUITES]
    assert glob["ssl-default-bind-curves"] == ["X25519:prime256v1:secp384r1"]
    assert glob["ssl-default-bind-options"] == ["prefer-client-ciphers", "no-sslv3", "no-tlsv10", "no-tlsv11"]
    assert glob["stats"] == ["socket", ADMIN_SOCKET, "mode", "666", "level", "admin"]
    # Both frontends route alike and set the forwarding headers themselves, dropping the client's.
    for name, scheme in (("frontend http", "http"), ("frontend https", "https")):
        rules = cfg[name]
        dropped = {w[2] for w in rules if w[:2] == ["http-request", "del-header"]}
        assert {"X-Forwarded-For", "X-Forwarded-Proto", "Forwarded"} <= dropped
        assert ["http-request", "set-header", "X-Forwarded-Proto", scheme] in rules
        first_set = next(i for i, w in enumerate(rules) if w[:2] == ["http-request", "set-header"])
        assert all(i < first_set for i, w in enumerate(rules) if w[1:2] == ["del-header"])
    routes = [w for w in cfg["frontend https"] if w[0] in ("use_backend", "default_backend")]
    assert routes == [w for w in cfg["frontend http"] if w[0] in ("use_backend", "default_backend")]


def test_http_redirects_exactly_what_routes_to_a_redirecting_service() -> None:
    redirect = [
        "http-request",
        "redirect",
        "location",
        "https://%[var(txn.host)]%[capture.req.uri]",
        "code",
        "308",
    ]
    # blog redirects, shop (the default) does not.
    cfg = cfg_of(tls_settings(shop={"issuer": "le", "redirect": False}))
    rules = [w[len(redirect) :] for w in cfg["frontend http"] if w[: len(redirect)] == redirect]
    assert rules == [["if", "{", "var(txn.be)", "-m", "str", "be_blog", "}"]]
    # shop, the default, redirects: its name and everything no other name routes.
    cfg = cfg_of(tls_settings(blog={"secretName": "b", "redirect": False}))
    rules = [w[len(redirect) :] for w in cfg["frontend http"] if w[: len(redirect)] == redirect]
    assert rules == [["if", "{", "var(txn.be)", "-m", "str", "be_shop", "}"]]
    # Redirects come before routing, and a port other than 443 is in the location.
    cfg = cfg_of(tls_settings(loadBalancer={"httpsPort": 8443}))
    heads = [w[0] + " " + w[1] for w in cfg["frontend http"]]
    assert heads.index("http-request redirect") < heads.index("use_backend be_shop")
    assert any(
        w[3] == "https://%[var(txn.host)]:8443%[capture.req.uri]"
        for w in cfg["frontend http"]
        if w[1] == "redirect"
    )


def test_hsts_on_tls_backends_over_https_only() -> None:
    cfg = cfg_of(tls_settings(blog={"secretName": "b", "hsts": {"maxAge": 0}}))
    hsts = [
        "http-response",
        "set-header",
        "Strict-Transport-Security",
        "max-age=63072000",
        "if",
        "{",
        "ssl_fc",
        "}",
    ]
    assert hsts in cfg["backend be_shop"]
    assert not any(w[2:3] == ["Strict-Transport-Security"] for w in cfg["backend be_blog"])
    s = tls_settings(
        shop={"issuer": "le", "hsts": {"maxAge": 31536000, "includeSubDomains": True, "preload": True}}
    )
    assert ["http-response", "set-header", "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains; preload", "if", "{", "ssl_fc", "}"] in cfg_of(s)["backend be_shop"]  # fmt: skip


def test_ticket_modes_and_no_tls_no_https() -> None:
    per_host = cfg_of(tls_settings(tls={"sessionTickets": "perHost"}))
    (bind,) = [w for w in per_host["frontend https"] if w[0] == "bind"]
    assert "tls-ticket-keys" not in bind
    off = cfg_of(tls_settings(tls={"sessionTickets": "off"}))
    assert {w[0]: w[1:] for w in off["global"]}["ssl-default-bind-options"][-1] == "no-tls-tickets"
    plain = cfg_of(parse_settings(stack_raw("lab")))
    assert "frontend https" not in plain and not any(w[0].startswith("ssl-") for w in plain["global"])


def certificate(tmp: Path, name: str, alg: str = "EC") -> str:
    """A self-signed certificate and its key in HAProxy's one-file form."""
    opt = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if alg == "EC" else ["-newkey", "rsa:2048"]
    subprocess.run(
        ["openssl", "req", "-x509", *opt, "-nodes", "-keyout", str(tmp / "k"), "-out", str(tmp / "c"),
         "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return (tmp / "c").read_text() + (tmp / "k").read_text()


def test_haproxy_accepts_the_rendered_tls_config_with_real_certificates(tmp_path: Path) -> None:
    require_root_tools("haproxy", "openssl")
    run_dir = tmp_path / "run"
    (run_dir / "tls" / "certs").mkdir(parents=True)
    (run_dir / "tls" / "default.pem").write_text(certificate(tmp_path, "shop.lab.invalid"))
    (run_dir / "tls" / "certs" / "shop-tls-ecdsa.pem").write_text(certificate(tmp_path, "shop.lab.invalid"))
    (run_dir / "tls" / "certs" / "shop-tls-rsa.pem").write_text(
        certificate(tmp_path, "shop.lab.invalid", "RSA")
    )
    keys = [base64.b64encode(bytes([i]) * 80).decode() for i in range(3)]
    (run_dir / "tls" / "ticket-keys").write_text("\n".join(keys) + "\n")
    (run_dir / "server-state").write_text("1\n")
    s = tls_settings()
    cfg = render_haproxy_cfg(s, dns_backends(s)).replace("/run/haproxy", str(run_dir))
    assert SERVER_STATE_FILE.startswith("/run/haproxy/")
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=60,
                          env={"HOST_IP": "192.0.2.11", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr and "ALERT" not in done.stderr, done.stderr
    # A ticket keys file with fewer than three keys is refused: the check is real.
    (run_dir / "tls" / "ticket-keys").write_text(keys[0] + "\n")
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=60,
                          env={"HOST_IP": "192.0.2.11", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False)  # fmt: skip
    assert done.returncode != 0


# --- the program ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_run() -> Run:
    return run_program(tls_raw(), "lab")


def test_certificates_for_issuer_services(tls_run: Run) -> None:
    certs = [r for r in tls_run.resources if r.inputs.get("kind") == "Certificate"]
    comp = tls_run.named("tls")
    assert comp.type == "rancher-ha-lb:index:EdgeTls"
    assert sorted(r.inputs["metadata"]["name"] for r in certs) == ["shop-tls-ecdsa", "shop-tls-rsa"]
    for r in certs:
        alg = "ECDSA" if r.inputs["metadata"]["name"].endswith("ecdsa") else "RSA"
        assert r.parent == comp.urn and r.provider and "k8s" in r.provider
        assert (
            r.inputs["apiVersion"] == "cert-manager.io/v1" and r.inputs["metadata"]["namespace"] == "web-edge"
        )
        assert r.inputs["spec"] == {
            "secretName": r.inputs["metadata"]["name"],
            "dnsNames": ["shop.lab.invalid"],
            "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            "privateKey": {
                "algorithm": alg,
                "size": 256 if alg == "ECDSA" else 2048,
                "rotationPolicy": "Always",
            },
            "usages": ["server auth", "digital signature", *(["key encipherment"] if alg == "RSA" else [])],
        }
    docs = [d for d in manifests(tls_run) if d["kind"] == "Certificate"]
    assert cert_manager_problems(docs) == {}
    for d in docs:
        validate(d)
    broken = {**docs[0], "spec": {**docs[0]["spec"], "privateKey": {"algorithm": "DSA"}}}
    assert "algorithm" in cert_manager_problems([broken])[docs[0]["metadata"]["name"]]


def test_the_ticket_seed_is_minted_and_stays_secret(tls_run: Run) -> None:
    (seed,) = tls_run.of_type(RANDOM_BYTES)
    assert seed.inputs == {"length": 48} and seed.parent == tls_run.named("tls").urn
    secret = next(
        r
        for r in tls_run.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == TICKET_SECRET
    )
    assert secret.secret_paths == ["stringData"] and secret.inputs["type"] == "Opaque"
    assert (
        base64.b64decode(secret.inputs["stringData"]["secret"])
        and len(base64.b64decode(seed.outputs["base64"])) == 48
    )
    # The render writes no minted value, not even the mocks' stand-in.
    files = render_files(tls_raw(), "lab")
    assert seed.outputs["base64"] not in "".join(files.values())
    (doc,) = [
        d for d in manifests(tls_run) if d["kind"] == "Secret" and d["metadata"]["name"] == TICKET_SECRET
    ]
    assert doc["stringData"] == {"secret": "REDACTED"} and f"name: {TICKET_SECRET}" in files["manifests.yaml"]


def test_the_edge_pod_mounts_certificates_in_haproxy_tls_only(tls_run: Run) -> None:
    (ds,) = [d for d in manifests(tls_run) if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    validate(ds)
    names = [c["name"] for c in spec["containers"]]
    assert names == [
        "haproxy",
        "haproxy-reload",
        "haproxy-tls",
        "keepalived",
        "haproxy-watch",
        "vrrp-exporter",
    ]
    vols = {v["name"]: v for v in spec["volumes"]}
    secrets = {v["secret"]["secretName"]: v for v in vols.values() if "secret" in v}
    assert set(secrets) == {"keepalived-config", "shop-tls-ecdsa", "shop-tls-rsa", "blog-tls", TICKET_SECRET}
    for name in ("shop-tls-ecdsa", "shop-tls-rsa", "blog-tls"):
        assert secrets[name]["secret"] == {"secretName": name, "defaultMode": 0o444, "optional": True}
    assert secrets[TICKET_SECRET]["secret"] == {"secretName": TICKET_SECRET, "defaultMode": 0o444}
    tls_volumes = {v["name"] for v in secrets.values() if v["secret"]["secretName"] != "keepalived-config"}
    for c in spec["containers"]:
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        assert (
            (mounted & tls_volumes == tls_volumes)
            if c["name"] == "haproxy-tls"
            else not mounted & tls_volumes
        )
    tls = next(c for c in spec["containers"] if c["name"] == "haproxy-tls")
    assert tls["securityContext"]["runAsUser"] == 65534 and tls["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    hap = next(c for c in spec["containers"] if c["name"] == "haproxy")
    assert {"name": "https", "containerPort": 443, "hostPort": 443} in hap["ports"]
    assert {"name": "HALB_TLS_READY", "value": "/run/haproxy/tls/ready"} in hap["env"]
    # The default certificate's Secrets first: it is the bind's first certificate.
    args = tls["command"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--certificate"] == [
        "shop-tls-ecdsa",
        "shop-tls-rsa",
        "blog-tls",
    ]
    other = run_program(tls_raw(tls={"defaultCertificate": "blog"}), "lab")
    (ds,) = [d for d in manifests(other) if d["kind"] == "DaemonSet"]
    tls = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "haproxy-tls")
    args = tls["command"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--certificate"] == [
        "blog-tls",
        "shop-tls-ecdsa",
        "shop-tls-rsa",
    ]


def test_no_tls_no_tls_objects() -> None:
    run = run_program(stack_raw("lab"), "lab")
    assert not run.of_type(RANDOM_BYTES) and not any(
        r.type == "rancher-ha-lb:index:EdgeTls" for r in run.resources
    )
    (ds,) = [d for d in manifests(run) if d["kind"] == "DaemonSet"]
    assert "haproxy-tls" not in [c["name"] for c in ds["spec"]["template"]["spec"]["containers"]]


# --- halb-tls ------------------------------------------------------------------------


def helper() -> ModuleType:
    return load_script(ROOT / "images" / "haproxy" / "halb-tls")


def test_pem_with_blank_lines_keeps_its_chain() -> None:
    tls = helper()
    leaf, inter = (
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n",
    )
    key = "-----BEGIN PRIVATE KEY-----\nCCCC\n-----END PRIVATE KEY-----\n"
    out = tls.combined(leaf + "\n\n" + inter + "\n", "\n" + key)
    assert out == leaf + inter + key and "\n\n" not in out


def test_a_pair_is_checked_before_haproxy_sees_it(tmp_path: Path) -> None:
    require_root_tools("openssl")
    tls = helper()
    good = certificate(tmp_path, "a.example.com")
    info, why = tls.check_pair(good)
    assert why is None and info["subject"] == "CN=a.example.com" and info["serial"]
    other = certificate(tmp_path, "b.example.com")
    mismatched = (
        good.split("-----BEGIN PRIVATE KEY-----")[0]
        + "-----BEGIN PRIVATE KEY-----"
        + other.split("-----BEGIN PRIVATE KEY-----")[1]
    )
    assert tls.check_pair(mismatched) == (None, "the key does not match the certificate")
    assert tls.check_pair("garbage")[1] == "tls.crt or tls.key holds no PEM certificate or private key"
    assert tls.check_pair(good.replace("A", "B", 40))[0] is None


def test_ticket_keys_follow_haproxys_order_and_rotate_by_one() -> None:
    tls = helper()
    secret = b"shared"
    keys = tls.ticket_keys(secret, 100)
    assert len(keys) == 3 and all(len(base64.b64decode(k)) == 80 for k in keys)
    # HAProxy encrypts with the penultimate key: the current period's.
    assert keys[1] == tls.ticket_key(secret, 100)
    # The next period's file is this one shifted by one: what `set ssl tls-key` does at runtime.
    assert tls.ticket_keys(secret, 101) == [*keys[1:], tls.ticket_key(secret, 102)]
    assert tls.ticket_keys(secret, 100) == keys and tls.ticket_keys(b"other", 100) != keys
    assert len(set(keys)) == 3
