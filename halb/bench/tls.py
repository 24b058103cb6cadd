"""TLS benchmark: what HTTPS costs at the edge, renewals under load, sessions across faults.

    halb bench tls [--seconds S] [--renewals N] [--sessions N] [--json FILE] [--markdown FILE] [--chart FILE]

A lab of the lab stack with HTTPS on both services (shop: cert-manager's
ECDSA and RSA, blog: an existing Secret; redirect off, so HTTP serves too),
Debian's nginx as the app stand-in (faster than the edge: the edge is what
is measured), the lab's CA as cert-manager. Client and edge share this
machine's CPUs, so every figure is a ratio to a baseline of the same run.

- handshakes: new TLS connections per second through the VIP (halb.lab.tlsload,
  2 processes), full and resumed, ECDSA P-256 and RSA-2048 (TLS 1.2, the
  cipher picks the key), and TLS 1.3 (ECDSA);
- keep-alive: requests per second with h2load (10 connections), HTTP/1.1
  over plain TCP, over TLS, and h2;
- renewals: `lab renew shop` N times while h2load keeps 10 connections busy
  and the probe opens a new TLS connection every 20 ms: failed handshakes,
  failed requests, and how long until the new serial is served;
- resumption: sessions (TLS 1.2 and 1.3) made before a MASTER crash, a
  planned handoff and a hitless reload, offered after: the share resumed,
  with the shared ticket keys and with HAProxy's own (`sessionTickets: perHost`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.settings import RawConfig
from halb.bench.chart import Bar, grouped_bars
from halb.bench.engine import (
    Progress,
    Steps,
    bench_lab,
    machine,
    markdown_table,
    new_prefix,
    probe_settings,
    quiet,
    settle,
)
from halb.lab.base import LabError, in_ns, run, wait_until
from halb.lab.lab import Lab
from halb.stackfile import load_stack_file, stack_path

HOST = "shop.lab.invalid"
SETTLE_TIMEOUT_S = 120.0
H2LOAD_CLIENTS = 10
FAULTS = ("crash", "handoff", "reload")
TICKET_MODES = ("shared", "perHost")
HANDSHAKE_CASES = (  # (name, key, TLS version, resumed)
    ("ECDSA full", "ecdsa", "1.2", False),
    ("ECDSA resumed", "ecdsa", "1.2", True),
    ("RSA full", "rsa", "1.2", False),
    ("RSA resumed", "rsa", "1.2", True),
    ("TLS 1.3 full", "ecdsa", "1.3", False),
    ("TLS 1.3 resumed", "ecdsa", "1.3", True),
)
# h2load's summary line.
REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed")
# Another hostname on blog: a config change HAProxy loads with a hitless reload.
RELOAD_HOSTNAME = "reload.blog.lab.invalid"
STAND_IN = "one nginx replica alone, HTTP/1.1 (no edge)"


@dataclass
class TlsReport:
    machine: dict[str, Any]
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    keepalive: list[dict[str, Any]] = field(default_factory=list)
    renewals: list[dict[str, Any]] = field(default_factory=list)
    resumption: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": summary(self)}


def tls_raw(tickets: str = "shared", extra_hostname: str | None = None) -> RawConfig:
    base = load_stack_file(stack_path("lab"))
    values = dict(base.values)
    services = json.loads(values["rancher-ha-lb:services"])
    services[0]["tls"] = {"issuer": "lab-ca", "keyAlgorithms": ["ECDSA", "RSA"], "redirect": False}
    services[1]["tls"] = {"secretName": "blog-tls", "redirect": False}
    if extra_hostname:
        services[1]["hostnames"] = [*services[1]["hostnames"], extra_hostname]
    values["rancher-ha-lb:services"] = json.dumps(services)
    values["rancher-ha-lb:tls"] = json.dumps({"sessionTickets": tickets})
    return RawConfig(values, base.secret_keys)


def _client(lab: Lab, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return run(in_ns(lab.plan.client_netns, *cmd), timeout, check=False)


def _result(stdout: str, stderr: str, what: str) -> dict[str, Any]:
    """The JSON line tlsload ends with, or why there is none (a LabError, not a traceback)."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise LabError(f"{what} printed no result: {stderr[-300:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def _tlsload(lab: Lab, *args: str) -> list[str]:
    return [sys.executable, "-m", "halb.lab.tlsload", *args[:1], "--target", f"{lab.plan.vip}:443",
            "--sni", HOST, "--cafile", str(lab.ca.root), *args[1:]]  # fmt: skip


def handshakes(lab: Lab, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for name, key, version, resumed in HANDSHAKE_CASES:
        cmd = _tlsload(lab, "handshakes", "--key", key, "--version", version, "--seconds", f"{seconds:g}",
                       *(["--resume"] if resumed else []))  # fmt: skip
        done = _client(lab, cmd, seconds + 90)
        data = _result(done.stdout, done.stderr, f"tlsload handshakes ({name})")
        rows.append({"case": name, **data, "per_s": round(data["handshakes"] / data["seconds"], 1)})
    return rows


def h2load_cmd(lab: Lab, scheme: str, seconds: float, h1: bool = False) -> list[str]:
    """h2load against shop by name (its SNI and Host), connected to the VIP."""
    port = 443 if scheme == "https" else 80
    return ["h2load", "-D", f"{seconds:g}", "-c", str(H2LOAD_CLIENTS), "-t", "1", *(["--h1"] if h1 else []),
            f"--connect-to={lab.plan.vip}:{port}", f"{scheme}://{HOST}/"]  # fmt: skip


def h2load(lab: Lab, scheme: str, seconds: float, h1: bool, direct: bool = False) -> dict[str, Any]:
    cmd = h2load_cmd(lab, scheme, seconds, h1)
    if direct:  # one shop replica from its own host: the stand-in alone, without the edge
        r = next(x for x in lab.plan.replicas if x.service == "shop")
        cmd = [*cmd[:-2], f"http://{r.address}:{r.port}/"]
        done = run(in_ns(lab.plan.node(r.node).netns, *cmd), seconds + 60, check=False)
    else:
        done = _client(lab, cmd, seconds + 60)
    rps = re.search(r"finished in [^,]+, ([0-9.]+) req/s", done.stdout)
    reqs = REQUESTS.search(done.stdout)
    if rps is None or reqs is None:
        raise LabError(f"h2load gave no numbers: {done.stdout[-500:]} {done.stderr[-300:]}")
    ok = re.search(r"status codes: (\d+) 2xx", done.stdout)
    return {"req_s": float(rps.group(1)), "done": int(reqs.group(2)), "failed": int(reqs.group(4)),
            "ok_2xx": int(ok.group(1)) if ok else 0}  # fmt: skip


def keepalive(lab: Lab, seconds: float) -> list[dict[str, Any]]:
    cases = [("HTTP/1.1", "http", True), ("HTTPS, HTTP/1.1", "https", True), ("HTTPS, h2", "https", False)]
    rows = [{"case": name, **h2load(lab, scheme, seconds, h1)} for name, scheme, h1 in cases]
    # Proof the stand-in is faster than the edge (else the rows above measure it).
    return [*rows, {"case": STAND_IN, **h2load(lab, "http", seconds, True, direct=True)}]


def served_serial(lab: Lab) -> str:
    cmd = ["sh", "-c", f"echo | openssl s_client -connect {lab.plan.vip}:443 -servername {HOST} 2>/dev/null"
           " | openssl x509 -noout -serial"]  # fmt: skip
    return _client(lab, cmd, 20).stdout.strip().removeprefix("serial=")


def renewals(lab: Lab, count: int, steps: Steps) -> list[dict[str, Any]]:
    """`lab renew shop` `count` times under keep-alive load and a new TLS connection every 20 ms."""
    from halb.lab.apply import renew

    per_renewal = 15.0
    seconds = count * per_renewal + 5
    load = subprocess.Popen(in_ns(lab.plan.client_netns, *h2load_cmd(lab, "https", seconds)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    rows = []
    probe = lab.start_probe(1_000_000, 0.02, 0.5, seconds, host=HOST, tls=True)
    try:
        for i in range(count):
            steps.step(f"renewal {i + 1}/{count}")
            old = served_serial(lab)
            t0 = time.monotonic()
            renew(lab, "shop", quiet)
            seen = wait_until(lambda old=old: served_serial(lab) not in ("", old), 60, poll=0.2)  # type: ignore[misc]
            rows.append(
                {"renewal": i + 1, "served_after_s": round(time.monotonic() - t0, 2) if seen else None}
            )
        attempts = probe.finish(grace_s=20)
        out, _ = load.communicate(timeout=seconds + 60)
    finally:
        probe.stop()
        if load.poll() is None:
            load.kill()
            load.wait()
    reqs = REQUESTS.search(out)
    return [{
        "renewals": rows, "handshakes": len(attempts), "failed_handshakes": sum(not a.ok for a in attempts),
        "requests": int(reqs.group(2)) if reqs else None,
        "failed_requests": int(reqs.group(4)) if reqs else None,
    }]  # fmt: skip


def _fault(lab: Lab, fault: str) -> None:
    from halb.lab.apply import apply
    from halb.lab.faults import inject
    from halb.lab.handoff import handoff

    if fault == "crash":
        master = lab.master() or "?"
        inject(lab, "crash", master)
        wait_until(lambda: lab.master() not in (None, master), 10, poll=0.05)
    elif fault == "handoff":
        handoff(lab, quiet)
    else:
        tickets = json.loads(lab.state.config["rancher-ha-lb:tls"])["sessionTickets"]
        apply(lab, tls_raw(tickets, extra_hostname=RELOAD_HOSTNAME), "lab", quiet)


def _undo(lab: Lab, fault: str, tickets: str) -> None:
    from halb.lab.apply import apply
    from halb.lab.faults import inject

    if fault == "crash":
        inject(lab, "restore", None)
    elif fault == "reload":
        apply(Lab.load(lab.plan.prefix), tls_raw(tickets), "lab", quiet)


def resumption(lab: Lab, tickets: str, sessions: int, steps: Steps) -> list[dict[str, Any]]:
    rows = []
    for fault in FAULTS:
        for version in ("1.2", "1.3"):
            steps.step(f"resumption {tickets} {fault} TLS {version}")
            settle(lab, SETTLE_TIMEOUT_S)
            lab = Lab.load(lab.plan.prefix)
            cmd = _tlsload(lab, "resume", "--version", version, "--sessions", str(sessions))
            tool = subprocess.Popen(
                in_ns(lab.plan.client_netns, *cmd),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert tool.stdout is not None and tool.stdin is not None
            try:
                if tool.stdout.readline().strip() != "saved":
                    raise LabError(
                        f"the resume tool made no sessions: {tool.stderr.read() if tool.stderr else ''}"
                    )
                _fault(lab, fault)
                tool.stdin.write("go\n")
                tool.stdin.flush()
                out, err = tool.communicate(timeout=300)
            finally:
                if tool.poll() is None:
                    tool.kill()
                    tool.wait()
            data = _result(out, err, f"tlsload resume ({fault}, TLS {version})")
            rows.append({"tickets": tickets, "fault": fault, "version": version, **data,
                         "share": round(data["resumed"] / max(data["sessions"], 1), 4)})  # fmt: skip
            _undo(lab, fault, tickets)
    return rows


def summary(r: TlsReport) -> dict[str, Any]:
    hs = {row["case"]: row["per_s"] for row in r.handshakes}
    ka = {row["case"]: row["req_s"] for row in r.keepalive}

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "resumed_vs_full_ecdsa": ratio(hs.get("ECDSA resumed", 0), hs.get("ECDSA full", 0)),
        "ecdsa_vs_rsa_full": ratio(hs.get("ECDSA full", 0), hs.get("RSA full", 0)),
        "https_vs_http_keepalive": ratio(ka.get("HTTPS, HTTP/1.1", 0), ka.get("HTTP/1.1", 0)),
        "resumed_share": {f"{x['tickets']} {x['fault']} {x['version']}": x["share"] for x in r.resumption},
    }


def table(r: TlsReport) -> str:
    base = next((row["per_s"] for row in r.handshakes if row["case"] == "ECDSA full"), 0)
    lines = markdown_table(
        ["handshakes (new TLS connection each)", "per second", "failed", "resumed", "vs ECDSA full"],
        (
            [row["case"], f"{row['per_s']:.0f}", str(row["failed"]), f"{row['resumed']}/{row['handshakes']}",
             f"{row['per_s'] / base:.2f}x" if base else ""]
            for row in r.handshakes
        ),
    )  # fmt: skip
    http = next((row["req_s"] for row in r.keepalive if row["case"] == "HTTP/1.1"), 0)
    head = [f"keep-alive requests ({H2LOAD_CLIENTS} connections, h2load)", "per second", "failed or not 2xx",
            "vs HTTP"]  # fmt: skip
    rows = (
        [
            row["case"],
            f"{row['req_s']:.0f}",
            str(row["failed"] + row["done"] - row.get("ok_2xx", row["done"])),
            f"{row['req_s'] / http:.2f}x" if http else "",
        ]
        for row in r.keepalive
    )
    lines += ["", *markdown_table(head, rows)]
    for ren in r.renewals:
        lines += ["", _renewal_line(ren)]
    if r.resumption:
        head = [
            "sessions resumed after",
            "TLS",
            "shared keys (this project)",
            "per-host keys (HAProxy's default)",
        ]
        shares = ([f, v, *(_share(r, t, f, v) for t in TICKET_MODES)] for f in FAULTS for v in ("1.2", "1.3"))
        lines += ["", *markdown_table(head, shares)]
    return "\n".join(lines)


def _renewal_line(ren: dict[str, Any]) -> str:
    times = sorted(x["served_after_s"] for x in ren["renewals"] if x["served_after_s"] is not None)
    line = (
        f"{len(ren['renewals'])} renewals under load: {ren['failed_handshakes']} of {ren['handshakes']} "
        f"new TLS connections failed, {ren['failed_requests']} of {ren['requests']} keep-alive requests "
        "failed"
    )
    if times:
        line += (
            f"; the new serial served {times[0]:.1f} / {times[len(times) // 2]:.1f} / {times[-1]:.1f} s "
            f"after the renewal (min / median / max; {len(times)}/{len(ren['renewals'])} seen)"
        )
    return line


def _share(r: TlsReport, tickets: str, fault: str, version: str) -> str:
    row = next(
        (x for x in r.resumption if (x["tickets"], x["fault"], x["version"]) == (tickets, fault, version)),
        None,
    )
    if row is None:
        return ""
    return f"{row['share'] * 100:.1f}% ({row['resumed']}/{row['sessions']})"


def chart(r: TlsReport, path: Path) -> None:
    groups = [f"{f} {v}" for f in FAULTS for v in ("1.2", "1.3")]

    def bar(t: str, g: str) -> Bar:
        f, v = g.split(" ")
        row = next((x for x in r.resumption if (x["tickets"], x["fault"], x["version"]) == (t, f, v)), None)
        share = row["share"] * 100 if row else 0.0
        return Bar(share, f"{share:.0f}")

    grouped_bars(
        path, groups, {t: [bar(t, g) for g in groups] for t in TICKET_MODES},
        ylabel="sessions resumed (%)", title="TLS sessions resumed after a fault: shared vs per-host keys",
    )  # fmt: skip


def load_tls(path: Path) -> TlsReport:
    data = json.loads(path.read_text())
    data.pop("summary", None)
    return TlsReport(**data)


def run_tls(seconds: float, renewal_count: int, sessions: int, progress: Progress) -> TlsReport:
    report = TlsReport(machine=machine())
    total = 2 + renewal_count + len(TICKET_MODES) * len(FAULTS) * 2
    steps = Steps(total, progress)
    for tickets in TICKET_MODES:
        with bench_lab(tls_raw(tickets), new_prefix("ht"), app="nginx") as lab:
            if tickets == "shared":
                steps.step("handshakes")
                report.handshakes = handshakes(lab, seconds)
                report.keepalive = keepalive(lab, seconds)
                steps.step("keep-alive")
                report.renewals = renewals(lab, renewal_count, steps)
            report.resumption += resumption(lab, tickets, sessions, steps)
    steps.finish()
    report.machine["probe"] = probe_settings()
    report.machine["h2load_clients"] = H2LOAD_CLIENTS
    return report
