"""Writing output all-or-nothing, after checking it can be written.

A render directory is replaced whole: the new files are written into a
hidden sibling, which then takes the old directory's place in one atomic
`renameat2(RENAME_EXCHANGE)`, so a reader (or a crash, or Ctrl-C) sees the old
render or the new one, never a mix, and no file of an older render survives.
Only a directory this tool wrote may be replaced: it carries `MARKER`,
listing its files, and holds nothing else. Any other non-empty directory is
refused, so `--out ~` cannot cost anyone a file.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from halb.interrupts import held

MARKER = ".halb-render"
RENDERED_BY = "rancher-ha-lb render"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def check_writable(out: Path) -> str | None:
    """Why `out` cannot be created or written, or None when it can."""
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


def _listed(out: Path) -> set[str] | None:
    """The files a previous render's marker lists, or None if there is no valid marker."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if (
        not isinstance(marker, dict)
        or marker.get("rendered-by") != RENDERED_BY
        or not isinstance(files, list)
    ):
        return None
    return {str(f) for f in files}


def _contents(out: Path, limit: int = 1000) -> tuple[set[str], set[str], list[str]] | None:
    """Files, directories and anything else (symlinks, devices) below `out`, relative;
    None if there are more than `limit` (far more than a render writes)."""
    files: set[str] = set()
    dirs: set[str] = set()
    other: list[str] = []
    for root, dirnames, filenames in os.walk(out):
        base = Path(root).relative_to(out)
        for name in dirnames:
            rel = str(base / name)
            if (Path(root) / name).is_symlink():
                other.append(rel)
            else:
                dirs.add(rel)
        for name in filenames:
            rel = str(base / name)
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                other.append(rel)
            else:
                files.add(rel)
        if len(files) + len(dirs) + len(other) > limit:
            return None
    return files, dirs, other


def resolve_out(out: str) -> tuple[Path | None, str | None]:
    """The directory a render goes to, or why it cannot go there."""
    if out == "":
        return None, "--out: empty path; name a directory"
    path = Path(out)
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            return None, f"--out {out}: is a symlink to {os.readlink(path)}, which does not exist"
        path = target
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        return None, f"--out {out}: {path} is not a directory"
    cwd = Path.cwd()
    if path == cwd or path in cwd.parents:
        return None, f"--out {out}: is the current directory or holds it; name a directory below it"
    why = check_writable(path.parent)
    if why is not None:
        return None, why.replace(f"--out {path.parent}", f"--out {out}", 1)
    if path.is_dir():
        why = _not_replaceable(path)
        if why is not None:
            return None, f"--out {out}: {why}"
    return path, None


def _not_replaceable(out: Path) -> str | None:
    """Why the existing directory `out` must not be replaced by a render, or None."""
    contents = _contents(out)
    if contents is None:
        return "holds more files than a render writes; choose a new or empty directory"
    files, dirs, other = contents
    if not files and not dirs and not other:
        return None
    listed = _listed(out)
    if listed is None:
        return (
            f"is not empty and holds no previous render ({MARKER} missing); choose a new or empty directory"
        )
    foreign = sorted(other + [f for f in files if f not in listed | {MARKER}])
    parents = {str(p) for f in listed for p in Path(f).parents if str(p) != "."}
    foreign += sorted(d for d in dirs if d not in parents)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        return f"holds files no render wrote ({shown}); move them away or choose another directory"
    return None


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def _swap_in(stage: Path, out: Path) -> None:
    """Put `stage` where `out` is; what was at `out` ends up at `stage`."""
    if not out.exists():
        os.rename(stage, out)
        return
    try:
        _exchange(stage, out)
        return
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    # No RENAME_EXCHANGE on this filesystem: two renames, undone if the second fails.
    aside = stage.with_name(stage.name + ".old")
    os.rename(out, aside)
    try:
        os.rename(stage, out)
    except OSError:
        os.rename(aside, out)
        raise
    os.rename(aside, stage)


def write_render(out: Path, files: dict[str, str], stack: str) -> None:
    """All of `files` (and the marker) in `out`, and nothing else, or no change at all.

    A Ctrl-C waits until the files are written or cleaned up (milliseconds):
    anywhere in between it would leave a stage directory or half a swap.
    """
    with held():
        _write_render(out, files, stack)


def _write_render(out: Path, files: dict[str, str], stack: str) -> None:
    created = out.parent
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    made_parents = not out.parent.exists()
    stage: Path | None = None
    swapped = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.halb-", dir=out.parent))
        for rel, text in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text(text)
        marker = {"rendered-by": RENDERED_BY, "stack": stack, "files": sorted(files)}
        (stage / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it 0700
        existed = out.exists()
        _swap_in(stage, out)
        swapped = True
        # `stage` now holds the old directory: checked again, as a file may
        # have appeared in it since it was checked; then put back, not lost.
        if existed and _not_replaceable(stage) is not None:
            _swap_in(stage, out)
            swapped = False
            raise OSError(errno.EBUSY, "changed while the render was written")
        shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        if stage is not None and not swapped:
            shutil.rmtree(stage, ignore_errors=True)
        if made_parents and not swapped:
            shutil.rmtree(created, ignore_errors=True)
        raise
