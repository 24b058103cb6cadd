"""Pure renderer: Settings + node name -> that node's nftables table (`halb_edge`).

keepalived's container loads it into the host's network namespace at start
(images/keepalived/entrypoint.sh, one `nft -f` transaction: the old table
goes and the new one comes at once), reloads it when the Secret changes, and
removes it when the container stops. It is the project's only table there:
nothing else is touched.

What it does, and why a rule rather than trust:
- VRRP (IP protocol 112) is accepted on the VIP's link only from the other
  load-balancer hosts, and only with TTL 255 (RFC 5798 5.1.1.3: an advert
  that crossed a router is not from the link). VRRPv3 has no authentication;
  without this, any host that can reach a load-balancer host could advertise
  priority 255 and take the VIP. A spoofer on the same L2 segment that
  forges a peer's address still passes: only a dedicated VLAN (or VRRPv2's
  auth_pass, a shared password in clear) stops that.
- The handoff port (UDP, vrrp.handoff.port) only from the peers; its
  messages are authenticated as well (HMAC, halb-keepalived).
- With loadBalancer.bindVipOnly: connections to the traffic ports addressed
  to anything but the VIP are dropped, so the hosts' own addresses serve no
  traffic (HAProxy binds 0.0.0.0 so a takeover needs no rebind).
With `bgp` (the FRR container loads the table instead, halb-bgp): no VRRP;
BGP (TCP 179) and BFD (UDP 3784, single-hop, RFC 5881: TTL 255 only) only
from the configured peers (the routers), so no one else can open a session
or fake a BFD Down; the handoff port only from the other load-balancer hosts
(the `hosts` set: a withdrawing host asks them to steer its flows back);
bindVipOnly as above.
Refusals are counted (named counters), for `lab fault` and the docs. A
`ct state` rule keeps conntrack on from the pod's start: a steering table
(halb-keepalived steer) must know which flows this host saw begin.
"""

from __future__ import annotations

from components.settings import Settings
from components.settings.capacity import traffic_listeners

TABLE = "halb_edge"
COUNTERS = ("vrrp_refused", "handoff_refused", "off_vip_refused")
BGP_COUNTERS = ("bgp_refused", "bfd_refused", "handoff_refused", "off_vip_refused")
BGP_PORT = 179
# RFC 5881: single-hop BFD control packets; 3785 is echo, which FRR's profile here does not use.
BFD_PORT = 3784
BFD_TTL = 255
# RFC 5798 5.1.1.3: sent with TTL 255, and a receiver drops any other.
VRRP_TTL = 255
# By number: the image has no /etc/protocols, so nft could not resolve `vrrp`.
VRRP_PROTO = 112


def traffic_ports(s: Settings) -> list[int]:
    """Every port HAProxy serves traffic on: HTTP, HTTPS, each tcpPort."""
    return [port for _, port in traffic_listeners(s)]


def render_edge_nft(s: Settings, node: str) -> str:
    """`nft -f` input for `node`: replaces the table atomically (first load or reload)."""
    if node not in s.lb_nodes:
        raise ValueError(f"{node!r} is not a load-balancer host (have: {', '.join(s.lb_nodes)})")
    iface = s.vip.interface
    ports = ", ".join(str(p) for p in traffic_ports(s))
    hosts = ", ".join(str(s.address(n)) for n in s.lb_nodes if n != node)
    sets = []
    if s.bgp is None:
        peers = hosts
        counters: tuple[str, ...] = COUNTERS
        rules = [
            f'    iifname "{iface}" ip protocol {VRRP_PROTO} ip saddr @peers ip ttl {VRRP_TTL} accept',
            f'    ip protocol {VRRP_PROTO} counter name "vrrp_refused" drop',
            f'    udp dport {s.vrrp.handoff.port} ip saddr != @peers counter name "handoff_refused" drop',
        ]
    else:  # the peers are the routers; the other load-balancer hosts send handoffs
        peers = ", ".join(str(p.address) for p in s.bgp.peers)
        counters = BGP_COUNTERS
        sets = ["  set hosts {", "    type ipv4_addr", f"    elements = {{ {hosts} }}", "  }"]
        rules = [
            f'    tcp dport {BGP_PORT} ip saddr != @peers counter name "bgp_refused" drop',
            f"    udp dport {BFD_PORT} ip saddr @peers ip ttl {BFD_TTL} accept",
            f'    udp dport {BFD_PORT} counter name "bfd_refused" drop',
            f'    udp dport {s.vrrp.handoff.port} ip saddr != @hosts counter name "handoff_refused" drop',
        ]
    if s.load_balancer.bind_vip_only:
        rules.append(
            f'    tcp dport {{ {ports} }} ip daddr != {s.vip.ip} counter name "off_vip_refused" drop'
        )
    lines = [
        f"# nftables table of the edge pod on {node}, rendered by rancher-ha-lb; do not edit.",
        # Declare, then delete: the same file loads the first time and every later time.
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        *(f"  counter {c} {{}}" for c in counters),
        "  set peers {",
        "    type ipv4_addr",
        f"    elements = {{ {peers} }}",
        "  }",
        *sets,
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        # A rule that reads conntrack makes the kernel track this host's connections from
        # their first packet (a namespace tracks none until one needs it). A steering table,
        # loaded later, tells a flow this host never saw begin by `ct state new`: a flow it
        # did not track would look new too, and be sent away (tests/test_bench.py's smoke run).
        "    ct state invalid counter",
        *rules,
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)
