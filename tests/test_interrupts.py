"""halb.interrupts.held: signals wait for the caller's safe point, then reach the handler that was there."""

from __future__ import annotations

import signal
from types import FrameType

import pytest

from halb.interrupts import held


def test_a_ctrl_c_inside_waits_for_check_then_is_a_keyboard_interrupt() -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), held() as check:
        signal.raise_signal(signal.SIGINT)
        steps.append("after the signal")  # not interrupted here
        check()
        steps.append("after check")  # never reached
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_end_of_the_block_delivers_what_is_still_held() -> None:
    got: list[int] = []

    def mine(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with held() as check:
            check()  # nothing held: nothing happens
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert got == []
        assert got == [signal.SIGTERM, signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nothing_held_nothing_raised() -> None:
    with held() as check:
        check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
