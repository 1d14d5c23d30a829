"""Ctrl-C and SIGTERM: the run ends within seconds, and what it started is stopped all the same.

- The first signal (SIGINT from the terminal, SIGTERM from a CI runner cancelling the job) raises
  KeyboardInterrupt, so pytest unwinds and the deployments are stopped.
- A stop runs shielded: a signal that lands inside it never raises (that would abandon the server
  half-stopped, with no one left to kill it); it cuts the stop's grace short instead, so the SIGKILL goes
  at once. A second Ctrl-C therefore skips the grace, and never skips the clean-up. Outside a stop the
  second one does not raise either (the run is already unwinding; raising again would only cut its reports
  short); a third one does, for an operator who wants out whatever is left.
- Servers register a non-blocking first move (`on_first_signal`: SIGTERM to a process group) made in the
  handler itself, so their grace runs while pytest unwinds to the teardown that finishes the stop.
- A signal inside a stop that is not yet an interruption (a grid moving to its next profile) asks the
  run to end after the current test (`on_deferred`).
- pytest renders the whole traceback of a KeyboardInterrupt, parsing every source file on it, to print
  one line: a second or more on a busy machine. ShortInterruptTrace keeps only the frame the signal landed
  in (the line printed), unless --full-trace asks for everything.

Signal handlers belong to the process, so this state is per process too.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, ParamSpec, TypeVar

import pytest

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_hurry = threading.Event()  # set by any signal after the first, or inside a stop: no more grace
_shields = 0
_signalled = 0
_raised = 0  # KeyboardInterrupts raised (and second signals let pass) since install()
# what each install() replaced: handlers, on_deferred, signal and raise counts, hurried
_installed: list[tuple[dict[int, Any], Callable[[str], None] | None, int, int, bool]] = []
_on_deferred: Callable[[str], None] | None = None
_first_moves: list[Callable[[], None]] = []

P = ParamSpec("P")
R = TypeVar("R")


class Hurried(Exception):  # noqa: N818 - it names the event, like KeyboardInterrupt
    """A stop was told not to wait any more: what it waited for was abandoned (and killed)."""


def install(on_deferred: Callable[[str], None] | None = None) -> bool:
    """Take over SIGINT and SIGTERM for this run (main thread only; False elsewhere, e.g. embedded pytest).
    `on_deferred(why)` is called when a signal arrived inside a stop and could not raise. Nests (pytester
    runs pytest inside pytest): restore() gives back what this install() replaced."""
    global _on_deferred, _signalled, _raised
    try:
        previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    except ValueError:  # not the main thread
        return False
    _installed.append((previous, _on_deferred, _signalled, _raised, _hurry.is_set()))
    _on_deferred, _signalled, _raised = on_deferred, 0, 0
    _hurry.clear()
    return True


def restore() -> None:
    """Give the signals back to whoever had them before the matching install()."""
    global _on_deferred, _signalled, _raised
    if not _installed:
        return
    previous, _on_deferred, _signalled, _raised, hurried_before = _installed.pop()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if not hurried_before:
        _hurry.clear()


def on_first_signal(move: Callable[[], None]) -> None:
    """Run `move` (quick, non-blocking, never raising) in the handler of the run's first signal."""
    _first_moves.append(move)


def forget(move: Callable[[], None]) -> None:
    """Undo on_first_signal (the stop is under way, or done)."""
    if move in _first_moves:
        _first_moves.remove(move)


@contextmanager
def to_the_main_thread() -> Iterator[None]:
    """Threads started within block SIGINT and SIGTERM (a thread inherits its creator's mask), so the kernel
    delivers them to the main thread and interrupts whatever it waits on: a signal that lands in a helper
    thread only sets Python's flag, and a main thread blocked in a socket read would see it only when the
    read returns on its own."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def hurried() -> bool:
    """True once a stop must not wait any more (second signal, or a signal during a stop)."""
    return _hurry.is_set()


def grace(seconds: float) -> bool:
    """Wait up to `seconds` for a stop's grace; returns early (True) when hurried."""
    return _hurry.wait(seconds)


@contextmanager
def shield() -> Iterator[None]:
    """Within: signals do not raise, they hurry the stop under way."""
    global _shields
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1


def shielded(stop: Callable[P, R]) -> Callable[P, R]:
    """Decorator for stop methods: run under shield(), whoever calls them (fixture, atexit, interrupt hook)."""
    @functools.wraps(stop)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with shield():
            return stop(*args, **kwargs)
    return run


def _handle(signum: int, frame: FrameType | None) -> None:
    global _signalled, _raised
    _signalled += 1
    name = signal.Signals(signum).name
    if _signalled == 1:
        for move in list(_first_moves):
            move()
    if _shields or _signalled > 1:
        _hurry.set()
    if _shields:
        if _on_deferred is not None:
            _on_deferred(f"interrupted by {name} while stopping a deployment")
        return
    _raised += 1
    if _raised == 2:
        return  # the run is already unwinding from the first: this one only drops the grace
    raise KeyboardInterrupt(name)


def end_process_if_interrupted() -> None:
    """Called by the outermost run once pytest's own clean-up is done: if a signal unwound the run, run the
    atexit handlers, flush, and end the process without the interpreter's teardown (freeing every module
    and object: 0.4-0.5 s measured on the 2-core machine after a Ctrl-C mid-stream, more under load). Only
    when pytest is the program and this is the outermost install(): an embedding program, or the pytest
    run around a pytester one, goes on."""
    if not _raised or len(_installed) != 1 or not _pytest_is_the_program():
        return
    atexit._run_exitfuncs()  # noqa: SLF001 - the documented handlers still run (logging.shutdown among them)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(pytest.ExitCode.INTERRUPTED)


def _pytest_is_the_program() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name in ("pytest", "pytest.__main__")) or \
        Path(sys.argv[0]).name in ("pytest", "py.test")


class ShortInterruptTrace:
    """Plugin object: trims the KeyboardInterrupt's traceback before pytest renders it (see the module)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if self.config.option.fulltrace:
            return
        landed = excinfo.traceback.filter(lambda entry: entry.frame.code.raw.co_filename != __file__)
        if len(landed):
            excinfo.traceback = landed[-1:]
