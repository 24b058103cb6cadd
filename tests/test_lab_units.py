"""The lab's kubelet, pod-spec reader, volumes and DNS, without root.

These pin the translation from the rendered manifests to what podman runs:
a field the lab does not honour is refused, never dropped.
"""

from __future__ import annotations

import copy
import os
import struct
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import rendered

from halb.lab.dns import answer
from halb.lab.kubelet import BACKOFF_INITIAL_S, BACKOFF_MAX_S, RELIST_S, CState, Kubelet
from halb.lab.podspec import PodSpecError, RunContext, parse_daemonset, podman_run_args
from halb.lab.rtsched import RT_PERIOD_US, RT_RUNTIME_US
from halb.lab.volumes import DATA, payload, write_atomic
from halb.render import manifests


def containers_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}


def edge_doc() -> dict[str, Any]:
    (doc,) = [d for d in manifests(rendered("lab")) if d["kind"] == "DaemonSet"]
    return copy.deepcopy(doc)


def ctx(**over: Any) -> RunContext:
    base: dict[str, Any] = {
        "netns": "/run/netns/x",
        "node": "lb-1",
        "host_ip": "192.0.2.11",
        "pod_name": "edge-lb-1",
        "image": "localhost/halb/img:1",
        "volumes": {
            "haproxy-config": "/v/h",
            "keepalived-config": "/v/k",
            "keepalived-run": "/v/r",
            "watch": "/v/w",
            "haproxy-run": "/v/hr",
        },
        "resolv_conf": "/p/resolv.conf",
        "hosts_file": "/p/hosts",
        "log_path": "/l/x.log",
        "name": "c1",
        "labels": {"halb.lab/id": "t-1"},
    }
    return RunContext(**{**base, **over})


def test_the_rendered_edge_pod_is_read_whole() -> None:
    spec = parse_daemonset(edge_doc())
    names = [c.name for c in spec.containers]
    assert names == ["haproxy", "haproxy-reload", "keepalived", "haproxy-watch", "vrrp-exporter"]
    assert spec.grace_s == 44 and spec.dns_policy == "ClusterFirstWithHostNet"
    assert spec.container("keepalived").pre_stop and spec.container("haproxy").pre_stop
    assert spec.schedules_on({"role": "load-balancer"}) and not spec.schedules_on({"role": "apps"})
    ka = spec.container("keepalived")
    assert ka.capabilities == {"NET_ADMIN", "NET_RAW", "SETGID", "SYS_NICE"} and ka.run_as_user == 0
    watch = spec.container("haproxy-watch")
    assert watch.capabilities == frozenset() and watch.run_as_user == 65534 and watch.run_as_non_root
    hap = spec.container("haproxy")
    assert hap.readiness is not None and hap.readiness.port == 8404 and hap.readiness.period_s == 2
    assert hap.memory_limit == 512 * 2**20
    assert spec.volume("watch").medium == "Memory" and spec.volume("watch").size_limit == 2**20


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.template.spec.containers.0.startupProbe", {"exec": {"command": ["true"]}}),
        ("spec.template.spec.shareProcessNamespace", True),
        ("spec.template.spec.volumes.0.hostPath", {"path": "/"}),
        ("spec.template.spec.containers.1.securityContext.procMount", "Unmasked"),
        ("spec.template.spec.initContainers", [{"name": "x", "image": "y"}]),
        ("spec.template.spec.containers.2.volumeMounts.0.subPath", "x"),
    ],
)
def test_a_field_the_lab_does_not_run_is_refused_with_its_path(path: str, value: Any) -> None:
    doc = edge_doc()
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    with pytest.raises(PodSpecError) as err:
        parse_daemonset(doc)
    assert any(parts[-1] in p and "not run by the lab" in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.__setitem__("hostNetwork", False), "host-network pods only"),
        (lambda s: s.__setitem__("automountServiceAccountToken", True), "no API server"),
        (lambda s: s.__setitem__("dnsPolicy", "Default"), "dnsPolicy: Default"),
        (lambda s: s["containers"][0]["securityContext"].__setitem__("privileged", True), "privileged"),
        (lambda s: s["containers"][0]["ports"][0].__setitem__("hostPort", 8080), "hostPort must equal"),
        (
            lambda s: s["containers"][2]["env"][0]["valueFrom"]["fieldRef"].__setitem__(
                "fieldPath", "spec.x"
            ),
            "fieldRef",
        ),
    ],
)
def test_values_the_lab_cannot_honour_are_refused(edit: Any, words: str) -> None:
    doc = edge_doc()
    edit(doc["spec"]["template"]["spec"])
    with pytest.raises(PodSpecError) as err:
        parse_daemonset(doc)
    assert words in str(err.value)


def test_a_non_root_user_with_capabilities_needs_no_new_privileges() -> None:
    doc = edge_doc()
    sc = containers_of(doc)["haproxy-watch"]["securityContext"]
    sc["capabilities"] = {"drop": ["ALL"], "add": ["NET_RAW"]}
    parse_daemonset(doc)  # allowPrivilegeEscalation false: containerd and podman agree
    sc["allowPrivilegeEscalation"] = True
    with pytest.raises(PodSpecError, match="non-root user with capabilities"):
        parse_daemonset(doc)


def test_podman_args_carry_the_security_context_exactly() -> None:
    spec = parse_daemonset(edge_doc())
    ka = podman_run_args(spec.container("keepalived"), spec, ctx(secret_env={"HALB_HANDOFF_KEY": "h4nd"}))
    assert "HALB_HANDOFF_KEY" in ka and not any("h4nd" in a for a in ka)
    assert ka[ka.index("--cap-drop") + 1] == "all"
    assert ka[ka.index("--cap-add") + 1] == "NET_ADMIN,NET_RAW,SETGID,SYS_NICE"
    assert ka[ka.index("--user") + 1] == "0"
    assert "--read-only" in ka and "--read-only-tmpfs=false" in ka  # no podman /run or /tmp
    assert ka[ka.index("--security-opt") + 1] == "no-new-privileges"
    assert ka[ka.index("--memory") + 1] == str(64 * 2**20)
    assert "--env" in ka and "NODE_NAME=lb-1" in ka  # the downward API, resolved
    assert "/v/k:/etc/keepalived/nodes:ro" in ka and "/v/w:/run/halb:rw" in ka
    assert "--entrypoint" not in ka and ka[-1] == "localhost/halb/img:1"  # the image's ENTRYPOINT
    watch = podman_run_args(spec.container("haproxy-watch"), spec, ctx())
    assert "--cap-add" not in watch and watch[watch.index("--user") + 1] == "65534:65534"
    entry = watch[watch.index("--entrypoint") + 1]
    assert entry.startswith('["/usr/local/bin/haproxy-watch"')  # `command` replaces ENTRYPOINT
    hap = podman_run_args(spec.container("haproxy"), spec, ctx(secret_env={"HALB_COOKIE_KEY": "s3cret"}))
    # A Secret's value goes to podman through its environment, never on the command line.
    assert "HALB_COOKIE_KEY" in hap and not any("s3cret" in a for a in hap)
    assert hap[-7:] == ["haproxy", "-W", "-db", "-S", "/run/haproxy/master.sock,mode,666", "-f",
                        "/usr/local/etc/haproxy/haproxy.cfg"]  # fmt: skip
    assert "HOST_IP=192.0.2.11" in hap  # status.hostIP
    assert "--network" in hap and hap[hap.index("--network") + 1] == "ns:/run/netns/x"


def test_only_sys_nice_containers_get_the_rt_budget() -> None:
    """Where the kernel schedules RT per cgroup, keepalived runs under the lab's parent with a budget."""
    spec = parse_daemonset(edge_doc())
    keys = {"HALB_HANDOFF_KEY": "h"}
    ka = podman_run_args(spec.container("keepalived"), spec, ctx(rt_parent="/halb-x", secret_env=keys))
    assert ka[ka.index("--cgroup-parent") + 1] == "/halb-x"
    assert ka[ka.index("--cpu-rt-runtime") + 1] == str(RT_RUNTIME_US)
    assert ka[ka.index("--cpu-rt-period") + 1] == str(RT_PERIOD_US)
    assert "--cgroup-parent" not in podman_run_args(spec.container("keepalived"), spec, ctx(secret_env=keys))
    hap = podman_run_args(
        spec.container("haproxy"), spec, ctx(rt_parent="/halb-x", secret_env={"HALB_COOKIE_KEY": "c"})
    )
    assert "--cgroup-parent" not in hap and "--cpu-rt-runtime" not in hap


def test_the_rt_parent_is_journalled_before_it_is_made_and_removed_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from halb.lab import rtsched
    from halb.lab.journal import Journal

    root = tmp_path / "cgroup"
    for ctrl in ("cpu", "memory"):
        (root / ctrl).mkdir(parents=True)
    (root / "cpu" / "cpu.rt_runtime_us").write_text("950000")
    monkeypatch.setattr(rtsched, "CGROUP_ROOT", root)
    monkeypatch.setattr(rtsched, "CPU_V1", root / "cpu")
    journal = Journal(tmp_path / "journal.jsonl")
    assert rtsched.make_parent("tabc", 2, journal) == "/halb-tabc"
    assert [e["name"] for e in journal.entries("cgroup")] == ["halb-tabc"]
    assert (root / "cpu" / "halb-tabc" / "cpu.rt_runtime_us").read_text() == str(4 * rtsched.RT_RUNTIME_US)
    (root / "memory" / "halb-tabc" / "libpod-1").mkdir(parents=True)  # what podman makes under it
    (root / "memory" / "halb-other").mkdir()  # not recorded: not ours
    # Plain directories stand in for cgroupfs, whose control files do not block rmdir.
    (root / "cpu" / "halb-tabc" / "cpu.rt_runtime_us").unlink()
    assert rtsched.remove(journal) == []
    assert not (root / "cpu" / "halb-tabc").exists() and not (root / "memory" / "halb-tabc").exists()
    assert (root / "memory" / "halb-other").exists()


def test_an_rt_budget_the_kernel_refuses_is_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other labs' budgets leave too little (the kernel's EINVAL): a LabError naming why, no traceback."""
    from halb.lab import rtsched
    from halb.lab.base import LabError
    from halb.lab.journal import Journal

    cpu = tmp_path / "cpu"
    (cpu / "halb-tabc" / "cpu.rt_runtime_us").mkdir(parents=True)  # a write there fails, as EINVAL would
    (cpu / "cpu.rt_runtime_us").write_text("950000")
    monkeypatch.setattr(rtsched, "CPU_V1", cpu)
    with pytest.raises(
        LabError, match=r"cannot give it 400000 us of RT time a second .*take one of them down"
    ):
        rtsched.make_parent("tabc", 2, Journal(tmp_path / "journal.jsonl"))


def test_lab_down_kills_what_is_left_in_its_own_cgroup_and_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task still in the recorded parent (a conmon a moment after its container) is killed, then
    the parent removed; the old code left the parent behind."""
    from halb.lab import rtsched
    from halb.lab.journal import Journal

    root = tmp_path / "cgroup"
    parent = root / "cpu" / "halb-tabc"
    (parent / "conmon").mkdir(parents=True)
    (parent / "conmon" / "cgroup.procs").write_text("424242\n")
    monkeypatch.setattr(rtsched, "CGROUP_ROOT", root)
    killed: list[int] = []

    def kill(pid: int, sig: int) -> None:
        killed.append(pid)
        (parent / "conmon" / "cgroup.procs").unlink()  # the task gone: cgroupfs empties it

    monkeypatch.setattr(os, "kill", kill)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("cgroup", name="halb-tabc")
    assert rtsched.remove(journal, wait_s=1.0) == []
    assert killed == [424242] and not parent.exists()


def test_dependent_variables_in_command_are_expanded_as_the_kubelet_does() -> None:
    from halb.lab.podspec import expand

    env = {"HOST_IP": "192.0.2.11"}
    assert expand("--listen=$(HOST_IP)", env) == "--listen=192.0.2.11"
    assert expand("$(NOPE) $$(HOST_IP) $$", env) == "$(NOPE) $(HOST_IP) $"
    spec = parse_daemonset(edge_doc())
    exporter = podman_run_args(spec.container("vrrp-exporter"), spec, ctx())
    assert "192.0.2.11" in exporter[exporter.index("--entrypoint") + 1]


def test_runtime_default_capabilities_when_none_are_dropped() -> None:
    doc = edge_doc()
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] = {
        "drop": ["NET_RAW"]
    }
    hap = parse_daemonset(doc).container("haproxy")
    assert "CHOWN" in hap.capabilities and "NET_RAW" not in hap.capabilities  # containerd's set, minus drop


def test_atomic_writer_layout_and_update(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    write_atomic(target, {"a.conf": (b"one", 0o400), "b.conf": (b"two", 0o400)})
    assert os.readlink(target / "a.conf") == f"{DATA}/a.conf"
    assert (target / "a.conf").read_bytes() == b"one" and (target / "a.conf").stat().st_mode & 0o777 == 0o400
    first = os.readlink(target / DATA)
    write_atomic(target, {"a.conf": (b"three", 0o400)})
    assert (target / "a.conf").read_bytes() == b"three"
    assert not (target / "b.conf").exists() and not (target / first).exists()  # old keys and payload gone


def test_payload_from_the_rendered_objects() -> None:
    docs = manifests(rendered("lab"))
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    spec = parse_daemonset(edge_doc())
    files = payload(spec.volume("keepalived-config"), objects)
    assert set(files) == {"lb-1.conf", "lb-2.conf", "lb-1.nft", "lb-2.nft"}
    assert all(mode == 0o400 for _, mode in files.values())
    assert payload(spec.volume("haproxy-config"), objects)["haproxy.cfg"][1] == 0o644


def _query(name: str, qtype: int = 1) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 1) + q + struct.pack("!HH", qtype, 1) + b"\0" * 11


def test_dns_answers_a_records_and_nxdomain() -> None:
    records = {"shop.web.svc.cluster.local": ["192.0.2.250", "192.0.2.251"]}
    reply = answer(_query("shop.web.svc.cluster.local"), records, 5)
    qid, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
    assert qid == 0x1234 and flags & 0xF == 0 and ancount == 2
    assert bytes([192, 0, 2, 250]) in reply and bytes([192, 0, 2, 251]) in reply
    assert struct.unpack("!HHHH", answer(_query("shop.web.svc.cluster.local", 28), records, 5)[:8])[3] == 0
    assert struct.unpack("!HH", answer(_query("nope.web.svc.cluster.local"), records, 5)[:4])[1] & 0xF == 3
    assert struct.unpack("!HH", answer(b"\x12\x34\x01", records, 5)[:4])[1] & 0xF == 1  # FORMERR


def test_kubelet_backoff_is_the_kubelets() -> None:
    kubelet = Kubelet.__new__(Kubelet)
    st = CState("haproxy")
    delays = []
    t = 1000.0
    for _ in range(8):
        kubelet._schedule(st, t, ran_s=5.0)
        delays.append(st.next_start_at - t)
        t = st.next_start_at + 5
    assert delays == [RELIST_S, 10, 20, 40, 80, 160, 300, 300]
    assert BACKOFF_INITIAL_S == 10 and BACKOFF_MAX_S == 300
    kubelet._schedule(st, t, ran_s=600.0)  # ran ten minutes: starts over
    assert st.next_start_at - t == RELIST_S


def test_the_lock_file_goes_with_the_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test lab left a `<prefix>.lock` behind: hundreds in /run/halb-lab."""
    from halb.lab.state import locked

    monkeypatch.setenv("HALB_LAB_STATE", str(tmp_path))
    (tmp_path / "kept").mkdir()  # a lab that still exists keeps its lock file
    with locked("kept", lambda _: None, "test"):
        pass
    with locked("gone", lambda _: None, "test"):
        assert (tmp_path / "gone.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "kept.lock"]


def test_a_waiter_never_holds_a_lock_file_its_holder_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl
    import threading

    from halb.lab.state import locked

    monkeypatch.setenv("HALB_LAB_STATE", str(tmp_path))
    said: list[str] = []
    inside, leave = threading.Event(), threading.Event()

    def waiter() -> None:
        with locked("lab", said.append, "waiter"):
            inside.set()
            leave.wait(10)

    with locked("lab", lambda _: None, "holder"):
        thread = threading.Thread(target=waiter)
        thread.start()
        for _ in range(50):  # bounded: until the waiter has said it waits
            if said:
                break
            threading.Event().wait(0.05)
        assert said == [f"waiting for `lab holder` (pid {os.getpid()}) to finish with lab 'lab'"]
    try:
        assert inside.wait(5)
        # The waiter holds the file now at the path, not the removed one: a third party must wait.
        with (tmp_path / "lab.lock").open("a+") as third, pytest.raises(BlockingIOError):
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        leave.set()
        thread.join(10)
    assert not (tmp_path / "lab.lock").exists()


def test_kubelet_notes_from_parallel_stops_stay_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet stops a pod's containers in parallel threads; each note is one
    line of its log (print's text and newline were two writes, and lines ran together)."""
    import io
    import re
    import threading
    import time
    from types import SimpleNamespace

    class Slow(io.StringIO):
        def write(self, s: str) -> int:
            time.sleep(0.0002)  # a thread switch between two writes, as under load
            return super().write(s)

    out = Slow()
    monkeypatch.setattr("sys.stdout", out)
    me = cast(Kubelet, SimpleNamespace(pf=SimpleNamespace(node="lb-1")))

    def notes(i: int) -> None:
        for j in range(40):
            Kubelet.note(me, f"c{i}: note {j}")

    threads = [threading.Thread(target=notes, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 160
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d kubelet\[lb-1\]: c\d: note \d+", line) for line in lines), lines


@pytest.mark.parametrize(
    ("cpu", "cpu_limit", "memory_limit", "want"),
    [
        (".5", "1", "512Mi", (0.5, 1.0, 512 * 2**20)),
        ("500u", "1e3", "1e9", (0.0005, 1000.0, 10**9)),
        ("100m", "2", "0.5Gi", (0.1, 2.0, 2**29)),
    ],
)
def test_the_lab_reads_every_quantity_the_settings_accept(
    cpu: str, cpu_limit: str, memory_limit: str, want: tuple[float, float, int]
) -> None:
    """One parser (Kubernetes' grammar) for settings and lab: `.5`, `1e3`, `500u` included."""
    from conftest import stack_raw, with_overrides

    from halb.mockrun import run_program

    resources = {"cpu": cpu, "cpuLimit": cpu_limit, "memory": "128Mi", "memoryLimit": memory_limit}
    run = run_program(with_overrides(stack_raw("lab"), loadBalancer={"resources": resources}), "lab")
    (doc,) = [d for d in manifests(run) if d["kind"] == "DaemonSet"]
    hap = parse_daemonset(doc).container("haproxy")
    assert (hap.cpu_request, hap.cpu_limit, hap.memory_limit) == pytest.approx(want)


class _Guarded:
    """A kubelet lock that knows whether this thread holds it."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.RLock()
        self.held = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.held += 1

    def __exit__(self, *_: object) -> None:
        self.held -= 1
        self._lock.release()


@pytest.mark.parametrize(("kind", "results"), [("readiness", [True, False]), ("liveness", [False, False])])
def test_probe_threads_change_shared_status_under_the_lock(
    kind: str, results: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main loop reads and writes the containers' status under `lock`: the
    probe threads must too (ready, probe_failures, the unhealthy set)."""
    import threading
    from types import SimpleNamespace

    from halb.lab import kubelet as kubelet_mod
    from halb.lab.podspec import Probe

    guard = _Guarded()
    unguarded: list[str] = []

    class Watched(dict[str, Any]):
        def __setitem__(self, key: str, value: Any) -> None:
            if not guard.held:
                unguarded.append(f"probe_failures[{key}]")
            super().__setitem__(key, value)

    class WatchedSet(set[str]):
        def add(self, item: str) -> None:
            if not guard.held:
                unguarded.append("unhealthy")
            super().add(item)

    class WatchedState(CState):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in ("ready", "probe_failures") and not guard.held:
                unguarded.append(name)
            super().__setattr__(name, value)

    monkeypatch.setattr(kubelet_mod, "setns_net", lambda _: None)
    spec = parse_daemonset(edge_doc())
    c = spec.container("haproxy")
    probe = Probe("http", period_s=0.01, failure_threshold=1, success_threshold=1)
    k = Kubelet.__new__(Kubelet)
    k.pf = cast(Any, SimpleNamespace(netns="/run/netns/x", node="lb-1"))
    k.lock = cast(Any, guard)
    k.stopping = threading.Event()
    k.unhealthy = WatchedSet()
    with guard:
        st = WatchedState(c.name, state="running", id="c1", started_at=0.0, ready=kind == "liveness")
        st.probe_failures = Watched()
    k.states = {c.name: st}
    answers = iter(results)

    def once(_c: Any, _p: Any) -> bool:
        ok = next(answers, None)
        if ok is None:
            k.stopping.set()
            return False
        return ok

    monkeypatch.setattr(k, "_probe_once", once)
    monkeypatch.setattr(k, "write_status", lambda: None)
    k._probe_loop(c, kind, probe)
    assert k.stopping.is_set()
    assert unguarded == []


def test_secret_key_refs_resolve_from_rendered_secrets_or_fail_as_the_kubelet_does() -> None:
    from halb.lab.podspec import Container, EnvVar, secret_env

    c = Container.__new__(Container)
    object.__setattr__(
        c, "env", (EnvVar("HOST_IP", field_path="status.hostIP"), EnvVar("K", secret_ref=("s", "key")))
    )
    assert secret_env(c, {"s": {"key": "v"}}) == {"K": "v"}
    assert secret_env(c, {}) == 'secret "s" not found'
    assert secret_env(c, {"s": {"other": "v"}}) == "couldn't find key key in Secret s"


def test_a_delay_line_that_cannot_be_set_up_is_one_lab_error_and_leaves_nothing() -> None:
    """A namespace that is not there (or a tool that refuses): LabError naming the command,
    not a CalledProcessError traceback out of the bench; no relay process left running."""
    from halb.lab.base import LabError
    from halb.lab.jitter import JitterLink

    line = JitterLink("halb-no-such-namespace-x", "p1", delay_ms=20, jitter_ms=10, seconds=1)
    with pytest.raises(LabError, match="halb-no-such-namespace-x"):
        line.__enter__()
    assert line.proc is None


def test_a_stall_reaches_every_process_under_the_containers_first() -> None:
    """_descendants: the first process and its children's children (HAProxy's workers, FRR's daemons)."""
    import signal
    import subprocess

    from halb.lab.base import wait_until
    from halb.lab.faults import _descendants

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        assert wait_until(lambda: len(_descendants(parent.pid)) == 3, 5, poll=0.05)
        found = _descendants(parent.pid)
        assert found[0] == parent.pid and os.getpid() not in found
    finally:
        for pid in reversed(_descendants(parent.pid)):
            os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=5)
