"""The `halb` command line: tools beside the Pulumi program.

    halb render --stack NAME [--config-file PATH] --out DIR
    halb lab up [--stack lab | --config-file PATH]
    halb lab status [--json]
    halb lab request [--count N] [--service NAME]
    halb lab fault KIND [--node NAME]
    halb lab handoff
    halb lab apply [--stack NAME | --config-file PATH]
    halb lab renew SERVICE
    halb lab drain NODE | uncordon NODE
    halb lab down
    halb demo
    halb bench failover [--runs N] [--json FILE] [--markdown FILE] [--chart FILE]
        [--faults F,...] [--profiles P,...] [--https] [--load-seconds S]
    halb bench tls [--seconds S] [--renewals N] [--sessions N] [--json FILE] [--markdown FILE] [--chart FILE]
    halb bench stall [--runs N] [--timers 100x3,..] [--modes bgp,vrrp]
        [--json FILE] [--markdown FILE] [--chart FILE]
    halb bench bgp [--runs N] [--seconds S] [--parts P,..] [--json FILE] [--markdown FILE] [--chart FILE]
    halb bench changes [--runs N] [--changes C,...] [--modes M,...] [--json FILE]
        [--markdown FILE] [--chart FILE]

Exit codes: 0 done, 1 the lab could not do it (message says why), 2 bad
input (settings, flags, paths) with one line per problem and nothing written
or started.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.problems import InputError
from components.settings import RawConfig, parse_settings
from components.values import show
from halb.bench.bgp import PARTS as BGP_PARTS
from halb.bench.changes import CHANGES as BENCH_CHANGES
from halb.bench.changes import MODES as BENCH_MODES
from halb.bench.failover import FAULTS as BENCH_FAULTS
from halb.bench.failover import PROFILES as BENCH_PROFILES
from halb.bench.stall import BFD_SWEEP as STALL_SWEEP
from halb.interrupts import held
from halb.lab.faults import FAULTS as LAB_FAULTS
from halb.lab.hostile import HOSTILE
from halb.lab.state import ROUTER_HASHES
from halb.stackfile import known_stacks, load_stack_file, stack_path

BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="halb", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("render", help="render a stack's manifests and daemon configs offline")
    r.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    r.add_argument("--config-file", help="read this stack file instead of Pulumi.<stack>.yaml")
    r.add_argument(
        "--out",
        required=True,
        help="directory to write into: new, empty, or a previous render (replaced whole)",
    )

    lab = sub.add_parser("lab", help="the stack's load-balancer tier for real, in network namespaces")
    lsub = lab.add_subparsers(dest="lab_command", required=True, parser_class=_Parser)
    up = lsub.add_parser("up", help="create the lab and wait until the VIP serves")
    up.add_argument("--stack", default="lab", help="stack name (default: lab)")
    up.add_argument("--config-file", help="read this stack file instead of Pulumi.<stack>.yaml")
    up.add_argument("--router-hash", choices=ROUTER_HASHES, default=ROUTER_HASHES[0],
                    help="bgp: the lab router's ECMP (default hash-threshold)")  # fmt: skip
    st = lsub.add_parser("status", help="who holds the VIP, VRRP states, daemon PIDs")
    st.add_argument("--json", action="store_true")
    rq = lsub.add_parser("request", help="requests through the VIP from the client namespace")
    rq.add_argument("--count", type=_bounded(1, 1000), default=5, help="1..1000 (default 5)")
    rq.add_argument("--service", help="send the Host header of this service (default: default backend)")
    fl = lsub.add_parser("fault", help="inject a fault (default node: the MASTER)")
    fl.add_argument("kind", choices=LAB_FAULTS)
    fl.add_argument("--node", help="load-balancer host to hit")
    lsub.add_parser("handoff", help="planned move of the VIP to another LB host, no failed request")
    ap = lsub.add_parser("apply", help="change the running lab to a stack, as `pulumi up` would")
    ap.add_argument("--stack", default="lab", help="stack name (default: lab)")
    ap.add_argument("--config-file", help="read this stack file instead of Pulumi.<stack>.yaml")
    rn = lsub.add_parser(
        "renew", help="issue a TLS service's certificates again, as cert-manager renews them"
    )
    rn.add_argument("service")
    dr = lsub.add_parser("drain", help="evict a load-balancer host's edge pod (preStop hands the VIP over)")
    dr.add_argument("node")
    un = lsub.add_parser("uncordon", help="let the edge pod run on a drained host again")
    un.add_argument("node")
    lsub.add_parser("down", help="remove every namespace and process of the lab")
    sub.add_parser("demo", help="lab up, requests, MASTER host crash with measured outage, lab down")

    bench = sub.add_parser("bench", help="benchmarks in the lab")
    bsub = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    fo = bsub.add_parser("failover", help="failover outage per fault: project timers vs the seed's")
    _report_flags(fo, "fault and profile", "outage")
    fo.add_argument("--faults", type=_choices([*BENCH_FAULTS, *HOSTILE]), default=list(BENCH_FAULTS),
                    help=f"comma-separated, from: {','.join(BENCH_FAULTS)} (default: these), and the "
                         f"hostile drills {','.join(HOSTILE)}")  # fmt: skip
    fo.add_argument("--profiles", type=_choices(list(BENCH_PROFILES)), default=["project", "nowatch", "seed"],
                    help="comma-separated, from: project,nowatch,seed,fast,calm "
                         "(default: project,nowatch,seed)")  # fmt: skip
    fo.add_argument("--https", action="store_true",
                    help="HTTPS on every service and a TLS probe beside the HTTP one")  # fmt: skip
    tl = bsub.add_parser(
        "tls", help="handshakes, HTTPS vs HTTP, renewals under load, resumption across faults"
    )
    _report_flags(tl, "case", "sessions resumed", runs=False)  # its sizes are --seconds and --sessions
    tl.add_argument("--seconds", type=_bounded(1, 120), default=10,
                    help="seconds per handshake and keep-alive case (1..120, default 10)")  # fmt: skip
    tl.add_argument("--renewals", type=_bounded(1, 100), default=20, help="lab renew under load (default 20)")
    tl.add_argument("--sessions", type=_bounded(1, 5000), default=200,
                    help="sessions offered again after each fault (default 200)")  # fmt: skip
    bg = bsub.add_parser("bgp", help="BGP mode: scale-out over 1-3 hosts, failover beside VRRP's")
    _report_flags(bg, "fault and mode", "requests per second")
    bg.add_argument("--seconds", type=_bounded(1, 120), default=10,
                    help="seconds of load per scale-out step (1..120, default 10)")  # fmt: skip
    bg.add_argument("--parts", type=_choices(BGP_PARTS), default=list(BGP_PARTS),
                    help=f"comma-separated, from: {','.join(BGP_PARTS)} (default: all)")  # fmt: skip
    st = bsub.add_parser("stall", help="150 ms stalls and link jitter: BFD, BGP and VRRP flaps per timers")
    _report_flags(st, "disturbance and timers", "flaps")
    sweep = ",".join(f"{i}x{m}" for i, m in STALL_SWEEP)
    st.add_argument("--timers", type=_bfd_timers, default=list(STALL_SWEEP),
                    help="BFD timers as interval-ms x multiplier, comma-separated (interval 10..60000, "
                         f"multiplier 2..255, as bgp.bfd; default: {sweep})")  # fmt: skip
    st.add_argument("--modes", type=_choices(("bgp", "vrrp")), default=["bgp", "vrrp"],
                    help="comma-separated, from: bgp,vrrp (default: both)")  # fmt: skip
    ch = bsub.add_parser("changes", help="failed requests and VIP moves while the lab is changed")
    _report_flags(ch, "change and mode", "failed requests")
    ch.add_argument("--changes", type=_choices(BENCH_CHANGES), default=list(BENCH_CHANGES),
                    help=f"comma-separated, from: {','.join(BENCH_CHANGES)} (default: all)")  # fmt: skip
    ch.add_argument("--modes", type=_choices(BENCH_MODES), default=list(BENCH_MODES),
                    help="comma-separated, from: project,baseline (default: both)")  # fmt: skip
    fo.add_argument("--load-seconds", type=_bounded(0, 600), default=60,
                    help="CPU-load phase per profile in seconds (0 skips; default 60)")  # fmt: skip
    return p


def _bounded(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value

    return parse


def _report_flags(parser: argparse.ArgumentParser, per: str, charted: str, runs: bool = True) -> None:
    """A benchmark's runs and where its report goes."""
    if runs:
        parser.add_argument(
            "--runs", type=_bounded(1, 50), default=5, help=f"runs per {per} (1..50, default 5)"
        )
    parser.add_argument("--json", type=Path, help="write every run and the summary as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown")
    parser.add_argument("--chart", type=Path, help=f"write a PNG chart of {charted} per {per}")


def _bfd_timers(text: str) -> list[tuple[int, int]]:
    """Timers like 100x3,50x3 as (interval ms, multiplier) pairs, in bgp.bfd's bounds."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    timers = []
    for item in items:
        interval, x, multiplier = item.partition("x")
        if not (x and interval.isdigit() and multiplier.isdigit()
                and 10 <= int(interval) <= 60000 and 2 <= int(multiplier) <= 255):  # fmt: skip
            raise argparse.ArgumentTypeError(
                f"{item!r}: not BFD timers; write interval-ms x multiplier, like 100x3 "
                "(interval 10..60000, multiplier 2..255)"
            )
        timers.append((int(interval), int(multiplier)))
    if not timers:
        raise argparse.ArgumentTypeError("no timers given; write them like 100x3,50x3")
    return timers


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{', '.join(bad) or 'nothing'} not allowed (from: {', '.join(allowed)})"
            )
        return items

    return parse


def one_line(text: str) -> str:
    """`text` with anything unprintable escaped: a path or key with a newline in
    it must not turn one problem into two lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fail(problems: Sequence[str]) -> int:
    for line in problems:
        print(f"error: {one_line(line)}", file=sys.stderr)
    return BAD_INPUT


def cmd_render(args: argparse.Namespace) -> int:
    """A Ctrl-C is acted on between the steps: anywhere inside them (an import,
    the engine's event loop, the directory swap) it would leave a mess."""
    try:
        with held() as check:
            return _render(args, check)
    except KeyboardInterrupt:
        print("interrupted; the output directory is unchanged or holds the whole render", file=sys.stderr)
        return 130


def _render(args: argparse.Namespace, check: Callable[[], None]) -> int:
    from halb.files import resolve_out, write_render

    raw = _load_raw(args.stack, args.config_file)
    if isinstance(raw, int):
        return raw
    out, why = resolve_out(args.out)
    if out is None:
        return _fail([why or f"--out {args.out}: cannot write there"])
    check()
    from halb.sdk import SdkDriftError

    try:
        from halb.render import render_files  # imports Pulumi: only for valid input
    except SdkDriftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    check()
    files = render_files(raw, args.stack)
    check()
    try:
        write_render(out, files, args.stack)
    except OSError as err:
        return _fail([f"--out {args.out}: cannot write ({err.strerror}); nothing was changed"])
    print(f"rendered stack {args.stack} into {args.out}:")
    for rel in sorted(files):
        print(f"  {Path(args.out) / rel}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _load_raw(stack: str, config_file: str | None) -> RawConfig | int:
    """Validated stack config, or the exit code after printing why not."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", stack) is None:
        return _fail([f"--stack {show(stack)}: not a stack name (1-100 of A-Z a-z 0-9 _ . -)"])
    if config_file is None and stack not in known_stacks():
        return _fail([f"--stack {stack}: unknown stack (have: {', '.join(known_stacks())})"])
    try:
        raw = load_stack_file(stack_path(stack, config_file))
        parse_settings(raw)  # refuses (with every problem) before anything is written
    except InputError as err:
        return _fail(err.problems)
    return raw


def print_status(status: dict[str, Any]) -> None:
    print(f"lab {status['prefix']} (stack {status['stack']}): VIP {status['vip']}  {status['url']}")
    for n in status["nodes"]:
        if n["role"] == "apps":
            print(f"  {n['name']:<10} apps           {n['address']:<15} netns {n['netns']}")
            continue
        if "bgp" in n:  # announcing (or why not), as its halb-bgp says
            bgp = n["bgp"]
            said = "announces" if bgp.get("announced") else f"withdrawn ({bgp.get('reason')})"
            routed = "routed" if n["name"] in (status.get("router_next_hops") or []) else "not routed"
            print(f"  {n['name']:<10} load-balancer  {n['address']:<15} {said:<22} {routed:<11}"
                  f"haproxy {n['haproxy_pid'] or '-'}")  # fmt: skip
        else:
            vip = "holds VIP" if n["holds_vip"] else ""
            print(
                f"  {n['name']:<10} load-balancer  {n['address']:<15} {n['vrrp_state']:<8} {vip:<10}"
                f"keepalived {n['keepalived_pid'] or '-'}  haproxy {n['haproxy_pid'] or '-'}"
            )
        if "bgp" not in n and n.get("vrrp_source") not in (None, "exporter", "crashed host"):
            print(f"  {'':<10} VRRP state from the {n['vrrp_source']}")
        if n.get("drained"):
            print(f"  {'':<10} drained: no edge pod until `lab uncordon {n['name']}`")
        cfg = n.get("haproxy_config") or {}
        if cfg.get("state") in ("rejected", "failed"):
            print(f"  {'':<10} HAProxy config {str(cfg.get('config'))[:12]} {cfg['state']}; still serving "
                  f"{str(cfg.get('serving'))[:12]}: {cfg.get('error', '').strip()[:300]}")  # fmt: skip
        for cert, st in ((n.get("tls") or {}).get("certificates") or {}).items():
            if st.get("state") == "rejected":
                serving = "the old one serves on" if st.get("serving") else "not served"
                print(f"  {'':<10} certificate {cert} refused ({st.get('error')}); {serving}")
    if status.get("router_next_hops") is not None:
        hops = ", ".join(status["router_next_hops"]) or "no host"
        print(f"  router: the VIP routed to {hops} (ECMP, {status.get('router_hash')})")
    print(f"  client netns {status['client_netns']}")
    if status.get("tls_ca"):
        print(f"  lab CA {status['tls_ca']} (curl --cacert it; `lab renew SERVICE` issues again)")
    prom = status.get("prometheus")
    if prom:
        firing = prom.get("firing")
        alerts = ", ".join(firing) if firing else "none" if firing is not None else f"? ({prom.get('error')})"
        print(f"  Prometheus {prom['url']} (netns {prom['netns']}); alerts firing: {alerts}")


def _lab_errors(action: Callable[[], int], interrupted: str = "interrupted") -> int:
    """What the lab can't do is exit 1 with its message (bad input: 2); Ctrl-C is 130."""
    from halb.lab.base import LabError

    try:
        return action()
    except InputError as err:
        return _fail(err.problems)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def cmd_lab(args: argparse.Namespace) -> int:
    return _lab_errors(lambda: _lab(args))


def _lab(args: argparse.Namespace) -> int:
    from halb.lab.faults import inject
    from halb.lab.handoff import handoff
    from halb.lab.lab import Lab
    from halb.lab.state import lab_prefix, locked
    from halb.lab.teardown import teardown

    prefix = lab_prefix()
    if args.lab_command == "down":
        with locked(prefix, _say, "down"):
            teardown(prefix, _say)
        return 0
    if args.lab_command == "up":
        raw = _load_raw(args.stack, args.config_file)
        if isinstance(raw, int):
            return raw
        lab = Lab.create(raw, args.stack, prefix, router_hash=args.router_hash)
        with locked(prefix, _say, "up"):
            lab.up(_say)
        print_status(lab.status())
        print(f"try: halb lab request   (or: ip netns exec {lab.plan.client_netns} curl {lab.plan.url})")
        return 0
    lab = Lab.load(prefix)
    if args.lab_command == "status":
        status = lab.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print_status(status)
        return 0
    if args.lab_command == "request":
        host = None
        if args.service is not None:
            svc = next((s for s in lab.plan.settings.services if s.name == args.service), None)
            if svc is None:
                names = ", ".join(s.name for s in lab.plan.settings.services)
                return _fail([f"--service {args.service}: no such service (have: {names})"])
            host = svc.hostnames[0] if svc.hostnames else None
        attempts = lab.request(args.count, timeout=1.0, interval=0.05, host=host)
        wrong = 0
        for a in attempts:
            print(f"{a.ms:6.1f} ms  {a.answer if a.ok else 'FAILED (' + str(a.error) + ')'}")
            # Answered, but by another service: the routing is wrong, not the request.
            if a.ok and args.service is not None and f"service={args.service} " not in f"{a.answer} ":
                wrong += 1
        if wrong:
            print(f"error: {wrong} answer(s) came from another service than {args.service}", file=sys.stderr)
        return 0 if all(a.ok for a in attempts) and not wrong else 1
    if args.lab_command == "fault":
        with locked(prefix, _say, "fault"):
            print(inject(Lab.load(prefix), args.kind, args.node))
        return 0
    if args.lab_command == "apply":
        from halb.lab.apply import apply

        raw = _load_raw(args.stack, args.config_file)
        if isinstance(raw, int):
            return raw
        with locked(prefix, _say, "apply"):
            print(apply(Lab.load(prefix), raw, args.stack, _say))
        return 0
    if args.lab_command == "renew":
        from halb.lab.apply import renew

        with locked(prefix, _say, "renew"):
            print(renew(Lab.load(prefix), args.service, _say))
        return 0
    if args.lab_command in ("drain", "uncordon"):
        from halb.lab.apply import drain, uncordon

        with locked(prefix, _say, args.lab_command):
            step = drain if args.lab_command == "drain" else uncordon
            print(step(Lab.load(prefix), args.node, _say))
        return 0
    if args.lab_command == "handoff":
        with locked(prefix, _say, "handoff"):
            print(handoff(Lab.load(prefix), _say))
        return 0
    raise AssertionError(args.lab_command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "render":
        return cmd_render(args)
    if args.command == "lab":
        return cmd_lab(args)
    if args.command == "demo":
        return cmd_demo()
    if args.command == "bench":
        return cmd_bench(args)
    raise AssertionError(args.command)


def _progress(done: int, total: int, text: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}"
    if sys.stderr.isatty():
        print(f"\r{line:<100}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    from halb.files import check_writable

    problems = []
    for flag, path in (("--json", args.json), ("--markdown", args.markdown), ("--chart", args.chart)):
        why = check_writable(path.parent) if path is not None else None
        if why is not None:
            problems.append(why.replace(f"--out {path.parent}", f"{flag} {path}"))
    if problems:
        return _fail(problems)
    results: list[tuple[str, dict[str, Any], Callable[[Path], None]]] = []

    def bench() -> int:
        if args.bench_command == "tls":
            from halb.bench import tls

            t_report = tls.run_tls(args.seconds, args.renewals, args.sessions, _progress)
            results.append((tls.table(t_report), t_report.to_json(), lambda p: tls.chart(t_report, p)))
        elif args.bench_command == "bgp":
            from halb.bench import bgp

            b_report = bgp.run_bgp(args.runs, args.seconds, _progress, tuple(args.parts))
            results.append((bgp.table(b_report), b_report.to_json(), lambda p: bgp.chart(b_report, p)))
        elif args.bench_command == "stall":
            from halb.bench import stall

            s_report = stall.run_stall(args.runs, _progress, tuple(args.timers), tuple(args.modes))
            results.append((stall.table(s_report), s_report.to_json(), lambda p: stall.chart(s_report, p)))
        elif args.bench_command == "changes":
            from halb.bench import changes

            c_report = changes.run_changes(args.runs, args.changes, args.modes, _progress)
            results.append(
                (changes.table(c_report), c_report.to_json(), lambda p: changes.chart(c_report, p))
            )
        else:
            from halb.bench import failover

            f_report = failover.run_bench(
                args.runs, args.faults, args.profiles, args.load_seconds, _progress, https=args.https
            )
            results.append(
                (failover.table(f_report), f_report.to_json(), lambda p: failover.chart(f_report, p))
            )
        return 0

    code = _lab_errors(bench, "interrupted; the bench lab was taken down")
    if code:
        return code
    from halb.bench.engine import write

    write(*results[0], args.json, args.markdown, args.chart)
    return 0


def cmd_demo() -> int:
    from halb.lab.demo import run_demo
    from halb.lab.state import lab_prefix

    return _lab_errors(lambda: run_demo(lab_prefix()), "interrupted; the lab was taken down")
