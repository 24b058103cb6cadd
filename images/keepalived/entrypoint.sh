#!/bin/sh
# Start keepalived for this node. The same script runs in the cluster (as the
# DaemonSet's PID 1) and in the local lab (the same pod, under the lab's kubelet).
#
# Environment:
#   NODE_NAME             this node (downward API spec.nodeName): picks the config
#   KEEPALIVED_VIP        the VIP with prefix, e.g. 10.10.10.2/24
#   KEEPALIVED_INTERFACE  the interface that carries it
#   KEEPALIVED_CONFIG_DIR where <NODE_NAME>.conf lives (default /etc/keepalived/nodes)
#   KEEPALIVED_PID_DIR    where keepalived's pid files go (default /run/keepalived)
#   HALB_STEER_LISTEN, HALB_STEER_PORT, HALB_STEER_PEERS, HALB_STEER_VIP, HALB_STEER_PORTS,
#   HALB_STEER_STATE_FILE (optional, together, with HALB_HANDOFF_KEY): run halb-keepalived steer
#                         on this address and UDP port for these peers (comma-separated), so a
#                         peer handing the VIP over keeps its connections to the VIP's traffic
#                         PORTS (see halb-keepalived); its counts go to STATE_FILE
# <NODE_NAME>.nft beside the config, if present: this node's nftables table (VRRP only from
# the peers, ...), loaded before keepalived starts and again when it changes.
# Extra arguments are passed to keepalived.
set -eu

: "${NODE_NAME:?NODE_NAME is not set; give it spec.nodeName through the downward API}"
: "${KEEPALIVED_VIP:?KEEPALIVED_VIP is not set (address/prefix)}"
: "${KEEPALIVED_INTERFACE:?KEEPALIVED_INTERFACE is not set}"
conf="${KEEPALIVED_CONFIG_DIR:-/etc/keepalived/nodes}/${NODE_NAME}.conf"
pid_dir="${KEEPALIVED_PID_DIR:-/run/keepalived}"

if [ ! -r "$conf" ]; then
    echo "keepalived-entrypoint: no config for node '$NODE_NAME' at $conf" >&2
    exit 64
fi

# A predecessor killed with SIGKILL never withdrew the VIP. Left in place, this
# node would answer ARP for it while another node is MASTER.
if ip addr del "$KEEPALIVED_VIP" dev "$KEEPALIVED_INTERFACE" 2>/dev/null; then
    echo "keepalived-entrypoint: removed stale VIP $KEEPALIVED_VIP from $KEEPALIVED_INTERFACE"
fi

# Pid files of a killed predecessor outlive it (the pod's /run survives a
# container restart). Their PID may now be ours (PID 1), and keepalived would
# exit with "daemon is already running". Nothing else runs keepalived here.
mkdir -p "$pid_dir"
rm -f "$pid_dir/keepalived.pid" "$pid_dir/vrrp.pid" "$pid_dir/checker.pid"

# The table first: VRRP from anyone but the peers is never seen. A table nft
# refuses is a stop, not a start without it.
halb=/usr/local/bin/halb-keepalived
table="${conf%.conf}.nft"
if [ -r "$table" ]; then
    "$halb" firewall --file "$table" || { echo "keepalived-entrypoint: cannot load $table" >&2; exit 1; }
else
    table=""
fi

echo "keepalived-entrypoint: node $NODE_NAME, config $conf"
# Beside keepalived (they become its children and die with the container):
# config reloads in place, and the steering a peer's handoff asks for.
if [ -x "$halb" ]; then
    if [ -n "$table" ]; then
        "$halb" watch-config --config "$conf" --firewall "$table" &
    else
        "$halb" watch-config --config "$conf" &
    fi
    if [ -n "${HALB_STEER_PORT:-}" ]; then
        : "${HALB_HANDOFF_KEY:?HALB_HANDOFF_KEY is not set; give the container the handoff Secret's key}"
        "$halb" steer --listen "$HALB_STEER_LISTEN" --port "$HALB_STEER_PORT" --peers "$HALB_STEER_PEERS" \
            --vip "$HALB_STEER_VIP" --ports "$HALB_STEER_PORTS" --interface "$KEEPALIVED_INTERFACE" \
            --state-file "$HALB_STEER_STATE_FILE" &
    fi
fi
# The real-time VRRP process's RLIMIT_RTTIME is set here, not by keepalived:
# keepalived 2.2.7 resets it on every reload to a never-read zero limit (its
# orig_rlimit_rt), cannot raise it back without CAP_SYS_RESOURCE, and the
# kernel then kills the process at its next tick as real-time. Lowering needs
# no capability; the config asks for more than this hard limit, so keepalived's
# own attempt fails (it logs "cannot set realtime rlimit") and it never resets.
# microseconds of CPU between blocking calls: SIGXCPU at the first, SIGKILL at the second
rttime=100000:200000
# exec: keepalived becomes PID 1 and gets SIGTERM itself, so it sends its
# priority-0 advert and releases the VIP at once.
exec prlimit --rttime="$rttime" keepalived --dont-fork --log-console --log-detail --use-file "$conf" \
    --pid "$pid_dir/keepalived.pid" --vrrp_pid "$pid_dir/vrrp.pid" --checkers_pid "$pid_dir/checker.pid" \
    "$@"
