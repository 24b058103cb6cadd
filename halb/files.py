"""Writing output files all-or-nothing, after checking they can be written."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def check_writable(out: Path) -> str | None:
    """Why `out` cannot take the files, or None when it can."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"--out {out}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"--out {out}: {probe} is not writable"
    return None


def write_files(out: Path, files: dict[str, str]) -> None:
    """All files or none: staged in a temp dir inside `out`, then moved in."""
    created = out
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    made_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".halb-render-", dir=out))
        try:
            for rel, text in files.items():
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_text(text)
            for rel in files:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, out / rel)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    except OSError:
        if made_out:
            shutil.rmtree(created, ignore_errors=True)
        raise
