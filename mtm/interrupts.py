"""Ctrl-C and SIGTERM mean the same thing to mtm: stop cleanly.

SIGTERM is what a job scheduler sends before it preempts a job (SLURM, Kubernetes, `docker stop`,
a plain `kill`). Python's default for it is to die on the spot: a training run loses every step since
its last checkpoint and `mtm collect` the episode it was writing. Here it is handled like Ctrl-C:
where a command holds Ctrl-C until a safe point (training saves a checkpoint at the next step
boundary, collect finishes writing the episode), it holds SIGTERM too; everywhere else it raises
`Terminated`, a KeyboardInterrupt, so the same clean-up runs (partial files removed). The command
then exits with 143, the shell's code for SIGTERM (130 for Ctrl-C).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def interruption(signum: int) -> KeyboardInterrupt:
    """The exception that stands for `signum` (SIGTERM: `Terminated`, else KeyboardInterrupt): for
    code that learns of a stop from a result (collect, train) and must stop as well."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind an interruption: SIGTERM for `Terminated`, else SIGINT."""
    return signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT


def exit_code(signum: int) -> int:
    """130 for Ctrl-C, 143 for SIGTERM: 128 + the signal's number, as a shell reports them."""
    return 128 + int(signum)


def describe(signum: int) -> str:
    return "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` in the main thread (the `mtm` command runs in
    one); the previous handler is back afterwards, so an in-process caller keeps its own."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise the first one received (the block
    is a write that must not be cut in half)."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise interruption(received[0])


class StopRequest:
    """Turns the first Ctrl-C or SIGTERM into a flag the caller reads at a safe point (training: at
    step boundaries); a second one interrupts at once. `signals` limits which are taken: a torchrun
    worker leaves SIGTERM to torchrun, which stops every rank together."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.requested = False
        self.signum: int | None = None
        self._signals = signals
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self._signals}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise interruption(signum)
        self.requested, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
