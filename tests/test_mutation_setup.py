"""`make mutate`'s own assumptions, checked without running mutmut.

mutmut records test ids in one pytest session and passes them to another in
the same process (its fork server collects once, then forks per mutant). An
id pytest names differently the second time is "not found": the run raises,
and mutmut files the mutant as a timeout, untested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import mutation_report
import pytest
from conftest import ROOT

TWICE = """
import sys, pytest
class Ids:
    def __init__(self): self.ids = []
    def pytest_collection_modifyitems(self, items): self.ids = [i.nodeid for i in items]
runs = []
for _ in range(2):
    ids = Ids()
    pytest.main(["--collect-only", "-qqq", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[ids])
    runs.append(ids.ids)
print("COLLECTED", len(runs[0]))
for changed in sorted(set(runs[0]) ^ set(runs[1])):
    print("CHANGED", changed)
"""


def test_the_tests_mutmut_runs_keep_their_ids_in_a_second_collection() -> None:
    mutmut = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    args = [*mutmut["pytest_add_cli_args"], *mutmut["pytest_add_cli_args_test_selection"]]
    out = subprocess.run(
        [sys.executable, "-c", TWICE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.splitlines()
    (count,) = [int(line.split()[1]) for line in out if line.startswith("COLLECTED ")]
    changed = [line for line in out if line.startswith("CHANGED ")]
    assert count > 500  # the selection was collected
    assert changed == [], "ids named differently the second time (use conftest.plain_id)"


def test_the_report_counts_a_fork_server_error_as_no_kill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 255 is the fork server's "the test run raised" (no test ran), which mutmut
    files as a timeout; the report calls it suspicious and counts it as not killed."""
    meta = tmp_path / "mutants" / "components" / "x.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {
        "components.x.x_f__mutmut_1": 1,
        "components.x.x_f__mutmut_2": 255,
        "components.x.x_f__mutmut_3": 0,
    }
    codes |= {"components.x.x_f__mutmut_4": -24, "components.x.x_f__mutmut_5": 0}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    doc = tmp_path / "mutation.md"
    doc.write_text("| `components.x.x_f__mutmut_5` | equivalent | a reason |\n")
    code = mutation_report.main(["--mutants", str(meta.parents[1]), "--doc", str(doc), "--survivors",
                                 "--require", "components=50"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "survived   components.x.x_f__mutmut_3" in out and "suspicious components.x.x_f__mutmut_2" in out
    # killed 2 (exit 1, SIGXCPU) of 4 (the equivalent one not counted; 255 is no kill): 50%
    (row,) = [line for line in out.splitlines() if line.startswith("components/ (all)")]
    assert row.split() == ["components/", "(all)", "2", "1", "0", "1", "0", "1", "50.0%"]
    assert (
        mutation_report.main(
            ["--mutants", str(meta.parents[1]), "--doc", str(doc), "--require", "components=67"]
        )
        == 1
    )
