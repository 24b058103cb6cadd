"""Read a `Pulumi.<stack>.yaml` the way the Pulumi engine would hand it over.

The file is hostile until read: at most `MAX_BYTES` of a regular file, UTF-8,
YAML 1.2 scalars (as the Pulumi CLI reads them: `no` and `2024-01-01` are
text, only true/false are booleans), only JSON's types (no `!!binary`,
`!!set`, timestamps or other tags), no duplicate keys, and at most
`MAX_NODES` values and `MAX_DEPTH` levels after YAML aliases are expanded,
so an alias bomb is refused before anything walks it. Numbers YAML 1.1 and
1.2 read differently (`017`, `1_000`, `0b11`) are refused, not guessed.

Without the Pulumi CLI, `secure:` values cannot be decrypted: they become a
placeholder (`REDACTED`, valid wherever a secret setting is) and their key is
marked secret, so the program still treats them as Pulumi secrets. A
`secure:` value where the program would put it in plain text is refused.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from components.problems import InputError
from components.settings import PROJECT, RANCHER, RANCHER_KEYS, SECRET_KEYS_ALLOWED, SECRET_RULE, RawConfig
from components.settings.engine import SECRET_LEAVES
from components.values import short_name

REDACTED = "REDACTED"
ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 256 * 1024
MAX_NODES = 10_000
MAX_DEPTH = 32

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, MAP, SEQ, MERGE = (
    _T + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
)
AMBIGUOUS = "tag:rancher-ha-lb,2024:ambiguous-number"

# YAML 1.2 core schema (what the Pulumi CLI's yaml.v3 reads into config values).
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
# Read as a number by YAML 1.1 (octal, binary, digit separators) but not, or
# not as the same number, by YAML 1.2.
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")
_YAML11_NUMBER = re.compile(
    r"^[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?)$"
)
_INT64 = (-(2**63), 2**64 - 1)


class StackFileError(InputError):
    """A stack file that cannot be read; each problem names the file or key and the fix."""


def stack_path(stack: str, config_file: str | None = None) -> Path:
    if config_file is not None:
        return Path(config_file)
    return ROOT / f"Pulumi.{stack}.yaml"


def plain_tag(value: str) -> str:
    """The tag YAML 1.2's core schema gives a plain (unquoted) scalar."""
    if _NULL.fullmatch(value):
        return NULL
    if _BOOL.fullmatch(value):
        return BOOL
    if value == "<<":
        return MERGE
    if _INT.fullmatch(value):
        return INT
    if _LEADING_ZERO.fullmatch(value) or (
        ("_" in value or value[:2] in ("0b", "0B")) and _YAML11_NUMBER.fullmatch(value)
    ):
        return AMBIGUOUS
    if _FLOAT.fullmatch(value):
        return FLOAT
    return STR


class _TooDeep(yaml.YAMLError):
    def __init__(self, line: int) -> None:
        super().__init__(f"line {line}: nested more than {MAX_DEPTH} levels deep")


class _TooMany(yaml.YAMLError):
    def __init__(self, line: int) -> None:
        super().__init__(
            f"line {line}: more than {MAX_NODES} values (a stack file may hold at most {MAX_NODES})"
        )


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars and a bounded nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return plain_tag(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Any, index: Any) -> Any:
        # The composer recurses per level: refuse deep input before Python's stack does.
        self._depth += 1
        try:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if self._depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark.line + 1)
            if not isinstance(event, yaml.AliasEvent):
                self._nodes += 1
                if self._nodes > MAX_NODES:  # stop composing now: this bounds the work too
                    raise _TooMany(event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: Any) -> int:
        # Only YAML 1.2 forms reach here (decimal, 0o, 0x): see plain_tag.
        return int(node.value, 0)


_Loader.add_constructor(INT, _Loader.construct_yaml_int)
_SHOW_TEXT = 40


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{short_name(key)}" if path else short_name(key)


def _not_allowed(path: str, tag: str) -> str:
    return (
        f"{path or 'the file'}: {_short_tag(tag)} is not allowed in a stack file (strings, numbers, "
        "true/false, null, lists and mappings only)"
    )


@dataclass
class _Walk:
    """One pass over the composed node graph, before anything is constructed:
    tags, keys, numbers, and every node's size and depth with aliases expanded."""

    root: Node
    problems: list[str] = field(default_factory=list)
    paths: dict[int, str] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    depths: dict[int, int] = field(default_factory=dict)

    def scalar(self, node: ScalarNode, path: str) -> None:
        tag, value = node.tag, str(node.value)
        shown = value[:_SHOW_TEXT]
        if tag == AMBIGUOUS:
            if _LEADING_ZERO.fullmatch(value):
                self.problems.append(
                    f"{path}: {shown} has a leading zero (YAML 1.1 reads it as octal, YAML 1.2 as decimal); "
                    "drop the zero or quote it"
                )
            else:
                self.problems.append(
                    f"{path}: {shown} is a number in YAML 1.1 but text in YAML 1.2; write it without "
                    "'_' or 0b, or quote it"
                )
            return
        if tag == MERGE:
            self.problems.append(f"{path}: '<<' merges mappings only as a key; quote it")
            return
        implicit = plain_tag(value) if node.style is None else STR
        if tag not in (STR, INT, FLOAT, BOOL, NULL) or (tag != STR and tag != implicit):
            self.problems.append(_not_allowed(path, tag))
            return
        if tag == INT:
            n = len(value.lstrip("+-"))
            if n > 20 or not _INT64[0] <= int(value, 0) <= _INT64[1]:
                self.problems.append(
                    f"{path}: a {n}-digit number; numbers must fit in 64 bits (quote it if it is text)"
                )

    def children(self, node: Node, path: str) -> list[tuple[Node, str]]:
        """Check a sequence or mapping node; its children with their paths."""
        if isinstance(node, SequenceNode):
            if node.tag != SEQ:
                self.problems.append(_not_allowed(path, node.tag))
                return []
            return [(child, _child(path, i)) for i, child in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        if node.tag != MAP:
            self.problems.append(_not_allowed(path, node.tag))
            return []
        out: list[tuple[Node, str]] = []
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    f"{path or 'the file'}: a key that is a list or mapping; keys are strings"
                )
                continue
            if key_node.tag == MERGE:
                out.append((value_node, path))
                continue
            key = str(key_node.value)
            if key_node.tag != STR:
                self.problems.append(
                    f"{path or 'the file'}: key {key[:_SHOW_TEXT]} is not a string; quote it"
                )
                continue
            line = key_node.start_mark.line + 1
            if key in first:
                self.problems.append(
                    f"{_child(path, key)}: duplicate key (line {line}, first on line {first[key]})"
                )
                continue
            first[key] = line
            # Below `config:`, a key is named by itself: `rancher-ha-lb:vip`.
            out.append((value_node, "" if (node is self.root and key == "config") else _child(path, key)))
        return out

    def run(self) -> None:
        """Depth-first and iterative (no recursion limit to hit)."""
        stack: list[tuple[Node, str, bool]] = [(self.root, "", False)]
        active: set[int] = set()
        kids: dict[int, list[Node]] = {}
        while stack:
            node, path, done = stack.pop()
            nid = id(node)
            if done:
                active.discard(nid)
                below = kids.pop(nid)
                # .get: a child still active is a cycle, already reported.
                self.sizes[nid] = 1 + sum(self.sizes.get(id(c), 1) for c in below)
                self.depths[nid] = 1 + max((self.depths.get(id(c), 1) for c in below), default=0)
                continue
            if nid in active:
                self.problems.append(
                    f"{self.paths[nid] or 'the file'}: a YAML alias inside its own anchor (a cycle)"
                )
                continue
            if nid in self.sizes:
                continue  # an alias to a node already walked: its size is known
            self.paths[nid] = path
            if isinstance(node, ScalarNode):
                self.scalar(node, path)
                self.sizes[nid] = self.depths[nid] = 1
                continue
            children = self.children(node, path)
            active.add(nid)
            kids[nid] = [c for c, _ in children]
            stack.append((node, path, True))
            for child, child_path in reversed(children):
                stack.append((child, child_path, False))


def _yaml_problem(path: Path, text: str, err: yaml.YAMLError) -> str:
    if isinstance(err, _TooDeep | _TooMany):
        return f"{path}: {err}"
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        char = err.character if isinstance(err.character, int) else ord(err.character)
        return f"{path}: not valid YAML (line {line}, column {column}: unacceptable character #x{char:04x})"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(p for p in (err.context, err.problem) if p)
        return f"{path}: not valid YAML ({where}{what})"
    return f"{path}: not valid YAML ({str(err).splitlines()[0]})"


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bounded(path: Path, limit: int = MAX_BYTES) -> bytes:
    """At most `limit` bytes of a regular file; a FIFO or device is refused, not read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise StackFileError(
            f"{path}: no such stack file (stacks here: {', '.join(known_stacks()) or 'none'})"
        ) from None
    except OSError as err:
        raise StackFileError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise StackFileError(f"{path}: not a regular file ({kind})")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise StackFileError(f"{path}: cannot read it ({err.strerror})") from None
    finally:
        os.close(fd)
    if size > limit:
        raise StackFileError(
            f"{path}: larger than {limit} bytes; a stack file may have at most {limit // 1024} KiB"
        )
    return b"".join(chunks)


def _decode_text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StackFileError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None
    return text.removeprefix("\ufeff")


def _compose(path: Path, text: str) -> tuple[Node | None, _Loader]:
    try:
        loader = _Loader(text)  # the reader checks every character here
        return loader.get_single_node(), loader
    except yaml.YAMLError as err:
        raise StackFileError(_yaml_problem(path, text, err)) from None
    except RecursionError:  # a guard; the depth limit should come first
        raise StackFileError(f"{path}: nested too deeply") from None


def _check(root: Node) -> None:
    walk = _Walk(root)
    walk.run()
    if walk.problems:
        raise StackFileError(walk.problems)
    size, depth = walk.sizes[id(root)], walk.depths[id(root)]
    if size <= MAX_NODES and depth <= MAX_DEPTH:
        return
    # Name the biggest (or deepest) top-level entry: that is where the aliases are.
    measure = walk.sizes if size > MAX_NODES else walk.depths
    worst = max(_top_level(root), key=lambda n: measure[id(n)], default=root)
    where = walk.paths.get(id(worst)) or "the file"
    if size > MAX_NODES:
        raise StackFileError(
            f"{where}: YAML aliases expand it to more than {MAX_NODES} values "
            f"(a stack file may hold at most {MAX_NODES})"
        )
    raise StackFileError(f"{where}: YAML aliases nest it more than {MAX_DEPTH} levels deep")


def _top_level(root: Node) -> list[Node]:
    out: list[Node] = []
    if isinstance(root, MappingNode):
        for key, value in root.value:
            if isinstance(key, ScalarNode) and key.value == "config" and isinstance(value, MappingNode):
                out += [v for _, v in value.value]
            else:
                out.append(value)
    return out


def _redact(value: Any, path: tuple[str | int, ...], found: list[tuple[str | int, ...]]) -> Any:
    """Replace `{secure: ...}` leaves by REDACTED, noting where they were."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            found.append(path)
            return REDACTED
        return {k: _redact(v, (*path, k), found) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, (*path, i), found) for i, v in enumerate(value)]
    return value


def _secret_allowed(key: str, below: tuple[str | int, ...]) -> bool:
    """Whether a `secure:` leaf at `key` + `below` stays secret all the way to the pod."""
    ns, _, name = key.partition(":")
    if not (ns == PROJECT or (ns == RANCHER and name in RANCHER_KEYS)):
        return True  # another provider's setting: its own business
    if not below:
        return key in SECRET_KEYS_ALLOWED and key not in SECRET_LEAVES
    # services[i].env.NAME (the program sends these through a Kubernetes Secret) and
    # bgp.peers[i].password (kept a secret; see components/settings/engine.py).
    if len(below) != 3:
        return False
    if key == f"{PROJECT}:services":
        return isinstance(below[0], int) and below[1] == "env" and isinstance(below[2], str)
    ok = below[0] == "peers" and isinstance(below[1], int) and below[2] == "password"
    return key == f"{PROJECT}:bgp" and ok


def _show_path(key: str, below: tuple[str | int, ...]) -> str:
    out = key
    for part in below:
        out = _child(out, part)
    return out


def _config_key(key: str) -> str | None:
    """`ns:name`, also from the older `ns:config:name`; None if it is neither
    (the Pulumi CLI refuses such a key). A key with no colon is passed on:
    the settings say which namespace was meant."""
    parts = key.split(":")
    if len(parts) == 3 and parts[1] == "config":
        parts = [parts[0], parts[2]]
    if len(parts) == 1 and parts[0]:
        return key
    if len(parts) != 2 or not all(parts):
        return None
    return ":".join(parts)


def _engine_form(node: Node | None, value: Any) -> str:
    # The engine passes scalars as their text and structures as JSON.
    if isinstance(node, ScalarNode):
        return "" if node.tag == NULL else str(node.value)
    return value if isinstance(value, str) else json.dumps(value)


def load_stack_file(path: Path) -> RawConfig:
    """RawConfig from a stack file, or StackFileError saying what is wrong."""
    text = _decode_text(path, read_bounded(path))
    root, loader = _compose(path, text)
    if root is None:
        return RawConfig({}, frozenset())
    _check(root)
    try:
        doc = loader.construct_document(root)
    except yaml.YAMLError as err:
        raise StackFileError(_yaml_problem(path, text, err)) from None
    finally:
        loader.dispose()
    config_node = (
        next((v for k, v in root.value if isinstance(k, ScalarNode) and k.value == "config"), None)
        if isinstance(root, MappingNode)
        else None
    )
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict | None):
        raise StackFileError(f"{path}: expected a mapping with a `config:` mapping inside")
    config = doc.get("config") or {}
    nodes = {str(k.value): v for k, v in config_node.value} if isinstance(config_node, MappingNode) else {}
    problems: list[str] = []
    values: dict[str, str] = {}
    secret: set[str] = set()
    for raw_key, value in config.items():
        key = _config_key(str(raw_key))
        if key is None:
            problems.append(f"{short_name(str(raw_key))}: not a config key (namespace:name)")
            continue
        if key in values:
            problems.append(f"{key}: given twice (as {key} and as {short_name(str(raw_key))})")
            continue
        found: list[tuple[str | int, ...]] = []
        plain = _redact(value, (), found)
        for below in found:
            if not _secret_allowed(key, below):
                problems.append(
                    f"{_show_path(key, below)}: a secure value here would reach the cluster in plain text; "
                    f"{SECRET_RULE}"
                )
        values[key] = _engine_form(nodes.get(str(raw_key)), plain)
        if found:
            secret.add(key)
    if problems:
        raise StackFileError(problems)
    return RawConfig(values, frozenset(secret))


def known_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
