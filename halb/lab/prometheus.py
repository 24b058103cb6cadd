"""The lab's Prometheus: Debian's `prometheus`, in its own namespace on the lab bridge.

Made when the stack enables monitoring (the cluster's Prometheus scrapes the
tier only then). It scrapes what the PodMonitors select, with the labels the
rules rely on (`prometheus_config`: the operator's job names, `node`), and
evaluates the rule groups of the rendered PrometheusRule: what the cluster's
Prometheus loads. Its TSDB is in the lab's directory; its UI and API are on
<prometheus address>:9090, reachable from the client namespace (and from
its own on 127.0.0.1). Started by `Lab.up` as a supervised process, so the
journal has it and `lab down` stops it with the rest. The benchmark's alert
watcher (halb/lab/alertwatch.py) polls it from the client namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from components.monitoring import prometheus_config
from halb.lab.alertwatch import AlertWatch
from halb.lab.base import LabError, Out, in_ns, run, wait_until
from halb.lab.topology import PROMETHEUS_PORT, LabPlan

ROOT = Path(__file__).resolve().parents[2]
READY_S = 30.0
API_TIMEOUT_S = 2.0
RULE_KIND = "PrometheusRule"


def rule_groups(manifests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`namespace-name` -> rule groups, of each rendered PrometheusRule."""
    out = {}
    for doc in manifests:
        if doc.get("kind") == RULE_KIND:
            meta = doc.get("metadata", {})
            out[f"{meta.get('namespace', 'default')}-{meta['name']}"] = doc["spec"]["groups"]
    return out


class LabPrometheus:
    def __init__(self, plan: LabPlan, lab_dir: Path) -> None:
        self.plan = plan
        self.dir = lab_dir / "prometheus"
        self.log = lab_dir / "logs" / "prometheus.log"
        self.groups = 0  # rule groups `prepare` wrote

    @property
    def enabled(self) -> bool:
        return self.plan.prometheus_netns is not None

    # --- up --------------------------------------------------------------------------

    def prepare(self, manifests: list[dict[str, Any]]) -> list[str] | None:
        """Write its config and rules, check them with promtool; the command to run
        (None: the stack's monitoring is off, no Prometheus)."""
        if not self.enabled:
            return None
        missing = [t for t in ("prometheus", "promtool") if shutil.which(t) is None]
        if missing:
            raise LabError(
                f"{', '.join(missing)} not found (the stack enables monitoring); `make deps` installs "
                "Debian's prometheus"
            )
        rules = self.dir / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        files = []
        for name, groups in sorted(rule_groups(manifests).items()):
            path = rules / f"{name}.yaml"
            path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
            files.append(str(path))
            self.groups += len(groups)
        # The edge DaemonSet runs on the load-balancer hosts (its node affinity).
        targets = {n.name: str(n.address) for n in self.plan.lb_nodes}
        config = self.dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(prometheus_config(self.plan.settings, targets, files), sort_keys=False)
        )
        check = run(["promtool", "check", "config", str(config)], timeout=30, check=False)
        if check.returncode != 0:
            raise LabError(f"promtool check config {config}:\n{(check.stdout + check.stderr).strip()}")
        return [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            # Its own namespace: that is its bridge address and 127.0.0.1.
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
        ]

    def wait_ready(self, out: Out) -> None:
        """Bounded: ready, its rules loaded, and every target scraped once."""
        if not self.enabled:
            return
        want = self.groups
        state: dict[str, Any] = {}

        def ready() -> bool:
            try:
                targets = self.api("targets")["activeTargets"]
                groups = self.api("rules")["groups"]
            except LabError as err:
                state["why"] = str(err)
                return False
            down = [
                f"{t['labels'].get('job')} {t['labels'].get('node')}: {t['health']}"
                for t in targets
                if t["health"] != "up"
            ]
            state["why"] = (
                f"targets not up: {', '.join(down)}" if down else f"{len(groups)} of {want} rule groups"
            )
            return bool(targets) and not down and len(groups) == want

        if not wait_until(ready, READY_S, poll=0.2):
            raise LabError(
                f"Prometheus not ready after {READY_S:g} s ({state.get('why')})\n" + self._log_tail()
            )
        out(f"Prometheus ready: {self.plan.prometheus_url} (from the client namespace)")

    def _log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- ask it ------------------------------------------------------------------------

    def api(self, path: str, timeout: float = API_TIMEOUT_S, **params: str) -> Any:
        """GET /api/v1/<path> from inside its namespace; the `data` of a success."""
        if self.plan.prometheus_netns is None:
            raise LabError("the lab has no Prometheus: the stack's monitoring.enabled is false")
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/{path}"
        args = [a for k, v in params.items() for a in ("--data-urlencode", f"{k}={v}")]
        curl = ["curl", "-sS", "--noproxy", "*", "-G", "--max-time", str(timeout), *args, url]
        cmd = in_ns(self.plan.prometheus_netns, *curl)
        result = run(cmd, timeout=timeout + 5, check=False)
        if result.returncode != 0:
            raise LabError(f"Prometheus did not answer {path}: {result.stderr.strip()}")
        try:
            body = json.loads(result.stdout)
        except ValueError:
            raise LabError(f"Prometheus {path}: not JSON: {result.stdout[:200]}") from None
        if body.get("status") != "success":
            raise LabError(f"Prometheus {path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise LabError(f"{expr}: a {data['resultType']}, not an instant vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def firing(self) -> list[str]:
        return sorted({a["labels"]["alertname"] for a in self.alerts() if a["state"] == "firing"})

    def status(self) -> dict[str, Any] | None:
        """For `lab status`: where it is, and what fires (None: no Prometheus)."""
        if not self.enabled:
            return None
        entry: dict[str, Any] = {"url": self.plan.prometheus_url, "netns": self.plan.prometheus_netns}
        try:
            entry["firing"] = self.firing()
        except LabError as err:
            entry["firing"], entry["error"] = None, str(err)
        return entry

    def start_watch(self, duration: float, interval: float = 0.1) -> AlertWatch:
        """The alert watcher, in the client namespace, for `duration` seconds."""
        cmd = [
            sys.executable, "-m", "halb.lab.alertwatch", "--url", str(self.plan.prometheus_url),
            "--duration", str(duration), "--interval", str(interval),
        ]  # fmt: skip
        env = dict(os.environ)
        return AlertWatch(in_ns(self.plan.client_netns, *cmd), duration, env)
