"""One exception for input a user must fix: every reader of user input raises it."""

from __future__ import annotations

import pytest

from components.problems import InputError
from components.settings import SettingsError
from halb.lab.base import LabError, LabInputError
from halb.lab.podspec import PodSpecError
from halb.lab.topology import LabPlanError
from halb.stackfile import StackFileError


@pytest.mark.parametrize("kind", [SettingsError, StackFileError, PodSpecError, LabPlanError, LabInputError])
def test_every_reader_of_input_raises_one_kind(kind: type[Exception]) -> None:
    assert issubclass(kind, InputError)
    err = kind(["a: wrong", "b: wrong too"])
    assert isinstance(err, InputError) and err.problems == ["a: wrong", "b: wrong too"]
    assert str(err) == "a: wrong\nb: wrong too"


def test_one_problem_may_be_given_alone() -> None:
    assert InputError("x: bad").problems == ["x: bad"]
    # Still a lab error too: the lab's callers that catch LabError keep working.
    assert issubclass(LabInputError, LabError)
