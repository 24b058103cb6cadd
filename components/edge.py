"""Edge: HAProxy and keepalived together on every `role=load-balancer` host.

Creates: a ConfigMap with haproxy.cfg, a Secret with one keepalived.conf per
node, and one host-network DaemonSet `edge` whose pod runs haproxy,
keepalived, (with `vrrp.check.watch`) haproxy-watch and the vrrp-exporter
side by side: the seed's sidekick. With `bgp`, FRR (components/frr.py) takes
keepalived's and the exporter's place, its Secret (`frr-config`) keepalived's.
One pod, not two DaemonSets, because a change that touches
both (image bump, stats port, registry) would otherwise roll them
independently, possibly on different nodes at once: both LB hosts unhealthy
together and the VIP gone. One DaemonSet with maxUnavailable 1 replaces the
pair on one node at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import frr
from components.edge_pod import (
    COOKIE_SECRET,
    COOKIE_SECRET_CHARS,
    COOKIE_SECRET_KEY,
    HANDOFF_SECRET,
    HANDOFF_SECRET_CHARS,
    HANDOFF_SECRET_KEY,
    HAPROXY_CONFIG_FILE,
    HAPROXY_CONFIG_VOLUME,
    HAPROXY_RUN_VOLUME,
    KEEPALIVED_CONFIG_VOLUME,
    KEEPALIVED_RUN_VOLUME,
    NAME,
    SHARED_VOLUME,
    TICKET_SECRET,
    TICKET_SECRET_VOLUME,
)
from components.k8s import edge_pod_spec, labels, one_node_at_a_time
from components.keepalived import keepalived_container, render_all, steer_container, watch_container
from components.load_balancer import (
    drain_timeout_s,
    haproxy_config,
    haproxy_container,
    reload_container,
    tls_container,
    tls_volumes,
)
from components.monitoring import exporter_container
from components.settings import Settings

# The objects' names: the ConfigMap and the Secret the volumes come from.
HAPROXY_CONFIG = "haproxy-config"
KEEPALIVED_CONFIG = "keepalived-config"
FRR_CONFIG = "frr-config"


def tls_pod_volumes(s: Settings) -> list[k8s.core.v1.VolumeArgsDict]:
    """The certificates' Secrets (optional: one cert-manager has not issued yet
    leaves its service on the default certificate, not the pod unstarted) and
    the shared ticket secret; 0444 because haproxy-tls (uid 65534) reads them,
    the only container that mounts them."""
    if not s.tls_services:
        return []
    volumes: list[k8s.core.v1.VolumeArgsDict] = [
        {"name": volume, "secret": {"secret_name": secret, "default_mode": 0o444, "optional": True}}
        for volume, secret in tls_volumes(s)
    ]
    if s.tls.session_tickets == "shared":
        volumes.append(
            {"name": TICKET_SECRET_VOLUME, "secret": {"secret_name": TICKET_SECRET, "default_mode": 0o444}}
        )
    return volumes


@dataclass(frozen=True)
class EdgeArgs:
    settings: Settings
    namespace: pulumi.Input[str]
    haproxy_image: pulumi.Input[str]
    keepalived_image: pulumi.Input[str]
    auth_pass: pulumi.Input[str] | None = None
    pull_secret: pulumi.Input[str] | None = None
    # With bgp: the FRR image, and the peers' passwords by address (a Pulumi secret).
    frr_image: pulumi.Input[str] | None = None
    bgp_passwords: pulumi.Input[Mapping[str, str]] | None = None


# After the preStop the VIP is elsewhere and the handoff's steering has ended:
# what is still open here cannot reach this node any more, so the soft stop is
# bounded by this, not by hard-stop-after (which bounds a reload's old worker).
SOFT_STOP_S = 30


def termination_grace_s(s: Settings) -> int:
    """The preStop (the VIP handed over first) + HAProxy's bounded soft stop + a margin."""
    return drain_timeout_s(s) + SOFT_STOP_S + 5


def minted_secret(
    name: str, secret: str, key: str, chars: int, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """A Secret holding one pulumi_random key: a Pulumi secret from the start, never a literal."""
    value = random.RandomPassword(name, length=chars, special=False, opts=opts)
    return k8s.core.v1.Secret(
        name,
        metadata={"name": secret, "namespace": namespace, "labels": labels(NAME, "load-balancer")},
        type="Opaque",
        string_data={key: pulumi.Output.secret(value.result)},  # type: ignore[arg-type]
        opts=opts,
    )


class Edge(pulumi.ComponentResource):
    """The edge DaemonSet and the configs it mounts."""

    vip: str
    nodes: list[str]
    haproxy_config: str

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        s = args.settings
        if (args.auth_pass is None) != (s.vrrp_auth_pass is None):  # before registering anything
            raise ValueError("auth_pass must be given exactly when settings.vrrp_auth_pass is set")
        if (args.frr_image is None) != (s.bgp is None):
            raise ValueError("frr_image must be given exactly when settings.bgp is set")
        if (args.bgp_passwords is None) != (s.bgp is None or not s.bgp.passwords):
            raise ValueError("bgp_passwords must be given exactly when a bgp peer has a password")
        super().__init__("rancher-ha-lb:index:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.haproxy_config = haproxy_config(s)
        meta_labels = labels(NAME, "load-balancer")
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-haproxy-config",
            metadata={"name": HAPROXY_CONFIG, "namespace": args.namespace, "labels": meta_labels},
            data={HAPROXY_CONFIG_FILE: self.haproxy_config},
            opts=child,
        )
        # Minted once and kept in state as secrets: every pod, and every `pulumi up`,
        # hashes the same pod to the same cookie (and, with VRRP, signs handoffs with the same key).
        cookie_secret = minted_secret(
            f"{name}-cookie-key", COOKIE_SECRET, COOKIE_SECRET_KEY, COOKIE_SECRET_CHARS, args.namespace, child
        )
        minted = [cookie_secret]
        containers = [
            haproxy_container(s, args.haproxy_image),
            reload_container(s, args.haproxy_image),
            *([tls_container(s, args.haproxy_image)] if s.tls_services else []),
        ]
        # Handoffs (VRRP) and withdrawals (BGP) are signed with it alike.
        minted.append(
            minted_secret(
                f"{name}-handoff-key",
                HANDOFF_SECRET,
                HANDOFF_SECRET_KEY,
                HANDOFF_SECRET_CHARS,
                args.namespace,
                child,
            )
        )
        if s.bgp is None:
            # One keepalived.conf (and nftables table) per node; secret when it carries the auth_pass.
            secret = config_secret(
                f"{name}-keepalived-config", KEEPALIVED_CONFIG, args, meta_labels, child,
                lambda p: render_all(s, p), args.auth_pass,
            )  # fmt: skip
            containers.append(keepalived_container(s, args.keepalived_image))
            if s.vrrp.check.watch:
                containers.append(watch_container(s, args.keepalived_image))
            containers.append(exporter_container(s, args.keepalived_image))
            config_volumes: list[k8s.core.v1.VolumeArgsDict] = [
                {
                    "name": KEEPALIVED_CONFIG_VOLUME,
                    "secret": {"secret_name": secret.metadata.name, "default_mode": 0o400},
                },
                {"name": KEEPALIVED_RUN_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
            ]
        else:
            assert args.frr_image is not None
            # One frr.conf (and nftables table) per node; the peers' passwords stay a Pulumi secret.
            secret = config_secret(
                f"{name}-frr-config", FRR_CONFIG, args, meta_labels, child,
                lambda p: frr.render_all(s, p or {}), args.bgp_passwords,
            )  # fmt: skip
            containers.append(frr.frr_container(s, args.frr_image))
            # steer and haproxy-watch live in the keepalived image.
            containers.append(steer_container(s, args.keepalived_image))
            if s.vrrp.check.watch:
                containers.append(watch_container(s, args.keepalived_image))
            config_volumes = frr.frr_volumes(secret.metadata.name)
        run_size = "16Mi" if s.tls_services else "1Mi"
        volumes: list[k8s.core.v1.VolumeArgsDict] = [
            {"name": HAPROXY_CONFIG_VOLUME, "config_map": {"name": config_map.metadata.name}},
            *config_volumes,
            # With HTTPS it also holds the checked certificates (a few KiB each).
            {"name": HAPROXY_RUN_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": run_size}},
            {"name": SHARED_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
        ]
        volumes += tls_pod_volumes(s)
        pod_spec = edge_pod_spec(containers, volumes, termination_grace_s(s), s.load_balancer.tolerations)
        if args.pull_secret is not None:
            pod_spec["image_pull_secrets"] = [{"name": args.pull_secret}]
        k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={"name": NAME, "namespace": args.namespace, "labels": meta_labels},
            spec=one_node_at_a_time(NAME, meta_labels, pod_spec),
            # The pods' env reads the key: it exists before they start.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=minted)),
        )
        self.vip = str(s.vip.ip)
        self.nodes = s.lb_nodes
        self.register_outputs({"vip": self.vip, "nodes": self.nodes})


def config_secret(
    resource: str,
    secret_name: str,
    args: EdgeArgs,
    meta_labels: dict[str, str],
    child: pulumi.ResourceOptions,
    render: Callable[[Any], dict[str, str]],
    key: pulumi.Input[Any] | None,
) -> k8s.core.v1.Secret:
    """The daemon's per-node configs (`render(None)` without a key); rendered inside `key`'s
    apply when there is one, so the output stays a Pulumi secret and the key never leaves it in plain."""
    configs: pulumi.Input[dict[str, str]] = (
        render(None) if key is None else pulumi.Output.secret(key).apply(render)
    )
    return k8s.core.v1.Secret(
        resource,
        metadata={"name": secret_name, "namespace": args.namespace, "labels": meta_labels},
        type="Opaque",
        string_data=configs,
        opts=child,
    )
