"""HAProxy in the edge pod: its container and its config.

The config (from the pure renderer, backends found through DNS of each app's
headless Service) goes into a ConfigMap; `haproxy_container` is the pod's
HAProxy container. `components/edge.py` puts both into the edge DaemonSet.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.edge_pod import (
    ADMIN_SOCKET,
    BGP_STATE_FILE,
    COOKIE_KEY_ENV,
    COOKIE_SECRET,
    COOKIE_SECRET_KEY,
    HALB_HAPROXY,
    HALB_TLS,
    HANDOFF_DONE_FILE,
    HANDOFF_STARTED_FILE,
    HAPROXY,
    HAPROXY_CONFIG_DIR,
    HAPROXY_CONFIG_FILE,
    HAPROXY_CONFIG_VOLUME,
    HAPROXY_RUN_DIR,
    HAPROXY_RUN_VOLUME,
    HOST_IP,
    HTTP_PORT_NAME,
    HTTPS_PORT_NAME,
    MASTER_SOCKET,
    RELOAD,
    RELOAD_STATUS,
    SERVER_STATE_FILE,
    SHARED_DIR,
    SHARED_VOLUME,
    STATS_PORT_NAME,
    TICKET_KEYS_FILE,
    TICKET_SECRET_DIR,
    TICKET_SECRET_KEY,
    TICKET_SECRET_VOLUME,
    TLS,
    TLS_CERTS_DIR,
    TLS_DEFAULT_CERT,
    TLS_READY_ENV,
    TLS_READY_FILE,
    TLS_SECRETS_DIR,
    TLS_STATUS_FILE,
)
from components.haproxy_cfg import dns_backends, render_haproxy_cfg, vip_leave_s
from components.k8s import host_ip_env, resources, root_with, unprivileged
from components.settings import Settings
from components.settings.capacity import memory_limit
from components.settings.tls import certificate_secrets
from components.values import duration_seconds

# A non-root user cannot bind :80 here: with host networking there is no
# per-pod ip_unprivileged_port_start, and capabilities added for a non-root
# user are not effective (no ambient capabilities in Kubernetes). So uid 0
# with every capability dropped but NET_BIND_SERVICE, no escalation, a
# read-only root filesystem.
CAPABILITIES = ("NET_BIND_SERVICE",)


def haproxy_config(s: Settings) -> str:
    """The cluster's haproxy.cfg: app pods found through their headless Services."""
    return render_haproxy_cfg(s, dns_backends(s))


def drain_timeout_s(s: Settings) -> int:
    """The haproxy container's preStop budget: the VIP handed over (drain) or moved."""
    return vip_leave_s(s) + int(s.vrrp.handoff.drain_seconds + 0.999) + 3


def tls_secrets(s: Settings) -> list[str]:
    """Every certificate Secret the edge serves, the default certificate's first."""
    default = s.default_tls_service
    ordered = ([default] if default else []) + [svc for svc in s.tls_services if svc is not default]
    names: list[str] = []
    for svc in ordered:
        assert svc.tls is not None
        names += [n for n in certificate_secrets(svc.name, svc.tls) if n not in names]
    return names


def tls_volumes(s: Settings) -> list[tuple[str, str]]:
    """(volume, Secret) per certificate Secret: volume names are short labels, Secret names need not be."""
    return [(f"tls-{i}", name) for i, name in enumerate(tls_secrets(s))]


def cookie_key_env() -> k8s.core.v1.EnvVarArgsDict:
    """The sticky-cookie key, from the Secret the Edge mints (never a literal)."""
    return {
        "name": COOKIE_KEY_ENV,
        "value_from": {"secret_key_ref": {"name": COOKIE_SECRET, "key": COOKIE_SECRET_KEY}},
    }


# HAProxy's scheduling niceness: the idle CPU is all its own, keepalived goes first.
HAPROXY_NICE = 10


def haproxy_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """HAProxy, master-worker, in the foreground; its health and metrics on the stats port."""
    lb = s.load_balancer
    tls = bool(s.tls_services)
    env: list[k8s.core.v1.EnvVarArgsDict] = [host_ip_env(HOST_IP), cookie_key_env()]
    ports: list[k8s.core.v1.ContainerPortArgsDict] = [
        {"name": HTTP_PORT_NAME, "container_port": lb.http_port, "host_port": lb.http_port}
    ]
    if tls:
        env.append({"name": TLS_READY_ENV, "value": TLS_READY_FILE})
        ports.append({"name": HTTPS_PORT_NAME, "container_port": lb.https_port, "host_port": lb.https_port})
    ports.append({"name": STATS_PORT_NAME, "container_port": lb.stats_port, "host_port": lb.stats_port})
    # Each tcpPort: host networking binds it anyway; declared so the scheduler sees the clash.
    tcp_ports = [svc.tcp_port for svc in s.services if svc.tcp_port is not None]
    ports += [
        {"name": f"tcp-{i}", "container_port": port, "host_port": port, "protocol": "TCP"}
        for i, port in enumerate(tcp_ports)
    ]
    health: k8s.core.v1.HTTPGetActionArgsDict = {"path": "/healthz", "port": STATS_PORT_NAME}
    drain = [
        HALB_HAPROXY, "drain", "--socket", MASTER_SOCKET, "--vip", str(s.vip.ip),
        "--started-file", HANDOFF_STARTED_FILE, "--done-file", HANDOFF_DONE_FILE,
        "--timeout", str(drain_timeout_s(s)),
    ]  # fmt: skip
    if s.bgp is not None:
        # The VIP stays on `lo` in BGP mode: the host has left when halb-bgp has withdrawn it.
        drain += ["--withdrawn-file", BGP_STATE_FILE]
    return {
        "name": HAPROXY,
        "image": image,
        # -S: the master CLI, for `reload` (the sidecar) and the drain (preStop);
        # mode 666 in the pod's own emptyDir, which only this pod mounts.
        # nice 10 (no privilege needed): on a saturated host keepalived's adverts go
        # first, or the BACKUP takes the VIP and meets the same load (tests/test_lab_hostile.py).
        "args": [
            "nice",
            "-n",
            str(HAPROXY_NICE),
            "haproxy",
            "-W",
            "-db",
            "-S",
            f"{MASTER_SOCKET},mode,666",
            "-f",
            f"{HAPROXY_CONFIG_DIR}/{HAPROXY_CONFIG_FILE}",
        ],
        "lifecycle": {"pre_stop": {"exec_": {"command": drain}}},
        # The stats frontend binds this address and loopback, not the VIP.
        # With HTTPS the entrypoint waits for haproxy-reload's checked certificates.
        "env": env,
        "ports": ports,
        "readiness_probe": {"http_get": health, "period_seconds": 2, "failure_threshold": 1},
        "liveness_probe": {"http_get": health, "period_seconds": 10, "failure_threshold": 3},
        # The limit follows maxConn unless the stack sets it (settings/capacity.py).
        "resources": resources(lb.resources.model_copy(update={"memory_limit": memory_limit(s)})),
        "security_context": root_with(CAPABILITIES),
        "volume_mounts": [
            {"name": HAPROXY_CONFIG_VOLUME, "mount_path": HAPROXY_CONFIG_DIR, "read_only": True},
            {"name": HAPROXY_RUN_VOLUME, "mount_path": HAPROXY_RUN_DIR},
            # keepalived's handoff says there when it is done.
            {"name": SHARED_VOLUME, "mount_path": SHARED_DIR, "read_only": True},
        ],
    }


def reload_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """The haproxy-reload sidecar (HAProxy's image: it runs `haproxy -c`).

    A changed ConfigMap reaches the pod in place (the kubelet's sync); this
    checks it and reloads HAProxy hitlessly, so a config change restarts
    nothing and moves no VIP. Unprivileged: a check and a unix socket."""
    return {
        "name": RELOAD,
        "image": image,
        "command": [
            HALB_HAPROXY,
            "watch-config",
            "--config",
            f"{HAPROXY_CONFIG_DIR}/{HAPROXY_CONFIG_FILE}",
            "--socket",
            MASTER_SOCKET,
            "--status",
            RELOAD_STATUS,
            "--state-file",
            SERVER_STATE_FILE,
            # A certificate new to the directory is loaded by a reload (a renewal is not: haproxy-tls).
            *(["--watch-dir", TLS_CERTS_DIR, "--wait-for", TLS_READY_FILE] if s.tls_services else []),
        ],
        # The config's `.if defined(...)` guards must see what HAProxy sees.
        "env": [host_ip_env(HOST_IP), cookie_key_env()],
        "resources": resources(s.keepalived.resources),
        "security_context": unprivileged(),
        "volume_mounts": [
            {"name": HAPROXY_CONFIG_VOLUME, "mount_path": HAPROXY_CONFIG_DIR, "read_only": True},
            {"name": HAPROXY_RUN_VOLUME, "mount_path": HAPROXY_RUN_DIR},
        ],
    }


def tls_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """The haproxy-tls sidecar (HAProxy's image, uid 65534, no capabilities): the only
    container that mounts the certificates' Secrets; it checks each pair and keeps
    the good ones for HAProxy, and derives the shared session-ticket keys."""
    return {
        "name": TLS,
        "image": image,
        "command": [HALB_TLS, "watch", *_tls_args(s)],
        "resources": resources(s.keepalived.resources),
        "security_context": unprivileged(),
        "volume_mounts": [{"name": HAPROXY_RUN_VOLUME, "mount_path": HAPROXY_RUN_DIR}, *_tls_mounts(s)],
    }


def _tls_args(s: Settings) -> list[str]:
    """The certificates to check and keep for HAProxy, the ticket keys to derive."""
    args = [
        "--secrets", TLS_SECRETS_DIR, "--certs-dir", TLS_CERTS_DIR, "--default-cert", TLS_DEFAULT_CERT,
        "--ready", TLS_READY_FILE, "--status", TLS_STATUS_FILE, "--admin-socket", ADMIN_SOCKET,
    ]  # fmt: skip
    for name in tls_secrets(s):
        args += ["--certificate", name]
    if s.tls.session_tickets == "shared":
        args += [
            "--ticket-secret", f"{TICKET_SECRET_DIR}/{TICKET_SECRET_KEY}", "--ticket-keys", TICKET_KEYS_FILE,
            "--ticket-period", f"{duration_seconds(s.tls.ticket_key_rotation):g}",
        ]  # fmt: skip
    return args


def _tls_mounts(s: Settings) -> list[k8s.core.v1.VolumeMountArgsDict]:
    mounts: list[k8s.core.v1.VolumeMountArgsDict] = [
        {"name": volume, "mount_path": f"{TLS_SECRETS_DIR}/{secret}", "read_only": True}
        for volume, secret in tls_volumes(s)
    ]
    if s.tls.session_tickets == "shared":
        mounts.append({"name": TICKET_SECRET_VOLUME, "mount_path": TICKET_SECRET_DIR, "read_only": True})
    return mounts
