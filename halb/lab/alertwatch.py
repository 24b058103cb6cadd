"""The benchmark's alert watcher: when did each alert of the lab's Prometheus fire?

    python -m halb.lab.alertwatch --url http://ADDRESS:9090 --duration S [--interval 0.1]

Runs in the client namespace during a benchmark run, polling
URL/api/v1/alerts, and prints one JSON document at the end: every alert
instance seen (labels + activeAt), with the first CLOCK_MONOTONIC times it
was seen pending and firing (namespaces share that clock), so the caller
lines them up with the moment it injected a fault. It imports nothing of
Pulumi's, so it is polling well within the probe's 1 s lead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from halb.lab.base import LabError
from halb.lab.probe import Background

MAX_WATCH_S = 600.0


def fired_after(alerts: list[dict[str, Any]], t0: float) -> dict[str, float]:
    """alertname -> seconds from t0 until it was first seen firing, for alerts
    that were not firing before t0 (one already firing is not the fault's)."""
    out: dict[str, float] = {}
    for a in alerts:
        t = a.get("firing_t")
        if isinstance(t, (int, float)) and t >= t0:
            name = str(a["name"])
            out[name] = round(min(out.get(name, t - t0), t - t0), 4)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


class AlertWatch(Background):
    what = "the alert watcher"

    def alerts(self, grace_s: float = 10.0) -> list[dict[str, Any]]:
        data, err = self.result(grace_s)
        if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
            raise LabError(f"alert watcher failed: {err.strip()}")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts


# The lab's addresses are never behind a proxy a user's environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_alerts(url: str, timeout: float) -> list[dict[str, Any]]:
    with _DIRECT.open(f"{url}/api/v1/alerts", timeout=timeout) as resp:
        body = json.load(resp)
    alerts: list[dict[str, Any]] = body["data"]["alerts"]
    return alerts


def watch(
    url: str,
    duration: float,
    interval: float,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Every alert instance (labels + activeAt) seen in `duration` seconds."""
    seen: dict[str, dict[str, Any]] = {}
    polls = errors = 0
    last_error = ""
    end = now() + min(duration, MAX_WATCH_S)
    for _ in range(int(min(duration, MAX_WATCH_S) / interval) + 2):
        t = now()
        if t > end:
            break
        try:
            active = _get_alerts(url, min(interval * 5, 2.0))
        except (OSError, ValueError, KeyError) as err:
            errors, last_error = errors + 1, str(err)
            active = []
        t_seen = now()
        polls += 1
        for a in active:
            labels = dict(a.get("labels", {}))
            key = json.dumps([labels, a.get("activeAt")], sort_keys=True)
            entry = seen.setdefault(
                key,
                {"name": labels.get("alertname"), "labels": labels, "active_at": a.get("activeAt"),
                 "pending_t": None, "firing_t": None},
            )  # fmt: skip
            state = f"{a.get('state')}_t"
            if state in entry and entry[state] is None:
                entry[state] = t_seen
            entry["last_t"] = t_seen
        sleep(max(0.0, interval - (now() - t)))
    return {"polls": polls, "errors": errors, "last_error": last_error, "alerts": list(seen.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.alertwatch")
    p.add_argument("--url", required=True, help="http://ADDRESS:9090")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.interval <= 0:
        p.error("--interval must be positive")
    json.dump(
        watch(urllib.parse.urljoin(args.url, "/").rstrip("/"), args.duration, args.interval), sys.stdout
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
