"""HTTPS settings as typed models: a service's certificate, HSTS, the tier's tickets.

A TLS service names its certificate one of two ways: `secretName`, an
existing `kubernetes.io/tls` Secret in the edge namespace, or `issuer`, for
which the program creates cert-manager Certificates (one per key algorithm)
and the edge pods use the Secrets cert-manager writes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from components.values import Bool, DnsName, Duration, Int, ServiceName, in_range

KeyAlgorithm = Literal["ECDSA", "RSA"]
# cert-manager's privateKey.size per algorithm: P-256, RSA-2048.
KEY_SIZES = {"ECDSA": 256, "RSA": 2048}
# Two years, what the HSTS preload list asks for and Mozilla's generator writes.
HSTS_MAX_AGE = 63072000
HSTS_PRELOAD_MIN_AGE = 31536000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Hsts(_Model):
    """Strict-Transport-Security on the service's HTTPS answers; `maxAge: 0` sends none."""

    max_age: Annotated[Int, in_range(0, 2**31 - 1)] = Field(HSTS_MAX_AGE, alias="maxAge")
    include_sub_domains: Bool = Field(False, alias="includeSubDomains")
    preload: Bool = False

    def header(self) -> str | None:
        if self.max_age == 0:
            return None
        value = f"max-age={self.max_age}"
        if self.include_sub_domains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


class ServiceTls(_Model):
    """HTTPS for one service."""

    secret_name: DnsName | None = Field(None, alias="secretName")
    # More existing Secrets for the same names: another key type (RSA beside ECDSA).
    additional_secret_names: tuple[DnsName, ...] = Field((), alias="additionalSecretNames")
    issuer: DnsName | None = None
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = Field("ClusterIssuer", alias="issuerKind")
    # With `issuer`: one Certificate (and Secret) per algorithm, all served.
    key_algorithms: Annotated[tuple[KeyAlgorithm, ...], Field(min_length=1)] = Field(
        ("ECDSA",), alias="keyAlgorithms"
    )
    # HTTP answers 308 to https:// (same host, path and query).
    redirect: Bool = True
    hsts: Hsts = Hsts()


class Tls(_Model):
    """What every TLS service shares: the default certificate and session tickets."""

    # The service whose certificate answers clients that send no SNI (default:
    # the first TLS service).
    default_certificate: ServiceName | None = Field(None, alias="defaultCertificate")
    # shared: every load-balancer host derives the same ticket keys from one
    # Secret and the clock, so sessions resume after a failover; perHost:
    # HAProxy's own random keys (lost on every failover and reload); off: no tickets.
    session_tickets: Literal["shared", "perHost", "off"] = Field("shared", alias="sessionTickets")
    # How long one ticket key encrypts; each is accepted for one period before and after.
    ticket_key_rotation: Duration = Field("12h", alias="ticketKeyRotation")


def certificate_secrets(service: str, tls: ServiceTls) -> list[str]:
    """The Secrets the edge pods serve for a service, in serving order."""
    if tls.issuer is not None:
        return [f"{service}-tls-{alg.lower()}" for alg in tls.key_algorithms]
    return [n for n in (tls.secret_name, *tls.additional_secret_names) if n is not None]
