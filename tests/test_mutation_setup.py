"""`make mutate`'s own assumptions, checked without running mutmut.

mutmut records test ids in one pytest session and passes them to another in
the same process (its fork server collects once, then forks per mutant). An
id pytest names differently the second time is "not found": the run raises,
and mutmut files the mutant as a timeout, untested.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

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
