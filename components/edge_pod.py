"""The edge pod's contract: what its containers, the images' helpers and the lab agree on.

Names, paths, volumes, environment and ports of the one `edge` DaemonSet's
pod, defined once. The images (images/*) read the same names: their
entrypoints and helpers take the environment named here (`STEER_ENV`:
one variable a field, no positional words to split) and the paths as flags.
"""

from __future__ import annotations

NAME = "edge"  # the DaemonSet, and `app.kubernetes.io/name` of its pods

# Containers.
HAPROXY = "haproxy"
RELOAD = "haproxy-reload"
KEEPALIVED = "keepalived"
WATCH = "haproxy-watch"
# With bgp: halb-keepalived's steer listener alone (the keepalived image), so a
# host that withdraws keeps its long-lived connections for the drain, as in VRRP mode.
STEER = "steer"
EXPORTER = "vrrp-exporter"
TLS = "haproxy-tls"  # with HTTPS
FRR = "frr"  # with bgp, in place of keepalived and the vrrp-exporter

# The images' helpers.
HALB_HAPROXY = "/usr/local/bin/halb-haproxy"
HALB_KEEPALIVED = "/usr/local/bin/halb-keepalived"
HALB_TLS = "/usr/local/bin/halb-tls"
HALB_BGP = "/usr/local/bin/halb-bgp"
WATCH_BIN = f"/usr/local/bin/{WATCH}"
EXPORTER_BIN = f"/usr/local/bin/{EXPORTER}"

# HAProxy's config (a ConfigMap) and its runtime directory (an emptyDir shared
# with haproxy-reload: the master CLI, for hitless reloads and the drain).
HAPROXY_CONFIG_VOLUME = "haproxy-config"
HAPROXY_CONFIG_DIR = "/usr/local/etc/haproxy"
HAPROXY_CONFIG_FILE = "haproxy.cfg"
HAPROXY_RUN_VOLUME = "haproxy-run"
HAPROXY_RUN_DIR = "/run/haproxy"
MASTER_SOCKET = f"{HAPROXY_RUN_DIR}/master.sock"
RELOAD_STATUS = f"{HAPROXY_RUN_DIR}/reload.json"
# Servers found by DNS keep their addresses across a reload: haproxy-reload
# saves `show servers state` here, the new worker starts from it.
SERVER_STATE_FILE = f"{HAPROXY_RUN_DIR}/server-state"

# keepalived's configs (a Secret: `<node>.conf` each) and its pid files.
KEEPALIVED_CONFIG_VOLUME = "keepalived-config"
KEEPALIVED_CONFIG_DIR = "/etc/keepalived/nodes"
KEEPALIVED_RUN_VOLUME = "keepalived-run"
KEEPALIVED_RUN_DIR = "/run/keepalived"

# A bgp stack's FRR: its configs (a Secret: `<node>.conf` and `<node>.nft`
# each), and two emptyDirs: /etc/frr, where halb-bgp writes the running
# frr.conf, and the daemons' sockets and pid files.
FRR_CONFIG_VOLUME = "frr-config"
FRR_CONFIG_DIR = "/etc/halb/frr"
FRR_ETC_VOLUME = "frr-etc"
FRR_ETC_DIR = "/etc/frr"
FRR_RUN_VOLUME = "frr-run"
FRR_RUN_DIR = "/run/frr"

# The emptyDir keepalived, haproxy-watch, the exporter and HAProxy's preStop
# share. (Its volume name, `watch`, is older than most of what it holds.)
SHARED_VOLUME = "watch"
SHARED_DIR = "/run/halb"
# haproxy-watch writes 1 here when HAProxy is down; keepalived tracks it.
HAPROXY_DOWN_FILE = f"{SHARED_DIR}/haproxy-down"
# keepalived writes `INSTANCE "VI_1" MASTER 200` here on every state change;
# the exporter reads it.
NOTIFY_FIFO = f"{SHARED_DIR}/vrrp-notify.fifo"
EXPORTER_STATE_FILE = f"{SHARED_DIR}/{EXPORTER}.json"
# Written by the preStop (halb-keepalived handoff): 1 = this node is going
# away; the instance leaves MASTER at once (a priority-0 advert) and stays out.
DRAIN_FILE = f"{SHARED_DIR}/draining"
# ... when it begins and when it is done handing over: HAProxy's preStop waits for it.
HANDOFF_STARTED_FILE = f"{SHARED_DIR}/handoff-started"
HANDOFF_DONE_FILE = f"{SHARED_DIR}/handoff-done"
# With bgp: what halb-bgp announces and why (its preStop and the lab read it).
BGP_STATE_FILE = f"{SHARED_DIR}/bgp.json"
# With bgp: steer writes 1 here once the peers were told to steer this host's
# flows back; halb-bgp withdraws a draining host only then.
TOLD_FILE = f"{SHARED_DIR}/handoff-told"

# Environment.
HOST_IP = "HOST_IP"  # downward API status.hostIP: the node's own address
NODE_NAME = "NODE_NAME"  # downward API spec.nodeName: picks `<node>.conf`
KEEPALIVED_VIP = "KEEPALIVED_VIP"
KEEPALIVED_INTERFACE = "KEEPALIVED_INTERFACE"
KEEPALIVED_CONFIG_DIR_ENV = "KEEPALIVED_CONFIG_DIR"
# The steering listener (`halb-keepalived steer`, started by the keepalived
# entrypoint) and the handoff (its preStop) read these, one field each.
STEER_ENV = {
    "listen": "HALB_STEER_LISTEN",  # this node's address
    "port": "HALB_STEER_PORT",  # the peers' UDP steering port
    "peers": "HALB_STEER_PEERS",  # every load-balancer host's address, comma-separated
    "vip": "HALB_STEER_VIP",  # the VIP, without prefix
    "ports": "HALB_STEER_PORTS",  # the ports whose flows are steered, comma-separated
    "state_file": "HALB_STEER_STATE_FILE",  # its counts of handoff messages, for the exporter
}

# Port names (the PodMonitors and probes select by them).
HTTP_PORT_NAME = "http"
STATS_PORT_NAME = "stats"
EXPORTER_PORT_NAME = "vrrp-metrics"
BGP_METRICS_PORT_NAME = "bgp-metrics"  # halb-bgp's /metrics, at vrrp.metricsPort in the exporter's place

# HTTPS. Each certificate's Secret is a volume under TLS_SECRETS_DIR
# (`<secret>/tls.crt`, `tls.key`), mounted in haproxy-tls only: it checks
# each pair and keeps the good ones in TLS_DIR (in HAPROXY_RUN_VOLUME, which
# HAProxy reads), so a malformed or mismatched renewal is never loaded, not
# even on a restart.
HTTPS_PORT_NAME = "https"
TLS_SECRETS_DIR = "/etc/haproxy/tls"
TLS_DIR = f"{HAPROXY_RUN_DIR}/tls"
TLS_DEFAULT_CERT = f"{TLS_DIR}/default.pem"  # the first certificate of the bind: clients without SNI
TLS_CERTS_DIR = f"{TLS_DIR}/certs"  # one `<secret>.pem` (chain and key) per good pair
TLS_READY_FILE = f"{TLS_DIR}/ready"  # HAProxy starts once haproxy-tls has put the certificates in place
TLS_READY_ENV = "HALB_TLS_READY"  # the haproxy image's entrypoint waits for this file
TLS_STATUS_FILE = f"{HAPROXY_RUN_DIR}/tls.json"  # what haproxy-tls loaded or refused, and why
# Session tickets shared by every load-balancer host: each derives the same keys
# from this Secret's `secret` and the clock (halb-haproxy ticket-keys).
TICKET_SECRET = "edge-tls-tickets"
TICKET_SECRET_KEY = "secret"
TICKET_SECRET_VOLUME = "tls-tickets"
TICKET_SECRET_DIR = "/etc/haproxy/tickets"
TICKET_KEYS_FILE = f"{TLS_DIR}/ticket-keys"
# Sticky cookies name a pod by a hash under this key; every edge pod reads the
# same Secret, so a cookie holds across a failover. Always present (a service
# turning sticky is then a hitless reload, not a pod roll).
COOKIE_KEY_ENV = "HALB_COOKIE_KEY"
COOKIE_SECRET = "edge-cookie-key"
COOKIE_SECRET_KEY = "key"
COOKIE_SECRET_CHARS = 32
# The nftables table the new MASTER's steer listener adds for a handoff's drain
# (images/keepalived/halb-keepalived's STEER_TABLE); the lab reads its counters.
STEER_TABLE = "halb_steer"
# Handoff messages between the load-balancer hosts carry an HMAC under this
# key (halb-keepalived), the same on every host: a Secret minted once, read by
# the keepalived container (its steer listener and its preStop).
HANDOFF_KEY_ENV = "HALB_HANDOFF_KEY"
HANDOFF_SECRET = "edge-handoff-key"
HANDOFF_SECRET_KEY = "key"
HANDOFF_SECRET_CHARS = 43  # 256 bits of [A-Za-z0-9]
# The steer listener's counts of handoff messages (accepted, refused and why); the exporter reads it.
STEER_STATE_FILE = f"{SHARED_DIR}/steer.json"
# HAProxy's runtime API (certificate updates, ticket key rotation without a reload).
ADMIN_SOCKET = f"{HAPROXY_RUN_DIR}/admin.sock"
