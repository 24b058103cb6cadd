"""Rules across HTTPS settings, one function per topic (called from rules.RULES)."""

from __future__ import annotations

import ipaddress

from components.settings.messages import key
from components.settings.models import Settings
from components.settings.tls import HSTS_PRELOAD_MIN_AGE, certificate_secrets
from components.values import duration_seconds, show

# Secrets of the edge namespace the program makes itself (components/edge.py).
OWN_SECRETS = ("keepalived-config", "edge-tls-tickets")
# A ticket key encrypts for one period: HAProxy's advice is at most 12 h (forward
# secrecy); under a minute every client would miss its key after a short pause.
ROTATION_S = (60, 12 * 3600)


def _https_port(s: Settings) -> list[str]:
    lb = s.load_balancer
    others = {
        "httpPort": lb.http_port,
        "statsPort": lb.stats_port,
        f"{key('vrrp')}.metricsPort": s.vrrp.metrics_port,
        f"{key('vrrp')}.handoff.port": s.vrrp.handoff.port,
    }
    return [
        f"{key('loadBalancer')}.httpsPort: {lb.https_port} is also {name}; every edge port needs its own "
        "(default 443)"
        for name, port in others.items()
        if port == lb.https_port
    ]


def _certificate_source(s: Settings) -> list[str]:
    """secretName or issuer, each with only its own options."""
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        tls = svc.tls
        if tls is None:
            continue
        where = f"{key('services')}[{i}].tls"
        if tls.secret_name is not None and tls.issuer is not None:
            problems.append(
                f"{where}: secretName and issuer both set; give secretName (an existing kubernetes.io/tls "
                "Secret) or issuer (a cert-manager Certificate is created), not both"
            )
        elif tls.secret_name is None and tls.issuer is None:
            problems.append(
                f"{where}: no certificate; set secretName (an existing kubernetes.io/tls Secret in the edge "
                "namespace) or issuer (a cert-manager ClusterIssuer or Issuer)"
            )
        if tls.issuer is None and "key_algorithms" in tls.model_fields_set:
            problems.append(f"{where}.keyAlgorithms: only with issuer (an existing Secret has its own key)")
        if tls.issuer is not None and tls.additional_secret_names:
            problems.append(
                f"{where}.additionalSecretNames: only with secretName (issuer: use keyAlgorithms)"
            )
        if len(set(tls.key_algorithms)) != len(tls.key_algorithms):
            problems.append(f"{where}.keyAlgorithms: {show(list(tls.key_algorithms))} names one twice")
        names = certificate_secrets(svc.name, tls)
        for name in names:
            if name in OWN_SECRETS:
                problems.append(f"{where}: Secret {show(name)} is one the program manages; use another name")
        if tls.issuer is None and len(set(names)) != len(names):
            problems.append(f"{where}.additionalSecretNames: {show(names)} names one Secret twice")
    return problems


def _certificate_names(s: Settings) -> list[str]:
    """What a certificate's dnsNames can hold: DNS names, not addresses."""
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        if svc.tls is None:
            continue
        where = f"{key('services')}[{i}]"
        if svc.tls.issuer is not None and not svc.hostnames:
            problems.append(
                f"{where}.tls.issuer: the service has no hostnames, and a Certificate needs at least one "
                "dnsName; add hostnames or use secretName"
            )
        for h in svc.hostnames:
            try:
                ipaddress.IPv4Address(h)
            except ValueError:
                pass
            else:
                problems.append(
                    f"{where}.hostnames: {show(h)} is an IP address; a certificate's dnsNames cannot hold it"
                )
                continue
            if h.rsplit(".", 1)[-1].isdigit():
                problems.append(
                    f"{where}.hostnames: {show(h)} ends in a numeric label; no certificate can name it "
                    "(a top-level domain is never all digits)"
                )
    return problems


def _hsts(s: Settings) -> list[str]:
    problems: list[str] = []
    for i, svc in enumerate(s.services):
        if svc.tls is None or not svc.tls.hsts.preload:
            continue
        h = svc.tls.hsts
        if not h.include_sub_domains or h.max_age < HSTS_PRELOAD_MIN_AGE:
            problems.append(
                f"{key('services')}[{i}].tls.hsts.preload: the preload list needs includeSubDomains: true "
                f"and maxAge of at least {HSTS_PRELOAD_MIN_AGE} (one year)"
            )
    return problems


def _tier(s: Settings) -> list[str]:
    problems: list[str] = []
    named = s.tls.default_certificate
    if named is not None and named not in {svc.name for svc in s.tls_services}:
        problems.append(
            f"{key('tls')}.defaultCertificate: {show(named)} is not a TLS service "
            f"(have: {', '.join(svc.name for svc in s.tls_services) or 'none'})"
        )
    rotation = duration_seconds(s.tls.ticket_key_rotation)
    lo, hi = ROTATION_S
    if not lo <= rotation <= hi:
        problems.append(
            f"{key('tls')}.ticketKeyRotation: {s.tls.ticket_key_rotation} is not in 1m..12h (a key that "
            "encrypts longer weakens forward secrecy; shorter ones expire under clients' feet)"
        )
    return problems


RULES = (_https_port, _certificate_source, _certificate_names, _hsts, _tier)
