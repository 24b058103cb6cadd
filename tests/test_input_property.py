"""Properties of hostile input, by class.

- Any YAML text (tags, anchors, aliases, odd scalars, duplicate keys) in a
  stack file ends in Settings or in one-line messages naming a key, fast.
- Any name the settings accept is one its consumer accepts: Kubernetes (node,
  Service, Secret key, env names; quantities), Linux (interface names, by
  the kernel itself), container tooling (image references, by podman) and
  HAProxy (host names, by `haproxy -c`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, haproxy_check, require_root_tools, stack_raw, with_overrides
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from components.haproxy_cfg import dns_backends, render_haproxy_cfg
from components.settings import RawConfig, Settings, SettingsError, parse_settings
from components.values import quantity
from halb.stackfile import StackFileError, load_stack_file

LAB = (ROOT / "Pulumi.lab.yaml").read_text()
P = "rancher-ha-lb:"

# --- arbitrary YAML --------------------------------------------------------------------------

TOKENS = [
    "2024-01-01", "2024-01-01T10:00:00Z", "12:30", "1_0:00", "1_000", "0x1F", "0o17", "017", "0b11",
    "yes", "no", "on", "off", "y", "~", "null", "", ".inf", "-.inf", ".nan", "1e400", "9" * 30, "-0",
    "true", "True", "TRUE", "'quoted'", '"dq"', '"\\x00"', "!!binary aGk=", "!!set {a, b}",
    "!!timestamp 2024-01-01", "!!str 12", "!!int 12", "!!int '12'", "!!float 1", "!!bool yes", "!foo x",
    "!!python/name:os.system", "!!omap [a: 1]", "{secure: v1:xx}", "[]", "{}", "<<", "8080", "shop",
    "192.0.2.10/24", "load-balancer", "apps", "*.x.invalid", "a b", "'a: b'", "é", "\u202e",
]  # fmt: skip
KEYS = ["name", "port", "env", "hostnames", "A", "role", "address", "1", "true", "~", "<<", "name", "a.b"]


@st.composite
def yaml_value(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(
        st.sampled_from(["token", "text", "list", "map", "anchor", "alias"] if depth < 3 else ["token"])
    )
    if kind == "token":
        return draw(st.sampled_from(TOKENS))
    if kind == "text":
        return json.dumps(draw(st.text(max_size=20)))
    if kind == "anchor":
        return f"&{draw(st.sampled_from('abc'))} {draw(yaml_value(depth + 1))}"
    if kind == "alias":
        return f"*{draw(st.sampled_from('abc'))}"
    items = draw(st.lists(yaml_value(depth + 1), max_size=4))
    if kind == "list":
        return "[" + ", ".join(items) + "]"
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=len(items), max_size=len(items)))
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, items, strict=True)) + "}"


PLACES = [
    ("  rancher-ha-lb:project: {}\n", None),
    ("  kubernetes:x: {}\n", None),
    ("  rancher-ha-lb:vrrp: {}\n", None),
    ("  rancher-ha-lb:cluster: {}\n", None),  # a duplicate key
    (None, "port: 8080"),
    (None, "replicas: 2"),
    (None, "hostnames: [shop.lab.invalid]"),
    (None, "routerId: 51"),
    (None, "lb-1: {role: load-balancer, address: 192.0.2.11}"),
]


def check_outcome(path: Path) -> None:
    start = time.process_time()  # CPU time: other load on the machine does not count
    try:
        parse_settings(load_stack_file(path))
    except (StackFileError, SettingsError) as err:
        assert err.problems
        for problem in err.problems:
            key, sep, message = problem.partition(": ")
            assert sep and message and key, problem
            assert "\n" not in problem and len(problem) < 600, problem
    assert time.process_time() - start < 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(PLACES), value=yaml_value())
@example(place=PLACES[1], value="&a [*a]")
@example(place=PLACES[4], value="{<<: [*a]}")
def test_any_yaml_ends_in_settings_or_messages(
    place: tuple[str | None, str | None], value: str, tmp_path: Path
) -> None:
    append, replace = place
    text = (
        LAB + append.format(value)
        if append
        else LAB.replace(replace or "", f"{(replace or '').split(':')[0]}: {value}", 1)
    )
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    path.write_text(text)
    check_outcome(path)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_end_in_settings_or_messages(data: bytes) -> None:
    path = Path("/tmp") / f"halb-prop-{uuid.uuid4().hex}.yaml"
    try:
        path.write_bytes(LAB.encode() + data)
        check_outcome(path)
    finally:
        path.unlink()


# --- arbitrary names: accepted means the consumer accepts it --------------------------------

# Kubernetes' own validation (apimachinery/pkg/util/validation), restated as the reference.
K8S_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
K8S_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
K8S_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
K8S_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
NAME_CHARS = st.sampled_from([*"abz09-._AZ*@ /:%$\u00e9", "\n"])
names = st.text(NAME_CHARS, min_size=0, max_size=70) | st.builds(
    lambda label, n: ".".join([label] * n),
    st.text(st.sampled_from("abc-1"), min_size=1, max_size=64),
    st.integers(1, 6),
)


def accepted(**changes: Any) -> Settings | None:
    try:
        return parse_settings(with_overrides(stack_raw("lab"), **changes))
    except SettingsError:
        return None


HOSTS = json.loads(stack_raw("lab").values[P + "hosts"])
SERVICES = json.loads(stack_raw("lab").values[P + "services"])


@settings(max_examples=300, deadline=None)
@given(name=names, role=st.sampled_from(["apps", "load-balancer"]))
def test_accepted_host_names_are_kubernetes_node_names(name: str, role: str) -> None:
    host = {"role": role, "address": "192.0.2.13"} if role == "load-balancer" else {"role": role}
    s = accepted(hosts={**HOSTS, name: host})
    if s is None:
        return
    assert len(name) <= 253 and K8S_SUBDOMAIN.fullmatch(name)
    if role == "load-balancer":  # its keepalived config is Secret key `<node>.conf`
        key = f"{name}.conf"
        assert len(key) <= 253 and K8S_CONFIGMAP_KEY.fullmatch(key)


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_accepted_service_names_are_dns_1035_labels(name: str) -> None:
    if accepted(services=[{**SERVICES[0], "name": name}, SERVICES[1]]) is not None:
        assert len(name) <= 63 and K8S_DNS1035.fullmatch(name)


@settings(max_examples=300, deadline=None)
@given(name=names)
def test_accepted_env_names_are_env_names_and_secret_keys(name: str) -> None:
    if accepted(services=[{**SERVICES[0], "env": {name: "v"}}, SERVICES[1]]) is not None:
        assert K8S_ENV_NAME.fullmatch(name) and K8S_CONFIGMAP_KEY.fullmatch(name) and len(name) <= 253


# apimachinery resource/quantity.go: <signedNumber><suffix>, suffix a binary SI, decimal SI
# or an integer exponent.
K8S_QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
quantities = st.text(st.sampled_from(list("0123456789.+-eEKMGTPinumk ")), max_size=8) | st.builds(
    lambda n, s: n + s,
    st.sampled_from(["1", "0.5", ".5", "5.", "128", "+2", "-1", "1.2.3"]),
    st.sampled_from(["", "m", "Mi", "Gi", "k", "K", "mi", "e3", "E", "e-2", "u", "n", "Ki "]),
)


@settings(max_examples=400, deadline=None)
@given(q=quantities)
def test_accepted_quantities_are_kubernetes_quantities(q: str) -> None:
    s = accepted(services=[{**SERVICES[0], "resources": {"cpu": q, "cpuLimit": "1000"}}, SERVICES[1]])
    if s is not None:
        assert K8S_QUANTITY.fullmatch(q)
        value = quantity(q)
        assert value is not None and 0 <= value <= 1000
    elif K8S_QUANTITY.fullmatch(q):
        value = quantity(q)  # refused for its value: negative or above the limit
        assert value is None or value < 0 or value > 1000


@pytest.mark.netns
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.sampled_from(list("ae09_.@-/: %lo")), min_size=0, max_size=17))
@example(name="lo")
@example(name="..")
@example(name="all")
def test_accepted_interface_names_are_taken_by_the_kernel(name: str, netns: str) -> None:
    if accepted(vip={"address": "192.0.2.10/24", "interface": name, "routerId": 51}) is None:
        return
    add = ["ip", "-n", netns, "link", "add", "name", name, "type", "veth", "peer", "name", "halbpeer"]
    result = subprocess.run(add, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    subprocess.run(["ip", "-n", netns, "link", "del", "dev", name], check=True, timeout=10)


images = st.text(st.sampled_from([*"abcAZ09-_.:/@", " ", "\n"]), min_size=0, max_size=30) | st.sampled_from(
    ["ghcr.io/x/y:1", "localhost:5000/a/b", "a__b", "a--b", "a@sha256:" + "a" * 64, "[::1]:5000/a", "a.b.c/d"]
)


@settings(max_examples=60, deadline=None)
@given(ref=images)
@example(ref="ghcr.io/example/shop:1.4.2")
def test_accepted_image_references_parse_for_podman(ref: str) -> None:
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    if accepted(services=[{**SERVICES[0], "image": ref}, SERVICES[1]]) is None:
        return
    # exit 0/1: the reference parsed (present / not present); 125: podman refused it.
    result = subprocess.run(
        ["podman", "image", "exists", ref], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode in (0, 1), result.stderr


hostnames = st.builds(
    lambda wild, labels: ("*." if wild else "") + ".".join(labels),
    st.booleans(),
    st.lists(st.text(st.sampled_from("ab0-*."), min_size=0, max_size=6), min_size=1, max_size=4),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hosts=st.lists(hostnames, min_size=1, max_size=4))
def test_accepted_hostnames_make_a_valid_haproxy_cfg(hosts: list[str], tmp_path: Path) -> None:
    s = accepted(services=[SERVICES[0], {**SERVICES[1], "hostnames": hosts}])
    if s is None:
        return
    require_root_tools("haproxy")
    result = haproxy_check(render_haproxy_cfg(s, dns_backends(s)), tmp_path)
    assert result.returncode == 0 and "[WARNING]" not in result.stderr, result.stderr


def test_raw_config_with_every_scalar_kind_never_crashes() -> None:
    """The engine's side: JSON with huge numbers, deep nesting, odd strings."""
    for value in ["1" * 5000, "[" * 5000 + "]" * 5000, "-" + "9" * 400, '"yes"', "1e999", "NaN"]:
        for key in ("vip", "services", "cluster", "vrrp"):
            raw = RawConfig({**stack_raw("lab").values, P + key: value})
            try:
                parse_settings(raw)
            except SettingsError as err:
                assert all("\n" not in p and len(p) < 600 for p in err.problems), err.problems


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(st.sampled_from([*"/az09._~!&+,;=:@?-#'\"\\{$% ", "\n"]), min_size=1, max_size=12))
@example(path="/healthz?full=1&x=y")
def test_accepted_health_paths_make_a_valid_haproxy_cfg(path: str, tmp_path: Path) -> None:
    s = accepted(services=[{**SERVICES[0], "healthPath": path}, SERVICES[1]])
    if s is None:
        return
    require_root_tools("haproxy")
    cfg = render_haproxy_cfg(s, dns_backends(s))
    assert f"    http-check send meth GET uri {path} ver HTTP/1.1 hdr Host " in cfg
    result = haproxy_check(cfg, tmp_path)
    assert result.returncode == 0 and "[WARNING]" not in result.stderr, result.stderr
