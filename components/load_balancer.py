"""HAProxy in the edge pod: its container and its config.

The config (from the pure renderer, backends found through DNS of each app's
headless Service) goes into a ConfigMap; `haproxy_container` is the pod's
HAProxy container. `components/edge.py` puts both into the edge DaemonSet.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.haproxy_cfg import HOST_IP_ENV, dns_backends, render_haproxy_cfg
from components.k8s import host_ip_env, resources
from components.settings import Settings

NAME = "haproxy"
CONFIG_DIR = "/usr/local/etc/haproxy"
CONFIG_FILE = "haproxy.cfg"
CONFIG_VOLUME = "haproxy-config"
# A non-root user cannot bind :80 here: with host networking there is no
# per-pod ip_unprivileged_port_start, and capabilities added for a non-root
# user are not effective (no ambient capabilities in Kubernetes). So uid 0
# with every capability dropped but NET_BIND_SERVICE, no escalation, a
# read-only root filesystem.
ROOT = 0
CAPABILITIES = ("NET_BIND_SERVICE",)


def haproxy_config(s: Settings) -> str:
    """The cluster's haproxy.cfg: app pods found through their headless Services."""
    return render_haproxy_cfg(s, dns_backends(s))


def haproxy_container(s: Settings, image: pulumi.Input[str]) -> k8s.core.v1.ContainerArgsDict:
    """HAProxy, master-worker, in the foreground; its health and metrics on the stats port."""
    lb = s.load_balancer
    health: k8s.core.v1.HTTPGetActionArgsDict = {"path": "/healthz", "port": "stats"}
    return {
        "name": NAME,
        "image": image,
        "args": ["haproxy", "-W", "-db", "-f", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        # The stats frontend binds this address and loopback, not the VIP.
        "env": [host_ip_env(HOST_IP_ENV)],
        "ports": [
            {"name": "http", "container_port": lb.http_port, "host_port": lb.http_port},
            {"name": "stats", "container_port": lb.stats_port, "host_port": lb.stats_port},
        ],
        "readiness_probe": {"http_get": health, "period_seconds": 2, "failure_threshold": 1},
        "liveness_probe": {"http_get": health, "period_seconds": 10, "failure_threshold": 3},
        "resources": resources(lb.resources),
        "security_context": {
            "run_as_user": ROOT,
            "allow_privilege_escalation": False,
            "privileged": False,
            "read_only_root_filesystem": True,
            "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
        },
        "volume_mounts": [{"name": CONFIG_VOLUME, "mount_path": CONFIG_DIR, "read_only": True}],
    }
