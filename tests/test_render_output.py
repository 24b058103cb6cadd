"""`render --out`: all of the render or none of it, and never a file it did not write.

A re-render replaces the previous one whole (no stale `lb-3.conf`); a failure
or Ctrl-C half-way leaves the directory as it was; a directory this tool did
not write is refused, not merged into; the process exits without noise.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_halb

from halb.cli import main

MARKER = ".halb-render"

LAB = (ROOT / "Pulumi.lab.yaml").read_text()
THREE_LB = LAB.replace(
    "    app-1: {role: apps, address: 192.0.2.21}",
    "    lb-3: {role: load-balancer, address: 192.0.2.13}\n    app-1: {role: apps, address: 192.0.2.21}",
)


def tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


def render(stack_file: Path, out: Path | str) -> int:
    return main(["render", "--stack", "lab", "--config-file", str(stack_file), "--out", str(out)])


@pytest.fixture
def stacks(tmp_path: Path) -> tuple[Path, Path]:
    three, two = tmp_path / "three.yaml", tmp_path / "two.yaml"
    three.write_text(THREE_LB)
    two.write_text(LAB)
    return three, two


def test_rerender_replaces_the_previous_render_whole(stacks: tuple[Path, Path], tmp_path: Path) -> None:
    three, two = stacks
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert render(three, out) == 0
    assert "keepalived/lb-3.conf" in tree(out)
    assert render(two, out) == 0
    assert render(two, fresh) == 0
    assert tree(out) == tree(fresh)  # no lb-3.conf, nothing stale
    marker = json.loads((out / MARKER).read_text())
    assert marker["files"] == sorted(f for f in tree(out) if f != MARKER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out", "three.yaml", "two.yaml"]


@pytest.mark.parametrize(
    "extra,expected",
    [
        ("notes.txt", "holds files no render wrote (notes.txt)"),
        ("keepalived/old.conf", "holds files no render wrote (keepalived/old.conf)"),
        ("sub/", "holds files no render wrote (sub)"),
        ("link", "holds files no render wrote (link)"),
    ],
)
def test_a_render_dir_with_foreign_files_is_refused(
    stacks: tuple[Path, Path], tmp_path: Path, extra: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, two = stacks
    out = tmp_path / "out"
    assert render(two, out) == 0
    if extra == "link":
        (out / extra).symlink_to("/etc/hostname")
    elif extra.endswith("/"):
        (out / extra).mkdir()
    else:
        (out / extra).write_text("mine")
    before = tree(out)
    capsys.readouterr()
    assert render(two, out) == 2
    assert (
        capsys.readouterr().err
        == f"error: --out {out}: {expected}; move them away or choose another directory\n"
    )
    assert tree(out) == before


def test_a_directory_without_marker_is_refused(stacks: tuple[Path, Path], tmp_path: Path) -> None:
    _, two = stacks
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("mine")
    assert render(two, home) == 2
    assert tree(home) == {".bashrc": "mine"}


def test_an_empty_directory_is_used(stacks: tuple[Path, Path], tmp_path: Path) -> None:
    _, two = stacks
    out = tmp_path / "empty"
    out.mkdir()
    assert render(two, out) == 0
    assert "manifests.yaml" in tree(out)


def test_a_symlink_to_a_render_dir_is_followed_and_kept(stacks: tuple[Path, Path], tmp_path: Path) -> None:
    three, two = stacks
    real, link = tmp_path / "real", tmp_path / "link"
    assert render(three, real) == 0
    link.symlink_to(real)
    assert render(two, link) == 0
    assert link.is_symlink() and "keepalived/lb-3.conf" not in tree(real)


def test_the_current_directory_is_refused(tmp_path: Path) -> None:
    result = run_halb("render", "--stack", "lab", "--out", ".")
    assert result.returncode == 2
    assert (
        result.stderr == "error: --out .: is the current directory or holds it; name a directory below it\n"
    )


FILES = {"a.txt": "new a", "sub/b.txt": "new b", "sub/c.txt": "new c"}


def test_a_failure_half_way_leaves_the_old_render(
    stacks: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from halb.files import write_render

    _, two = stacks
    out = tmp_path / "out"
    assert render(two, out) == 0
    before = tree(out)
    calls = []
    real_write = Path.write_text

    def full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        calls.append(self)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, text)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        write_render(out, FILES, "lab")
    monkeypatch.undo()
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "three.yaml", "two.yaml"]


def test_a_failure_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from halb.files import write_render

    def refuse(a: Path, b: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(OSError):
        write_render(tmp_path / "new" / "deeper" / "out", FILES, "lab")
    assert list(tmp_path.iterdir()) == []


def test_without_rename_exchange_two_renames_do_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import halb.files
    from halb.files import write_render

    out = tmp_path / "out"
    write_render(out, {"old.txt": "old"}, "lab")

    def unsupported(a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(halb.files, "_exchange", unsupported)
    write_render(out, FILES, "lab")
    assert tree(out) == {**FILES, MARKER: (out / MARKER).read_text()}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 0.9, 1.2])
def test_ctrl_c_during_render_is_quiet_and_all_or_nothing(delay: float, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "halb", "render", "--stack", "lab", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert proc.returncode in (0, 130), stderr
    if proc.returncode == 130:
        assert stderr in (
            "interrupted\n",
            "interrupted; the output directory is unchanged or holds the whole render\n",
        )
    assert [p.name for p in tmp_path.iterdir()] in ([], ["out"])
    if out.exists():
        files = tree(out)
        assert sorted(f for f in files if f != MARKER) == json.loads(files[MARKER])["files"]


def test_render_leaves_no_event_loop_open_at_exit(tmp_path: Path) -> None:
    """The cause of the rare 'Exception ignored ... Invalid file descriptor' at exit:
    event loops the mocks made, collected after their sockets at interpreter shutdown."""
    env = {**os.environ, "PYTHONWARNINGS": "always::ResourceWarning"}
    result = run_halb("render", "--stack", "lab", "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_huge_directory_is_refused(stacks: tuple[Path, Path], tmp_path: Path) -> None:
    _, two = stacks
    out = tmp_path / "out"
    assert render(two, out) == 0
    for i in range(1001):
        (out / f"f{i}").write_text("")
    assert render(two, out) == 2
    assert len(list(out.iterdir())) == 1001 + 5


def test_a_file_that_appears_during_the_render_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import halb.files
    from halb.files import write_render

    out = tmp_path / "out"
    write_render(out, {"old.txt": "old"}, "lab")
    real_swap = halb.files._swap_in

    def swap_after_a_user_wrote(stage: Path, target: Path) -> None:
        (target / "mine.txt").write_text("mine")
        real_swap(stage, target)

    monkeypatch.setattr(halb.files, "_swap_in", swap_after_a_user_wrote)
    with pytest.raises(OSError, match="changed while the render was written"):
        write_render(out, FILES, "lab")
    assert (out / "mine.txt").read_text() == "mine" and (out / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_interrupt_inside_the_program_run_waits_for_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt raised inside the engine's event loop leaves tasks
    half-stepped: the process then hung or printed asyncio tracebacks. Held
    until the run is done, it finds every resource declared."""
    from conftest import stack_raw

    from halb.mockrun import RecordingMocks, run_program

    real = RecordingMocks.new_resource
    names: list[str] = []
    interrupt = [False]

    def interrupting(self: RecordingMocks, args: object) -> object:
        names.append(args.name)  # type: ignore[attr-defined]
        if interrupt[0] and len(names) == 1:
            signal.raise_signal(signal.SIGINT)
        return real(self, args)  # type: ignore[arg-type]

    monkeypatch.setattr(RecordingMocks, "new_resource", interrupting)

    def declared() -> list[tuple[str, str, list[str]]]:
        """What the run declared, apart from the order the engine's tasks happened to run in."""
        run = run_program(stack_raw("lab"), "lab")
        return sorted(
            (r.urn, json.dumps(r.inputs, sort_keys=True), sorted(r.dependencies)) for r in run.resources
        )

    whole = declared()
    clean = list(names)
    names.clear()
    interrupt[0] = True
    with pytest.raises(KeyboardInterrupt):
        run_program(stack_raw("lab"), "lab")
    assert sorted(names) == sorted(clean)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # The next run in this process is whole: nothing of the interrupted one is left over.
    interrupt[0] = False
    assert declared() == whole
