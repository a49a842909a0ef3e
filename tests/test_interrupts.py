"""Ctrl-C and SIGTERM as one clean stop (mtm.interrupts): held through a write, turned into a flag
at a safe point, the exit codes a shell reports. The end-to-end cases (a training run saving at the
step boundary, collect keeping whole episodes) are in test_train.py and test_collect.py."""

import os
import signal
import time

import pytest

from mtm.interrupts import (StopRequest, Terminated, describe, exit_code, signal_of, stop_signals_held,
                            sigterm_as_interrupt)


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # let the interpreter run the handler


@pytest.fixture
def handlers_restored():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_stop_signal_is_held_until_the_write_ends_then_raised(handlers_restored, signum, raised):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    finished = False
    with pytest.raises(raised) as info:
        with stop_signals_held():
            _deliver(signum)
            finished = True  # the block ran to its end despite the signal
    assert finished
    assert signal_of(info.value) == signum
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back


def test_the_first_stop_is_a_request_the_second_interrupts(handlers_restored):
    with StopRequest() as stop:
        _deliver(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(Terminated):
            _deliver(signal.SIGTERM)
    with StopRequest() as stop:
        _deliver(signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt) as info:
            _deliver(signal.SIGINT)
        assert not isinstance(info.value, Terminated)


def test_a_stop_request_takes_only_the_signals_it_is_given(handlers_restored):
    # A torchrun worker takes Ctrl-C only: SIGTERM keeps the command's handler (Terminated at once).
    with sigterm_as_interrupt(), StopRequest(signals=(signal.SIGINT,)) as stop:
        with pytest.raises(Terminated):
            _deliver(signal.SIGTERM)
        assert not stop.requested


def test_sigterm_raises_only_inside_the_command(handlers_restored):
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            _deliver(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_exit_codes_and_messages_are_the_shells():
    assert exit_code(signal.SIGINT) == 130 and exit_code(signal.SIGTERM) == 143
    assert describe(signal.SIGINT) == "interrupted"
    assert describe(signal.SIGTERM) == "terminated (SIGTERM)"
    assert signal_of(KeyboardInterrupt()) == signal.SIGINT and signal_of(Terminated()) == signal.SIGTERM
