"""EdgeTls: what HTTPS needs in the edge namespace besides the edge pods.

Creates a cert-manager `Certificate` per key algorithm of every service
whose `tls` names an `issuer` (dnsNames: the service's hostnames; a new key
on every renewal), and, with `tls.sessionTickets: shared`, the Secret all
edge pods derive their session-ticket keys from: 48 random bytes minted by
pulumi_random, a Pulumi secret from the start. Services with `secretName`
bring their own Secret; nothing is created for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.edge_pod import TICKET_SECRET, TICKET_SECRET_KEY
from components.k8s import labels
from components.settings import Service, Settings
from components.settings.tls import KEY_SIZES, KeyAlgorithm, certificate_secrets

CERT_MANAGER_API = "cert-manager.io/v1"
TICKET_SECRET_BYTES = 48


@dataclass(frozen=True)
class EdgeTlsArgs:
    settings: Settings
    namespace: pulumi.Input[str]


def certificate_spec(svc: Service, algorithm: KeyAlgorithm, secret: str) -> dict[str, Any]:
    """A cert-manager Certificate for the service's hostnames, one key algorithm."""
    assert svc.tls is not None and svc.tls.issuer is not None
    usages = ["server auth", "digital signature"] + (["key encipherment"] if algorithm == "RSA" else [])
    return {
        "secretName": secret,
        "dnsNames": list(svc.hostnames),
        "issuerRef": {"name": svc.tls.issuer, "kind": svc.tls.issuer_kind, "group": "cert-manager.io"},
        # A renewal brings a new key, not only a new signature on the old one.
        "privateKey": {"algorithm": algorithm, "size": KEY_SIZES[algorithm], "rotationPolicy": "Always"},
        "usages": usages,
    }


class EdgeTls(pulumi.ComponentResource):
    """cert-manager Certificates and the shared session-ticket Secret."""

    certificates: list[str]
    ticket_secret: str | None

    def __init__(self, name: str, args: EdgeTlsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rancher-ha-lb:index:EdgeTls", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.certificates = []
        for svc in s.tls_services:
            assert svc.tls is not None
            if svc.tls.issuer is None:
                continue
            for alg, secret in zip(
                svc.tls.key_algorithms, certificate_secrets(svc.name, svc.tls), strict=True
            ):
                k8s.apiextensions.CustomResource(
                    f"{name}-{secret}",
                    api_version=CERT_MANAGER_API,
                    kind="Certificate",
                    metadata={"name": secret, "namespace": args.namespace, "labels": labels(secret, "tls")},
                    spec=certificate_spec(svc, alg, secret),
                    opts=child,
                )
                self.certificates.append(secret)
        self.ticket_secret = None
        if s.tls_services and s.tls.session_tickets == "shared":
            seed = random.RandomBytes(f"{name}-ticket-seed", length=TICKET_SECRET_BYTES, opts=child)
            k8s.core.v1.Secret(
                f"{name}-tickets",
                metadata={"name": TICKET_SECRET, "namespace": args.namespace, "labels": labels("tls", "tls")},
                type="Opaque",
                string_data={TICKET_SECRET_KEY: pulumi.Output.secret(seed.base64)},  # type: ignore[arg-type]
                opts=child,
            )
            self.ticket_secret = TICKET_SECRET
        self.register_outputs({"certificates": self.certificates, "ticket_secret": self.ticket_secret})
