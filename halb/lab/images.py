"""The images the lab runs: built here from images/, never pulled.

No registry is reachable from the lab, so the Dockerfiles' pinned base
(`debian:bookworm-slim@sha256:...`) is replaced by a stand-in made the same
way Debian makes it: `debootstrap --variant=minbase bookworm` from the
Debian mirror, with the official image's apt sources, imported once and
cached. Then `images/<name>` is built from its Dockerfile unchanged (only
the BASE build argument differs) and tagged by a hash of its inputs, so an
image is rebuilt only when its Dockerfile, its files or the base change.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from halb.lab.podman import STORE, PodmanError, env, podman

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
BASE_TAG = "localhost/halb/debian:bookworm-slim"
MIRROR = "http://deb.debian.org/debian"
# The official image's sources (deb822), so `apt-get install` in a build sees
# the same suites as on Docker Hub's debian:bookworm-slim.
SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
LOCK = STORE.parent / "images.lock"
DEBOOTSTRAP_TIMEOUT_S = 600.0
BUILD_TIMEOUT_S = 900.0

Out = Callable[[str], None]


@contextmanager
def _locked() -> Iterator[None]:
    """One builder at a time: two labs (or a lab and a benchmark) share the store."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_id(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def ensure_base(out: Out) -> str:
    """The base image's ID, made by debootstrap on first use (about a minute)."""
    if _exists(BASE_TAG):
        return image_id(BASE_TAG)
    if shutil.which("debootstrap") is None:
        raise PodmanError("`debootstrap` not found; `make deps` installs it")
    out(f"making the base image {BASE_TAG} (debootstrap --variant=minbase bookworm, once)")
    STORE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=STORE.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise PodmanError(f"debootstrap failed: {(done.stdout + done.stderr).strip()[-1500:]}")
        # As the official slim image: no package caches or lists, deb822 sources.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        try:
            imp = subprocess.run(
                ["podman", "import", "--change", 'CMD ["bash"]', "-", BASE_TAG],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                env=env(),
                timeout=300,
                check=False,
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait(timeout=60)
        if imp.returncode != 0:
            raise PodmanError(f"podman import failed: {imp.stderr.strip()[-1500:]}")
    return image_id(BASE_TAG)


def inputs_hash(context: Path, base_id: str) -> str:
    """Everything a build reads: each file's path, mode and bytes, and the base."""
    h = hashlib.sha256(base_id.encode())
    for p in sorted(context.rglob("*")):
        if p.is_file():
            h.update(f"\0{p.relative_to(context)}\0{p.stat().st_mode & 0o777:o}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def local_tag(name: str, digest: str) -> str:
    return f"localhost/halb/{name}:{digest}"


def ensure_image(name: str, out: Out) -> str:
    """`images/<name>` built (or found in the cache): its local tag."""
    context = IMAGES / name
    if not (context / "Dockerfile").is_file():
        raise PodmanError(f"images/{name}/Dockerfile not found")
    with _locked():
        base = ensure_base(out)
        tag = local_tag(name, inputs_hash(context, base))
        if _exists(tag):
            return tag
        out(f"building images/{name} -> {tag}")
        podman(
            "build",
            "--network", "host",  # a podman network would touch the root namespace
            "--pull=never",
            "--build-arg", f"BASE={BASE_TAG}",
            "--label", "halb.lab/image=" + name,
            "-t", tag,
            str(context),
            timeout=BUILD_TIMEOUT_S,
        )  # fmt: skip
        return tag
