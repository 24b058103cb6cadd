"""Shared fixtures: shipped stacks, config overrides, throwaway netns."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import pytest

from components.settings import SECRET_KEYS_ALLOWED, RawConfig, Settings, parse_settings
from halb.mockrun import Run, run_program
from halb.stackfile import load_stack_file, stack_path

ROOT = Path(__file__).resolve().parent.parent
# The `halb` command `pip install -e .` (the set-up) put beside this interpreter.
HALB = Path(sys.executable).parent / "halb"

STACKS = ("dev", "prod", "lab")
P = "rancher-ha-lb:"


def stack_raw(stack: str) -> RawConfig:
    return load_stack_file(stack_path(stack))


def with_overrides(raw: RawConfig, secret: bool = False, **changes: Any) -> RawConfig:
    """`raw` with project keys replaced (None removes); values as YAML would give them.

    secret=True marks the changed keys that may be secret (SECRET_KEYS_ALLOWED)
    as the engine would, had they been set with `pulumi config set --secret`."""
    values = dict(raw.values)
    secrets = set(raw.secret_keys)
    for short, value in changes.items():
        key = short if ":" in short else P + short
        if value is None:
            values.pop(key, None)
            continue
        values[key] = value if isinstance(value, str) else json.dumps(value)
        if secret and key in SECRET_KEYS_ALLOWED:
            secrets.add(key)
    return RawConfig(values, frozenset(secrets))


def lab_value(key: str) -> Any:
    return json.loads(stack_raw("lab").values[P + key])


_CACHES: list[Any] = []
F = TypeVar("F", bound=Callable[..., Any])


def cached(fn: F) -> F:
    """functools.cache for what the program computes; `make mutate` empties these
    (see `_caches_follow_the_mutant`)."""
    wrapped = cache(fn)
    _CACHES.append(wrapped)
    return cast(F, wrapped)


@cached
def rendered(stack: str) -> Run:
    """Each shipped stack run once under the recording mocks."""
    return run_program(stack_raw(stack), stack)


@cached
def settings_of(stack: str) -> Settings:
    return parse_settings(stack_raw(stack))


_CACHED_FOR: tuple[int, str] | None = None


@pytest.fixture(autouse=True)
def _caches_follow_the_mutant() -> None:
    """Under `make mutate` a cached run must not outlive the mutant it was made
    with: each mutant runs in a process forked from one that ran other tests.
    And while mutmut maps which tests reach which function
    (MUTANT_UNDER_TEST=stats), a test served from the cache would reach none
    and would never be run against a mutant."""
    global _CACHED_FOR
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if mutant == "stats" or (os.getpid(), mutant) != _CACHED_FOR:
        for c in _CACHES:
            c.cache_clear()
        _CACHED_FOR = (os.getpid(), mutant)


def run_halb(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`halb ARGS` as a user runs it (the console script the set-up installs):
    exit code, stdout, stderr."""
    return subprocess.run(
        [str(HALB), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def require_root_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make test installs them)")
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with `eth0` (one end of a veth pair), removed afterwards."""
    require_root_tools("ip", "keepalived")
    name = f"halbt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # Both ends are created inside the namespace: nothing touches the root one.
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            check=True,
        )
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


LAB_TOOLS = ("ip", "curl", "nft", "podman", "runc", "debootstrap")


@contextmanager
def running_lab(raw: RawConfig | None = None, stack: str = "lab") -> Iterator[Any]:
    """A lab of its own (fresh prefix) for `raw`, taken down afterwards, even on failure."""
    require_root_tools(*LAB_TOOLS)
    from halb.lab.lab import Lab
    from halb.lab.state import locked
    from halb.lab.teardown import teardown

    prefix = "t" + uuid.uuid4().hex[:7]
    lab = Lab.create(raw or stack_raw(stack), stack, prefix)
    try:
        with locked(prefix, lambda _: None, "test"):
            lab.up(lambda _: None)
        yield lab
    finally:
        with locked(prefix, lambda _: None, "test"):
            teardown(prefix, lambda _: None)


def fresh(lab: Any) -> Any:
    """The lab as its state file says now (a fault or an apply changed it)."""
    from halb.lab.lab import Lab

    return Lab.load(lab.plan.prefix)


def lab_settled(lab: Any) -> bool:
    """One MASTER and one BACKUP, one VIP holder, HAProxy running on every LB host."""
    states = sorted(lab.vrrp_state(n.name) for n in lab.plan.lb_nodes)
    served = all(lab.daemon_pid(n.name, "haproxy") for n in lab.plan.lb_nodes)
    return states == ["BACKUP", "MASTER"] and len(lab.vip_holders()) == 1 and served


@pytest.fixture
def healthy(lab: Any) -> Iterator[Any]:
    """The module's `lab` settled before and after the test (a test's faults restored).

    A container restart may be in the kubelet's back-off (10 s, then 20 s):
    the bound covers two of them."""
    from halb.lab.base import wait_until
    from halb.lab.faults import inject

    assert wait_until(lambda: lab_settled(lab), 45, poll=0.2), lab.status()
    yield lab
    inject(lab, "restore", None)
    assert wait_until(lambda: lab_settled(lab), 45, poll=0.2), lab.status()


def root_netns_snapshot() -> dict[str, str]:
    """What the lab must never change in the root network namespace."""

    def out(*cmd: str) -> str:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=False).stdout

    # Without counters and link statistics: traffic of the machine moves those.
    links = "\n".join(
        line.split(" qlen")[0].split("\\")[0] for line in out("ip", "-o", "link", "show").splitlines()
    )
    return {
        "links": links,
        "addresses": re.sub(r"valid_lft \S+ preferred_lft \S+", "", out("ip", "-o", "addr", "show")),
        "routes": out("ip", "route", "show", "table", "all"),
        "rules": out("ip", "rule", "show"),
        "nft": out("nft", "list", "ruleset"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        # The test labs' RT cgroups (halb/lab/rtsched.py; test labs' prefixes start with t or s):
        # each gone with its lab.
        "cgroups": "\n".join(sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/halb-[st]*"))),
    }


def plain_id(name: str) -> str:
    """A test id pytest leaves as it is: each character outside printable ASCII, and
    the backslash, as <hex>. pytest escapes those at every collection, and a second
    collection in one process (mutmut's fork server) escapes them again, so the ids
    mutmut recorded would name no test."""
    return re.sub(r"[^ -\[\]-~]", lambda m: f"<{ord(m.group()):x}>", name)


# Started in the background by a script (`cmd &`), a process inherits SIGINT ignored;
# the Ctrl-C tests (and the `halb` processes they interrupt) need it as a terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


_ROOT_AT_START: dict[str, str] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Snapshot the root namespace when a test that makes namespaces will run (1-2 s;
    `make mutate` runs pytest once per mutant, never with such a test)."""
    makes_namespaces = any(
        item.get_closest_marker("netns") or "netns" in getattr(item, "fixturenames", ())
        for item in session.items
    )
    if makes_namespaces and os.geteuid() == 0 and shutil.which("nft"):
        _ROOT_AT_START.update(root_netns_snapshot())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole run, lab tests included, left the root network namespace as it was."""
    if not _ROOT_AT_START:
        return
    now = root_netns_snapshot()
    changed = [k for k in _ROOT_AT_START if now[k] != _ROOT_AT_START[k]]
    if changed:
        for k in changed:
            print(f"\nroot network namespace changed during the tests: {k}\n"
                  f"before:\n{_ROOT_AT_START[k]}\nafter:\n{now[k]}", file=sys.stderr)  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def vtysh() -> list[str]:
    """FRR's vtysh as `make deps` unpacks it beside the venv (its package would start FRR here)."""
    root = ROOT / ".venv" / "frr"
    binary = root / "usr" / "bin" / "vtysh"
    if not binary.exists():
        if shutil.which("vtysh") is None:
            pytest.skip("needs FRR's vtysh (make deps unpacks it into .venv/frr)")
        return ["vtysh"]
    libs = next(root.glob("usr/lib/*/frr"))
    return ["env", f"LD_LIBRARY_PATH={libs}", str(binary)]


def frr_check(conf: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`vtysh -C` (FRR's own dry run) of a rendered frr.conf: every daemon's grammar, no daemon."""
    path = tmp / f"{uuid.uuid4().hex}.conf"
    path.write_text(conf)
    return subprocess.run([*vtysh(), "-C", "-f", str(path)], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


def haproxy_check(cfg: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` of a rendered config as the pod runs it: HOST_IP set (the
    downward API), HALB_COOKIE_KEY (the sticky Secret), the server-state file
    in place (haproxy-reload makes it)."""
    require_root_tools("haproxy")
    from components.edge_pod import SERVER_STATE_FILE

    state = tmp / f"server-state-{uuid.uuid4().hex}"
    state.write_text("1\n")
    path = tmp / f"{uuid.uuid4().hex}.cfg"
    path.write_text(cfg.replace(SERVER_STATE_FILE, str(state)))
    return subprocess.run(
        ["haproxy", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "HOST_IP": "192.0.2.11", "HALB_COOKIE_KEY": "k" * 32},
    )


def load_script(path: Path) -> ModuleType:
    """An image's Python helper (no .py suffix) as a module, registered in sys.modules
    under its name with `_` for `-` (its dataclasses look their module up there)."""
    import importlib.machinery
    import importlib.util

    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
