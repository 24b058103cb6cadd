"""A pod's volumes on the lab host, laid out as the kubelet lays them out.

- Secret and ConfigMap volumes: the kubelet's atomic writer layout. The
  payload sits in a timestamped directory `..2026_11_25_16_00_00.123456789`,
  `..data` is a symlink to it and every key is a symlink `key -> ..data/key`;
  an update writes a new directory and swaps `..data` in one rename, so a
  reader never sees half of a new config. Files get the volume's
  defaultMode (or the item's mode), owned by root.
- emptyDir: a directory; `medium: Memory` is a tmpfs mounted mode 1777
  (sticky, as the kubelet's) with size=sizeLimit.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halb.lab.podspec import PodSpec, Volume

DATA = "..data"


class VolumeError(Exception):
    """A volume the pod needs cannot be made (missing Secret, key, mount)."""


Objects = Mapping[tuple[str, str], Mapping[str, Any]]


def _stamp() -> str:
    now = time.time()
    return time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}"


def payload(vol: Volume, objects: Objects) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (bytes, mode) for a Secret or ConfigMap volume."""
    obj = objects.get(("Secret" if vol.kind == "secret" else "ConfigMap", vol.source))
    if obj is None and vol.optional:
        return {}
    if obj is None:
        raise VolumeError(f"volume {vol.name}: no {vol.kind} {vol.source!r} in the rendered manifests")
    data: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        data[key] = base64.b64decode(value) if vol.kind == "secret" else str(value).encode()
    for key, value in (obj.get("stringData") or {}).items():
        data[key] = str(value).encode()
    if not vol.items:
        return {key: (value, vol.default_mode) for key, value in data.items()}
    out = {}
    for key, path, mode in vol.items:
        if key not in data:
            raise VolumeError(f"volume {vol.name}: {vol.kind} {vol.source!r} has no key {key!r}")
        out[path] = (data[key], mode if mode is not None else vol.default_mode)
    return out


def write_atomic(target: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write (or replace) a Secret/ConfigMap volume's content in one step."""
    target.mkdir(parents=True, exist_ok=True)
    new = target / _stamp()
    new.mkdir(mode=0o755)
    for rel, (content, mode) in files.items():
        path = new / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, content)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else None
    tmp = target / "..data_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(new.name)
    os.replace(tmp, target / DATA)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{top}")
    for entry in target.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()  # a key the new content no longer has
    if old is not None and old != new.name:
        shutil.rmtree(target / old, ignore_errors=True)


def mount_tmpfs(target: Path, size: int | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    opts = "mode=1777" + (f",size={size}" if size else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise VolumeError(f"cannot mount a tmpfs on {target}: {done.stderr.strip()}")


def is_mount(path: Path) -> bool:
    try:
        return any(
            line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines()
        )
    except OSError:
        return False


def unmount(path: Path) -> None:
    if is_mount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def prepare(pod: PodSpec, objects: Objects, base: Path, mounted: list[str]) -> dict[str, str]:
    """Every volume of `pod` under `base`: volume name -> host directory.

    Each tmpfs mounted is appended to `mounted` before it is made, so whoever
    tears the pod down finds it even if this is interrupted.
    """
    dirs: dict[str, str] = {}
    for vol in pod.volumes:
        target = base / vol.name
        if vol.kind == "emptyDir":
            if vol.medium == "Memory":
                mounted.append(str(target))
                mount_tmpfs(target, vol.size_limit)
            else:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)  # the kubelet's emptyDir mode
        else:
            write_atomic(target, payload(vol, objects))
        dirs[vol.name] = str(target)
    return dirs
