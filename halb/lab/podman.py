"""The lab's container runtime: Debian's podman with runc, configured by the repo.

Every podman call goes through `podman()`, which points podman at the
project's own `containers.conf` and `storage.conf` (halb/lab/podman/): the
machine's /etc/containers is never read for the lab nor edited, and the
lab's images and containers live in their own store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "podman"
CONTAINERS_CONF = CONF_DIR / "containers.conf"
STORAGE_CONF = CONF_DIR / "storage.conf"
# Where storage.conf keeps the store; `lab` never removes it (images are a cache).
STORE = Path("/var/lib/halb-lab/storage")


class PodmanError(Exception):
    """A podman call failed; the message has podman's own words."""


def env() -> dict[str, str]:
    """The environment every podman call runs with."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF),
        # No registries are reachable and none are wanted: never pull.
        "CONTAINERS_REGISTRIES_CONF": str(CONF_DIR / "registries.conf"),
    }


def available() -> str | None:
    """Why podman cannot run the lab here, or None when it can."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found; `make deps` installs it (apt: podman runc)"
    return None


def podman(
    *args: str, timeout: float = 60.0, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`extra_env`: values podman reads for `--env NAME` (Secrets, kept off the command line)."""
    try:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout,
            env={**env(), **(extra_env or {})}, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PodmanError(f"timed out after {timeout:g} s: podman {' '.join(args[:3])} ...") from None
    if check and result.returncode != 0:
        raise PodmanError(f"`podman {' '.join(args[:4])} ...` failed: {result.stderr.strip()[-2000:]}")
    return result
