"""Run `__main__.py` under recording Pulumi mocks.

Used by the offline render and by the tests alike, so what the tests assert
on is exactly what `render` writes. Each resource is recorded with its
inputs (wire form: camelCase, secrets unwrapped and flagged), parent,
provider and dependencies.
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.settings import SETTINGS, get_root_resource, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from components.settings import PROJECT, RawConfig

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
# The marker Pulumi's wire format wraps secret values in.
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig
FAKE_DIGEST = "sha256:" + "0" * 64
CLUSTER_ID = "c-m-mock0001"
NODE_COMMAND = (
    "curl -fL https://rancher.example.invalid/system-agent-install.sh | sudo sh -s - "
    "--server https://rancher.example.invalid --token MOCKTOKEN --ca-checksum 0"
)


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
    """Echo inputs as outputs, plus what a provider would compute."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        meta = outputs.get("metadata")
        k8s_object = args.typ.startswith("kubernetes:") and not args.typ.endswith("Patch")
        if k8s_object and isinstance(meta, dict) and not meta.get("name"):
            outputs["metadata"] = {**meta, "name": autoname(args.name)}
        if args.typ == "docker:index/image:Image":
            repo = str(args.inputs.get("imageName", "image")).rsplit(":", 1)[0]
            outputs["repoDigest"] = f"{repo}@{FAKE_DIGEST}"
            outputs["baseImageName"] = args.inputs.get("imageName")
        if args.typ in ("rancher2:index/project:Project", "rancher2:index/namespace:Namespace"):
            return f"{CLUSTER_ID}:{args.name}", outputs
        return f"{args.name}_id", outputs

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "rancher2:index/getCluster:getCluster":
            cluster = {
                "id": CLUSTER_ID,
                "name": args.args.get("name"),
                "kubeConfig": "apiVersion: v1\nkind: Config\nclusters: []\n",
                "defaultProjectId": f"{CLUSTER_ID}:p-default",
                "systemProjectId": f"{CLUSTER_ID}:p-system",
                "clusterRegistrationToken": {"nodeCommand": NODE_COMMAND, "command": ""},
            }
            return cluster, []
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

    def _track_loop(self) -> None:
        loop = _ensure_event_loop()  # type: ignore[no-untyped-call]
        with self._lock:
            self.loops.add(loop)

    def Invoke(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        return super().Invoke(request)  # type: ignore[no-untyped-call]

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        return super().ReadResource(request)  # type: ignore[no-untyped-call]

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        self._track_loop()
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        secrets: list[str] = []
        inputs = _plain(rpc.deserialize_properties(request.object), "", secrets)
        with self._lock:
            self.recorded.append(
                Recorded(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent or None,
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    dependencies=list(request.dependencies),
                    inputs=inputs,
                    secret_paths=secrets,
                    outputs=_plain(rpc.deserialize_properties(response.object), "", []),
                )
            )
        return response


def run_program(raw: RawConfig, stack: str) -> Run:
    """Run the real program under mocks with `raw` as the stack's config."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # A loop of this run's own, made before the mocks bind anything to one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(dict(raw.values), sorted(raw.secret_keys))
    set_root_resource(None)  # type: ignore[arg-type]  # a fresh Stack per run
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    SETTINGS.rpc_manager.clear()
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

    try:
        _sync_await(run_pulumi_func(program))
    finally:
        _close_loops(loop, monitor.loops)
    return Run(list(monitor.recorded), exports, secret_exports)


def _close_loops(main: asyncio.AbstractEventLoop, others: set[asyncio.AbstractEventLoop]) -> None:
    """Join the executor threads, then close their loops and this run's own."""
    main.run_until_complete(main.shutdown_default_executor())
    for loop in others - {main}:
        loop.close()
    main.close()
    asyncio.set_event_loop(None)
