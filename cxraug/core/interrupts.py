"""Ctrl-C and SIGTERM stop a command at once; what is finished stays on disk.

    with stop_on_signals() as caught:
        run_the_command()
    if caught.signum is not None: ...   # "interrupted (SIGINT)", exit 130

Why a handler of our own, instead of Python's default:

- A process started in the background by a non-interactive shell (``cxraug synth ... &`` in a
  script, many job schedulers) inherits SIGINT *ignored*, so ``kill -INT`` did nothing; SIGTERM's
  default action kills the process without a word. Both now raise :class:`KeyboardInterrupt`
  in the main thread, so every ``finally`` and ``with`` block (progress bars, lock files, open
  part files) runs, and the interrupt surfaces at the command-line boundary.
- Typer turns a ``KeyboardInterrupt`` into an exit *code* (130) that it returns instead of
  raising when not in standalone mode; ``caught.signum`` tells the boundary what happened even
  then.

Every writer in cxraug already survives ``kill -9`` (files are written to a temporary name and
renamed; manifest rows are appended after their images), so stopping anywhere is safe: a rerun of
the same command resumes from what is on disk.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Caught:
    """The first stop signal received inside :func:`stop_on_signals` (None: none)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Caught]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` inside the block (main thread only: other
    threads cannot set signal handlers, and there the block runs unchanged). The previous
    handlers come back afterwards, so calling a command in-process (tests) leaves none behind."""
    caught = Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def stop(signum, frame):
        if caught.signum is None:
            caught.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield caught
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
