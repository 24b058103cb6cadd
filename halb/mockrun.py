"""Run `__main__.py` under recording Pulumi mocks that behave like Rancher and Kubernetes.

Used by the offline render and by the tests alike, so what the tests assert
on is exactly what `render` writes. Each resource is recorded with its
inputs (wire form: camelCase, secrets unwrapped and flagged), parent,
provider and dependencies. The mocks answer from a `halb.mockcluster.Rancher`
(by default: the stack's cluster with every listed host registered), which
refuses, creates and mints where the real APIs do; one `Rancher` passed to
several runs is one cluster across several `pulumi up`s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import runpy
import string
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from halb import sdk

sdk.require()  # the private names below, or one message saying which are gone
from pulumi.runtime import rpc  # noqa: E402
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks  # noqa: E402
from pulumi.runtime.settings import SETTINGS, get_root_resource, set_root_resource  # noqa: E402
from pulumi.runtime.stack import run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await  # noqa: E402

from components.settings import PROJECT, RawConfig, SettingsError, parse_settings  # noqa: E402
from components.stack_config import TOKEN_ENV  # noqa: E402
from halb.interrupts import held  # noqa: E402
from halb.mockcluster import ENV_TOKEN, Rancher  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
# The marker Pulumi's wire format wraps secret values in.
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig
FAKE_DIGEST = "sha256:" + "0" * 64
NODE = "kubernetes:core/v1:Node"
RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
PATCH = NODE + "Patch"


@dataclass
class Recorded:
    """One registered resource."""

    type: str
    name: str
    urn: str
    parent: str | None
    custom: bool
    provider: str | None
    dependencies: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)
    secret_paths: list[str] = field(default_factory=list)
    # What the provider returned: inputs plus what it computed or minted.
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    resources: list[Recorded]
    exports: dict[str, Any]
    secret_exports: set[str]
    # Resources read, not managed (`Node.get`): never applied, not rendered.
    reads: list[Recorded]
    rancher: Rancher

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str) -> Recorded:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def by_urn(self, urn: str) -> Recorded:
        return next(r for r in self.resources if r.urn == urn)


def _plain(value: Any, path: str, secrets: list[str]) -> Any:
    """Wire form to plain data: unwrap secrets (noting where), floats to ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            secrets.append(path)
            return _plain(value.get("value"), path, secrets)
        return {k: _plain(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def autoname(name: str) -> str:
    """What pulumi-kubernetes names an object given no metadata.name: `<name>-<8 random
    characters>`; here derived from the name, so a render is reproducible."""
    return f"{name}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class RecordingMocks(Mocks):
    """Answer like Rancher and Kubernetes would (`halb.mockcluster`): echo the inputs
    as outputs plus what a provider computes; refuse, create or mint where they do."""

    def __init__(self, rancher: Rancher | None = None) -> None:
        self.rancher = rancher if rancher is not None else Rancher.with_nodes("mock", ())

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = _plain(args.inputs, "", [])
        outputs = dict(args.inputs)
        meta = outputs.get("metadata")
        k8s_object = args.typ.startswith("kubernetes:") and not args.typ.endswith("Patch")
        if k8s_object and isinstance(meta, dict) and not meta.get("name"):
            # The provider names an object that has none (a Secret whose content
            # changes gets a new name, and its pods roll).
            outputs["metadata"] = {**meta, "name": autoname(args.name)}
        if args.resource_id and args.typ == NODE:  # a read (Node.get)
            return args.resource_id, self.rancher.read_node(args.resource_id)
        if args.typ == "pulumi:providers:rancher2":
            self.rancher.configure(
                inputs.get("apiUrl", ""), inputs.get("tokenKey") or os.environ.get(TOKEN_ENV)
            )
        elif args.typ == "pulumi:providers:kubernetes":
            self.rancher.connect(inputs.get("kubeconfig"))
        elif args.typ == PATCH:
            meta = inputs.get("metadata", {})
            self.rancher.patch_node(
                args.name, meta["name"], meta.get("labels", {}), meta.get("annotations", {})
            )
        elif args.typ == "rancher2:index/project:Project":
            self.rancher.create_project(inputs["name"])
            return f"{self.rancher.cluster_id}:{args.name}", outputs
        elif args.typ == "rancher2:index/namespace:Namespace":
            self.rancher.create_namespace(inputs["name"], inputs.get("labels", {}))
            return f"{self.rancher.cluster_id}:{args.name}", outputs
        elif args.typ == RANDOM_BYTES:
            # The provider mints once and keeps it in the state: here derived from
            # the resource's name, so every run of a stack mints the same.
            seed = hashlib.sha256(f"mock-minted:{args.name}".encode()).digest()
            raw = (seed * (int(inputs["length"]) // len(seed) + 1))[: int(inputs["length"])]
            outputs["base64"] = base64.b64encode(raw).decode()
            outputs["hex"] = raw.hex()
        elif args.typ == RANDOM_PASSWORD:
            # As the provider: `length` characters from the enabled classes (all by default).
            seed = hashlib.sha256(f"mock-minted:{args.name}".encode()).digest()
            chars = "".join(
                c for flag, c in (("upper", string.ascii_uppercase), ("lower", string.ascii_lowercase),
                                  ("numeric", string.digits), ("special", "!@#$%&*()-_=+[]{}<>:?"))
                if inputs.get(flag, True) is not False
            )  # fmt: skip
            if not chars:
                raise ValueError("random.RandomPassword: every character class is disabled")
            stream = (seed * (int(inputs["length"]) // len(seed) + 1))[: int(inputs["length"])]
            outputs["result"] = "".join(chars[b % len(chars)] for b in stream)
        elif args.typ == "docker:index/image:Image":
            repo = str(inputs.get("imageName", "image")).rsplit(":", 1)[0]
            outputs["repoDigest"] = f"{repo}@{FAKE_DIGEST}"
            outputs["baseImageName"] = inputs.get("imageName")
        return f"{args.name}_id", outputs

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "rancher2:index/getCluster:getCluster":
            # The schema's default is true: only an explicit false stops the minting.
            generate = args.args.get("generateKubeConfig") is not False
            return self.rancher.get_cluster(str(args.args.get("name")), generate), []
        # An empty list, not None: the mock monitor iterates the failures.
        return {}, []


class RecordingMonitor(MockMonitor):
    """MockMonitor that also keeps parent, provider and dependencies."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Recorded] = []
        self._lock = threading.Lock()
        # Pulumi calls the monitor from executor threads, and the mock monitor
        # gives each thread its own event loop; closed after the run (unclosed,
        # they print "Exception ignored ... Invalid file descriptor" at exit).
        self.loops: set[asyncio.AbstractEventLoop] = set()
        self.reads: list[Recorded] = []

    def _track_loop(self) -> None:
        loop = _ensure_event_loop()  # type: ignore[no-untyped-call]
        with self._lock:
            self.loops.add(loop)

    def Invoke(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        return super().Invoke(request)  # type: ignore[no-untyped-call]

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        self._record(self.recorded, request, request.object, response, list(request.dependencies))
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self._record(self.reads, request, request.properties, response, list(request.dependencies))
        return response

    def _record(self, into: list[Recorded], request: Any, props: Any, response: Any, deps: list[str]) -> None:
        secrets: list[str] = []
        inputs = _plain(rpc.deserialize_properties(props), "", secrets)
        with self._lock:
            into.append(
                Recorded(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent or None,
                    custom=bool(getattr(request, "custom", True)),
                    provider=request.provider or None,
                    dependencies=deps,
                    inputs=inputs,
                    secret_paths=secrets,
                    # A registration answers with `object`, a read with `properties`.
                    outputs=_plain(rpc.deserialize_properties(_answer(response)), "", []),
                )
            )


def _answer(response: Any) -> Any:
    return response.object if hasattr(response, "object") else response.properties


def stack_rancher(raw: RawConfig) -> Rancher:
    """The stack's cluster with every listed host registered (unlabelled), as render assumes."""
    try:
        s = parse_settings(raw)
    except SettingsError:
        return Rancher.with_nodes("", ())  # the program stops before it asks
    return Rancher.with_nodes(s.cluster, s.hosts)


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """The operator's environment for one run, as far as the program and providers read it."""
    saved = os.environ.get(TOKEN_ENV)
    os.environ.pop(TOKEN_ENV, None)
    os.environ.update({k: v for k, v in env.items() if k == TOKEN_ENV})
    try:
        yield
    finally:
        os.environ.pop(TOKEN_ENV, None)
        if saved is not None:
            os.environ[TOKEN_ENV] = saved


def run_program(
    raw: RawConfig,
    stack: str,
    rancher: Rancher | None = None,
    env: Mapping[str, str] | None = None,
) -> Run:
    """Run the real program under mocks with `raw` as the stack's config.

    `rancher`: the server and cluster it meets (default: `stack_rancher`);
    passed again, the next run sees what this one left, and resources this
    run no longer declares are deleted as the engine would. `env`: the
    operator's environment (default: a `RANCHER_TOKEN_KEY`, since a stack
    file never holds the token in plain).
    """
    rancher = rancher if rancher is not None else stack_rancher(raw)
    # A loop of this run's own, made before the mocks bind anything to one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks(rancher)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(dict(raw.values), sorted(raw.secret_keys))
    set_root_resource(None)  # type: ignore[arg-type]  # a fresh Stack per run
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    SETTINGS.rpc_manager.clear()
    with SETTINGS.lock:
        SETTINGS.outputs.clear()
    exports: dict[str, Any] = {}
    secret_exports: set[str] = set()

    async def program() -> None:
        runpy.run_path(str(MAIN), run_name="__main__")
        root = get_root_resource()
        for key, value in getattr(root, "outputs", {}).items():
            out = pulumi.Output.from_input(value)
            exports[key] = _plain(await out.future(), "", [])
            if await out.is_secret():
                secret_exports.add(key)

    # A Ctrl-C inside the engine's loop would leave its tasks half-stepped.
    with held(), _environment({TOKEN_ENV: ENV_TOKEN} if env is None else env):
        try:
            _sync_await(run_pulumi_func(program))
        except BaseException:
            _settle_rpcs()
            raise
        finally:
            _close_loops(loop, monitor.loops)
    run = Run(list(monitor.recorded), exports, secret_exports, list(monitor.reads), rancher)
    _delete_vanished(rancher, run)
    return run


def _close_loops(main: asyncio.AbstractEventLoop, others: set[asyncio.AbstractEventLoop]) -> None:
    """Join the executor threads, then close their loops and this run's own."""
    main.run_until_complete(main.shutdown_default_executor())
    for loop in others - {main}:
        loop.close()
    main.close()
    asyncio.set_event_loop(None)


def _settle_rpcs() -> None:
    """Let a failed run's RPCs in flight finish: a real process exits, here the next run would meet them."""
    rpcs = SETTINGS.rpc_manager.rpcs

    async def settle() -> None:
        while rpcs:
            pending = list(rpcs)
            rpcs.clear()
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout=30)

    _sync_await(settle())
    SETTINGS.rpc_manager.clear()
    with SETTINGS.lock:
        SETTINGS.outputs.clear()  # settled or failed: awaited again, they would fail the next run


def _delete_vanished(rancher: Rancher, run: Run) -> None:
    """The engine deletes what the last run declared and this one does not."""
    declared = {r.name for r in run.of_type(PATCH)}
    for name in sorted(set(rancher.patch_managers) - declared):
        rancher.delete_patch(name)
