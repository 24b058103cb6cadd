"""A service's edge and pod settings besides its name and image: timeouts,
health checks and the container's security context.

The routing keys themselves (`paths`, `tcpPort`, `allowFrom`, `sticky`,
`proxyProtocol`) are single values on the Service (models.py); their
cross-field rules are in service_rules.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from components.values import (
    Bool,
    HealthPath,
    Int,
    Quantity,
    Statuses,
    Str,
    fail,
    haproxy_seconds,
    haproxy_time,
    in_range,
    quantity,
)

# Bounds: a connect over a minute is a dead backend; a day-long idle client or
# server is a leak; the tunnel bound also bounds how long a reload's old
# worker may keep websockets (hard-stop-after follows the longest tunnel).
CONNECT = haproxy_time(0.001, 60, "1ms", "1m")
CLIENT_SERVER = haproxy_time(1, 86400, "1s", "24h")
TUNNEL = haproxy_time(1, 86400, "1s", "24h")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Timeouts(_Model):
    """HAProxy's timeouts for one service, in HAProxy's units.

    `tunnel` is the idle limit of a websocket or any upgraded/TCP stream (it
    replaces client and server once a connection is a tunnel); `client`
    applies on the service's TCP frontend, and on the shared HTTP and HTTPS
    frontends as the longest of their services' (HAProxy 2.6 sets it per
    frontend, not per backend)."""

    connect: Annotated[Str, CONNECT] = "3s"
    client: Annotated[Str, CLIENT_SERVER] = "30s"
    server: Annotated[Str, CLIENT_SERVER] = "30s"
    tunnel: Annotated[Str, TUNNEL] = "1h"

    @property
    def longest_s(self) -> float:
        return max(haproxy_seconds(t) for t in (self.client, self.server, self.tunnel))


class HealthCheck(_Model):
    """HAProxy's check (HTTP/1.1, Host: the first hostname) and the kubelet's probes.

    `path` is HAProxy's check and the readiness probe (default: `healthPath`);
    liveness and startup probe their own paths, by default the same one: a
    liveness path that does not touch a database keeps a slow database from
    turning into restart loops."""

    path: HealthPath | None = None
    # HAProxy's expected statuses; the kubelet takes 200-399 whatever this says.
    statuses: Statuses = "200-399"
    liveness_path: HealthPath | None = Field(None, alias="livenessPath")
    startup_path: HealthPath | None = Field(None, alias="startupPath")
    # How long a pod may take to start before the kubelet restarts it (the
    # startup probe's failureThreshold times 5 s); liveness only begins after.
    startup_seconds: Annotated[Int, in_range(5, 3600)] = Field(300, alias="startupSeconds")


def _tmp_size(value: str) -> str:
    # /tmp is an emptyDir on the node's disk, counted in the pod's ephemeral storage.
    amount = quantity(value)
    assert amount is not None  # Quantity parsed it
    if not 2**20 <= amount <= 16 * 2**30:
        raise fail("{value} is not in 1Mi..16Gi (the pod's writable /tmp, on the node's disk)", value=value)
    return value


TmpSize = Annotated[Quantity, AfterValidator(_tmp_size)]


def _non_root(value: int) -> int:
    if value == 0:
        raise fail(
            "0 is root; app pods run as non-root (Pod Security restricted): give a user id of 1 or more"
        )
    return value


class SecurityContext(_Model):
    """The container's overrides of Pod Security `restricted`'s defaults.

    Many images need their own user (`runAsNonRoot` alone refuses an image
    whose USER is a name, not a number) or a writable root filesystem."""

    run_as_user: Annotated[Int, AfterValidator(_non_root), in_range(1, 2**31 - 1)] | None = Field(
        None, alias="runAsUser"
    )
    run_as_group: Annotated[Int, in_range(0, 2**31 - 1)] | None = Field(None, alias="runAsGroup")
    read_only_root_filesystem: Bool = Field(True, alias="readOnlyRootFilesystem")
