"""A rendered pod template, read the way the kubelet reads it; pure.

`parse_daemonset` turns a DaemonSet from `halb render`'s manifests into a
`PodSpec` the lab's kubelet runs. Every field the lab honours is listed in
`ALLOWED`; anything else in the template is refused with its path, so a new
field in the manifests can never silently diverge between lab and cluster.
`podman_run_args` is the one translation of a container into `podman run`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.problems import InputError
from components.values import quantity as parse_quantity
from halb.lab.rtsched import RT_PERIOD_US, RT_RUNTIME_US

# The kubelet's container runtime (containerd) gives a container these
# capabilities unless it drops them; podman's own default set differs, so the
# lab always passes the effective set explicitly.
RUNTIME_DEFAULT_CAPS = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    }
)  # fmt: skip
FIELD_REFS = ("spec.nodeName", "status.hostIP", "status.podIP", "metadata.name", "metadata.namespace")
DNS_POLICIES = ("ClusterFirstWithHostNet",)
# Kubernetes defaults the lab applies where the template leaves a field out.
DEFAULT_GRACE_S = 30
DEFAULT_MODE = 0o644

# What the lab honours, by path pattern (`[]` stands for any list index).
# A key of the template not matched here is refused.
ALLOWED = {
    "": {"metadata", "spec"},
    "metadata": {"labels", "annotations"},
    "spec": {
        "affinity", "hostNetwork", "dnsPolicy", "automountServiceAccountToken", "priorityClassName",
        "terminationGracePeriodSeconds", "securityContext", "containers", "volumes", "imagePullSecrets",
        "tolerations", "restartPolicy",
    },
    "spec.affinity": {"nodeAffinity"},
    "spec.affinity.nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution"},
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms"},
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]": {
        "matchExpressions"
    },
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]"
    ".matchExpressions[]": {"key", "operator", "values"},
    "spec.securityContext": {"seccompProfile", "runAsUser", "runAsGroup", "runAsNonRoot"},
    "spec.securityContext.seccompProfile": {"type"},
    "spec.imagePullSecrets[]": {"name"},
    "spec.tolerations[]": {"key", "operator", "value", "effect"},
    "spec.volumes[]": {"name", "secret", "configMap", "emptyDir"},
    "spec.volumes[].secret": {"secretName", "defaultMode", "items", "optional"},
    "spec.volumes[].configMap": {"name", "defaultMode", "items", "optional"},
    "spec.volumes[].secret.items[]": {"key", "path", "mode"},
    "spec.volumes[].configMap.items[]": {"key", "path", "mode"},
    "spec.volumes[].emptyDir": {"medium", "sizeLimit"},
    "spec.containers[]": {
        "name", "image", "imagePullPolicy", "command", "args", "env", "ports", "readinessProbe",
        "livenessProbe", "lifecycle", "resources", "securityContext", "volumeMounts",
    },
    "spec.containers[].env[]": {"name", "value", "valueFrom"},
    "spec.containers[].env[].valueFrom": {"fieldRef", "secretKeyRef"},
    "spec.containers[].env[].valueFrom.fieldRef": {"fieldPath", "apiVersion"},
    "spec.containers[].env[].valueFrom.secretKeyRef": {"name", "key"},
    "spec.containers[].ports[]": {"name", "containerPort", "hostPort", "protocol"},
    "spec.containers[].readinessProbe": {
        "httpGet", "exec", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold",
        "initialDelaySeconds",
    },
    "spec.containers[].livenessProbe": {
        "httpGet", "exec", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold",
        "initialDelaySeconds",
    },
    "spec.containers[].readinessProbe.httpGet": {"path", "port", "scheme"},
    "spec.containers[].livenessProbe.httpGet": {"path", "port", "scheme"},
    "spec.containers[].readinessProbe.exec": {"command"},
    "spec.containers[].livenessProbe.exec": {"command"},
    "spec.containers[].lifecycle": {"preStop"},
    "spec.containers[].lifecycle.preStop": {"exec"},
    "spec.containers[].lifecycle.preStop.exec": {"command"},
    "spec.containers[].resources": {"requests", "limits"},
    "spec.containers[].resources.requests": {"cpu", "memory"},
    "spec.containers[].resources.limits": {"cpu", "memory"},
    "spec.containers[].securityContext": {
        "runAsUser", "runAsGroup", "runAsNonRoot", "privileged", "allowPrivilegeEscalation",
        "readOnlyRootFilesystem", "capabilities", "seccompProfile",
    },
    "spec.containers[].securityContext.capabilities": {"add", "drop"},
    "spec.containers[].securityContext.seccompProfile": {"type"},
    "spec.containers[].volumeMounts[]": {"name", "mountPath", "readOnly"},
}  # fmt: skip
# Values of an allowed key that are free-form maps: not walked.
OPAQUE = {"metadata.labels", "metadata.annotations", "spec.containers[].resources.requests",
          "spec.containers[].resources.limits"}  # fmt: skip


class PodSpecError(InputError):
    """What of a pod template the lab cannot honour: one line per field."""


@dataclass(frozen=True)
class Probe:
    kind: str  # "http" | "exec"
    path: str = "/"
    port: int = 0
    command: tuple[str, ...] = ()
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay_s: float = 0.0


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field_path: str | None = None
    secret_ref: tuple[str, str] | None = None  # (Secret name, key)


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[EnvVar, ...]
    mounts: tuple[Mount, ...]
    ports: tuple[tuple[str, int], ...]  # (name, port); hostPort == containerPort
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool
    read_only_root: bool
    no_new_privileges: bool
    capabilities: frozenset[str]  # the effective set, as containerd computes it
    seccomp: str  # RuntimeDefault | Unconfined
    readiness: Probe | None
    liveness: Probe | None
    pre_stop: tuple[str, ...] | None
    memory_limit: int | None  # bytes
    cpu_limit: float | None  # CPUs
    cpu_request: float | None


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # secret | configMap | emptyDir
    source: str = ""  # the Secret's or ConfigMap's name
    default_mode: int = DEFAULT_MODE
    items: tuple[tuple[str, str, int | None], ...] = ()  # (key, path, mode)
    medium: str = ""
    size_limit: int | None = None  # bytes
    optional: bool = False  # a missing Secret or ConfigMap: an empty volume, not a pod that cannot start


@dataclass(frozen=True)
class PodSpec:
    name: str  # the DaemonSet's
    namespace: str
    labels: Mapping[str, str]
    containers: tuple[Container, ...]
    volumes: tuple[Volume, ...]
    grace_s: int
    dns_policy: str
    node_terms: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...]  # OR of ANDs
    tolerations: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    def volume(self, name: str) -> Volume:
        return next(v for v in self.volumes if v.name == name)

    def container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def schedules_on(self, labels: Mapping[str, str]) -> bool:
        """Required node affinity, as the scheduler evaluates it (In, NotIn, Exists)."""
        if not self.node_terms:
            return True
        return any(all(_matches(expr, labels) for expr in term) for term in self.node_terms)


def _matches(expr: tuple[str, str, tuple[str, ...]], labels: Mapping[str, str]) -> bool:
    key, op, values = expr
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def quantity(text: Any) -> float:
    """A Kubernetes quantity ('100m', '64Mi', '.5', '1e3', 2) as a number: the settings' parser."""
    value = parse_quantity(str(text))
    if value is None or value < 0:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    return float(value)


def _walk(value: Any, path: str, pattern: str, problems: list[str]) -> None:
    if pattern in OPAQUE:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", pattern + "[]", problems)
        return
    if not isinstance(value, dict):
        return
    allowed = ALLOWED.get(pattern)
    if allowed is None:
        return  # a leaf mapping the parser reads whole (none today)
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if key not in allowed:
            problems.append(f"{sub}: not run by the lab (halb/lab/podspec.py honours {len(ALLOWED)} paths)")
            continue
        _walk(item, sub, f"{pattern}.{key}" if pattern else key, problems)


def _probe(
    raw: Mapping[str, Any] | None, ports: Mapping[str, int], where: str, problems: list[str]
) -> Probe | None:
    if not raw:
        return None
    common: dict[str, Any] = {
        "period_s": float(raw.get("periodSeconds", 10)),
        "timeout_s": float(raw.get("timeoutSeconds", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "initial_delay_s": float(raw.get("initialDelaySeconds", 0)),
    }
    if ("httpGet" in raw) == ("exec" in raw):
        problems.append(f"{where}: exactly one of httpGet, exec")
        return None
    if "exec" in raw:
        return Probe("exec", command=tuple(raw["exec"]["command"]), **common)
    get = raw["httpGet"]
    if get.get("scheme", "HTTP") != "HTTP":
        problems.append(f"{where}.httpGet.scheme: only HTTP is run by the lab")
    port = get.get("port")
    if isinstance(port, str):
        if port not in ports:
            problems.append(f"{where}.httpGet.port: {port!r} names none of the container's ports")
            return None
        port = ports[port]
    return Probe("http", path=str(get.get("path", "/")), port=int(port or 0), **common)


def _container(
    raw: Mapping[str, Any], pod_sc: Mapping[str, Any], where: str, problems: list[str]
) -> Container:
    sc = raw.get("securityContext", {})
    caps = sc.get("capabilities", {})
    drop = set(caps.get("drop", []))
    add = set(caps.get("add", []))
    effective = (set() if "ALL" in drop else set(RUNTIME_DEFAULT_CAPS) - drop) | add
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged: the lab does not run privileged containers")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    no_new_privs = sc.get("allowPrivilegeEscalation") is False
    if uid not in (None, 0) and effective and not no_new_privs:
        # containerd leaves a non-root user's capabilities in the bounding set
        # only; podman would make them ambient. Only no-new-privileges makes
        # the two indistinguishable.
        problems.append(
            f"{where}.securityContext: a non-root user with capabilities and privilege escalation "
            "allowed cannot be reproduced by the lab; drop ALL or set allowPrivilegeEscalation: false"
        )
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type", "RuntimeDefault")
    if seccomp not in ("RuntimeDefault", "Unconfined"):
        problems.append(f"{where}.securityContext.seccompProfile.type: {seccomp} is not run by the lab")
    env = []
    for e in raw.get("env", []):
        source = e.get("valueFrom", {})
        if "secretKeyRef" in source:
            key_ref = source["secretKeyRef"]
            env.append(EnvVar(str(e["name"]), secret_ref=(str(key_ref.get("name")), str(key_ref.get("key")))))
            continue
        ref = source.get("fieldRef", {}).get("fieldPath")
        if "valueFrom" in e and ref not in FIELD_REFS:
            problems.append(f"{where}.env[{e.get('name')}]: fieldRef {ref!r} is not one of {FIELD_REFS}")
        env.append(EnvVar(str(e["name"]), e.get("value"), ref))
    ports = []
    for p in raw.get("ports", []):
        if p.get("hostPort", p["containerPort"]) != p["containerPort"]:
            problems.append(
                f"{where}.ports[{p.get('name')}]: hostPort must equal containerPort (host network)"
            )
        if p.get("protocol", "TCP") != "TCP":
            problems.append(f"{where}.ports[{p.get('name')}]: only TCP is run by the lab")
        ports.append((str(p.get("name", "")), int(p["containerPort"])))
    limits = raw.get("resources", {}).get("limits", {})
    requests = raw.get("resources", {}).get("requests", {})
    try:
        memory = int(quantity(limits["memory"])) if "memory" in limits else None
        cpu = quantity(limits["cpu"]) if "cpu" in limits else None
        cpu_req = quantity(requests["cpu"]) if "cpu" in requests else None
    except ValueError as err:
        problems.append(f"{where}.resources: {err}")
        memory = cpu = cpu_req = None
    pre_stop = raw.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    named = {name: number for name, number in ports if name}
    return Container(
        name=str(raw["name"]),
        image=str(raw["image"]),
        command=tuple(raw["command"]) if "command" in raw else None,
        args=tuple(raw["args"]) if "args" in raw else None,
        env=tuple(env),
        mounts=tuple(
            Mount(m["name"], m["mountPath"], bool(m.get("readOnly", False)))
            for m in raw.get("volumeMounts", [])
        ),
        ports=tuple(ports),
        run_as_user=uid,
        run_as_group=gid,
        run_as_non_root=bool(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))),
        read_only_root=bool(sc.get("readOnlyRootFilesystem", False)),
        no_new_privileges=no_new_privs,
        capabilities=frozenset(effective),
        seccomp=seccomp,
        readiness=_probe(raw.get("readinessProbe"), named, f"{where}.readinessProbe", problems),
        liveness=_probe(raw.get("livenessProbe"), named, f"{where}.livenessProbe", problems),
        pre_stop=tuple(pre_stop) if pre_stop else None,
        memory_limit=memory,
        cpu_limit=cpu,
        cpu_request=cpu_req,
    )


def _volume(raw: Mapping[str, Any]) -> Volume:
    name = str(raw["name"])
    if "emptyDir" in raw:
        ed = raw["emptyDir"] or {}
        size = int(quantity(ed["sizeLimit"])) if "sizeLimit" in ed else None
        return Volume(name, "emptyDir", medium=str(ed.get("medium", "")), size_limit=size)
    kind = "secret" if "secret" in raw else "configMap"
    src = raw[kind]
    items = tuple((str(i["key"]), str(i["path"]), i.get("mode")) for i in src.get("items", []))
    return Volume(
        name,
        kind,
        source=str(src["secretName"] if kind == "secret" else src["name"]),
        default_mode=int(src.get("defaultMode", DEFAULT_MODE)),
        items=items,
        optional=bool(src.get("optional", False)),
    )


def parse_daemonset(doc: Mapping[str, Any]) -> PodSpec:
    """The pod a DaemonSet runs on each of its nodes, or PodSpecError."""
    meta = doc.get("metadata", {})
    where = f"DaemonSet {meta.get('name')}: spec.template"
    template = doc.get("spec", {}).get("template", {})
    problems: list[str] = []
    _walk(template, "", "", problems)
    spec = template.get("spec", {})
    if spec.get("hostNetwork") is not True:
        problems.append(f"{where}.spec.hostNetwork: the lab runs host-network pods only (no pod network)")
    if spec.get("automountServiceAccountToken", True):
        problems.append(f"{where}.spec.automountServiceAccountToken: the lab has no API server to mount")
    if spec.get("restartPolicy", "Always") != "Always":
        problems.append(f"{where}.spec.restartPolicy: only Always (a DaemonSet's) is run by the lab")
    dns = spec.get("dnsPolicy", "ClusterFirst")
    if dns not in DNS_POLICIES:
        problems.append(f"{where}.spec.dnsPolicy: {dns} is not run by the lab (only {DNS_POLICIES})")
    pod_sc = spec.get("securityContext", {})
    containers = tuple(
        _container(c, pod_sc, f"{where}.spec.containers[{c.get('name')}]", problems)
        for c in spec.get("containers", [])
    )
    volumes = tuple(_volume(v) for v in spec.get("volumes", []))
    names = {v.name for v in volumes}
    for c in containers:
        for m in c.mounts:
            if m.volume not in names:
                problems.append(f"{where}.spec.containers[{c.name}].volumeMounts[{m.volume}]: no such volume")
    if problems:
        raise PodSpecError(problems)
    req = spec.get("affinity", {}).get("nodeAffinity", {})
    terms = req.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    node_terms = tuple(
        tuple((e["key"], e["operator"], tuple(e.get("values", []))) for e in t.get("matchExpressions", []))
        for t in terms
    )
    return PodSpec(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace", "default")),
        labels=dict(template.get("metadata", {}).get("labels", {})),
        containers=containers,
        volumes=volumes,
        grace_s=int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)),
        dns_policy=dns,
        node_terms=node_terms,
        tolerations=tuple(spec.get("tolerations", [])),
    )


@dataclass(frozen=True)
class RunContext:
    """Where one container of a pod runs: the lab host and the pod's files."""

    netns: str  # /run/netns/NAME
    node: str
    host_ip: str
    pod_name: str
    image: str  # the local image to run for the container's `image`
    volumes: Mapping[str, str]  # volume name -> host directory
    resolv_conf: str
    hosts_file: str
    log_path: str
    name: str  # the podman container name
    labels: Mapping[str, str]
    # The open-file limit the runtime gives (containerd: typically 1048576); the
    # lab gives what the pod needs when the machine allows it (halb/lab/limits.py).
    nofile: int | None = None
    # A cgroup parent with an RT budget (halb/lab/rtsched.py): containers that
    # hold CAP_SYS_NICE run under it with a budget of their own.
    rt_parent: str | None = None
    # secretKeyRef values, read by the kubelet from the rendered Secrets at start.
    secret_env: Mapping[str, str] = field(default_factory=dict)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: a defined variable is replaced, an
    undefined reference stays as written, `$$` is a literal `$`."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one, text)


def env_values(c: Container, pod: PodSpec, ctx: RunContext) -> list[tuple[str, str]]:
    """The container's environment, downward API resolved as the kubelet does
    (a value may refer to a variable defined before it)."""
    refs = {
        "spec.nodeName": ctx.node,
        "status.hostIP": ctx.host_ip,
        "status.podIP": ctx.host_ip,  # host network: the pod's IP is the node's
        "metadata.name": ctx.pod_name,
        "metadata.namespace": pod.namespace,
    }
    out: dict[str, str] = {}
    for e in c.env:
        if e.secret_ref is not None:
            out[e.name] = ctx.secret_env[e.name]
        else:
            out[e.name] = refs[e.field_path] if e.field_path else expand(e.value or "", out)
    return list(out.items())


def secret_env(c: Container, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str] | str:
    """The container's secretKeyRef values from Secret name -> data, or what the
    kubelet would say when one is missing (CreateContainerConfigError)."""
    out: dict[str, str] = {}
    for e in c.env:
        if e.secret_ref is None:
            continue
        name, key = e.secret_ref
        if name not in secrets:
            return f'secret "{name}" not found'
        if key not in secrets[name]:
            return f"couldn't find key {key} in Secret {name}"
        out[e.name] = secrets[name][key]
    return out


def podman_run_args(c: Container, pod: PodSpec, ctx: RunContext) -> list[str]:
    """`podman run` arguments for container `c` of `pod`, as the kubelet would run it."""
    args = [
        "run", "--detach", "--name", ctx.name, "--pull", "never",
        "--network", f"ns:{ctx.netns}",
        "--hostname", ctx.node,  # host network: the node's name
        # The kubelet writes these two files for the pod; podman's own would differ.
        "--dns", "none", "--no-hosts",
        "--volume", f"{ctx.resolv_conf}:/etc/resolv.conf:ro",
        "--volume", f"{ctx.hosts_file}:/etc/hosts:ro",
        "--log-driver", "k8s-file", "--log-opt", f"path={ctx.log_path}",
        "--pids-limit", "-1",
        *(["--ulimit", f"nofile={ctx.nofile}:{ctx.nofile}"] if ctx.nofile else []),
        # The effective set, exactly: containerd's defaults, minus drop, plus add.
        "--cap-drop", "all",
    ]  # fmt: skip
    for key, value in sorted(ctx.labels.items()):
        args += ["--label", f"{key}={value}"]
    if c.capabilities and c.run_as_user in (None, 0):
        args += ["--cap-add", ",".join(sorted(c.capabilities))]
    if c.run_as_user is not None:
        args += [
            "--user",
            f"{c.run_as_user}:{c.run_as_group}" if c.run_as_group is not None else str(c.run_as_user),
        ]
    if c.read_only_root:
        # Kubernetes mounts nothing writable over /run, /tmp: neither may podman.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if c.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    if c.seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    if c.memory_limit is not None:
        args += ["--memory", str(c.memory_limit), "--memory-swap", str(c.memory_limit)]
    if c.cpu_limit is not None:
        args += ["--cpus", f"{c.cpu_limit:g}"]
    if c.cpu_request is not None:
        args += ["--cpu-shares", str(max(2, int(c.cpu_request * 1024)))]
    if "SYS_NICE" in c.capabilities and ctx.rt_parent is not None:
        args += ["--cgroup-parent", ctx.rt_parent, "--cpu-rt-period", str(RT_PERIOD_US),
                 "--cpu-rt-runtime", str(RT_RUNTIME_US)]  # fmt: skip
    env = env_values(c, pod, ctx)
    for name, value in env:
        # A Secret's value never goes on a command line: podman takes it from its own environment.
        args += ["--env", name if name in ctx.secret_env else f"{name}={value}"]
    for m in c.mounts:
        vol = pod.volume(m.volume)
        # The kubelet mounts Secret and ConfigMap volumes read-only, always.
        ro = m.read_only or vol.kind in ("secret", "configMap")
        args += ["--volume", f"{ctx.volumes[m.volume]}:{m.path}:{'ro' if ro else 'rw'}"]
    # Kubernetes: `command` replaces the image's ENTRYPOINT (and its CMD);
    # `args` alone replaces only CMD.
    values = dict(env)
    if c.command is not None:
        args += ["--entrypoint", _json_list(tuple(expand(a, values) for a in c.command))]
    args.append(ctx.image)
    if c.args is not None:
        args += [expand(a, values) for a in c.args]
    return args


def _json_list(items: tuple[str, ...]) -> str:
    return json.dumps(list(items))
