"""A stop request (SIGTERM or Ctrl-C, which the CLI turns into KeyboardInterrupt) held back over
code that must not be cut in the middle. An exception raised from a signal handler lands wherever
the main thread is: inside the import of an extension module it was seen to leave the module half
initialised and be swallowed by the importer (awkward, so that gigatoken's output changed type and
the run went on with another encoder, the stop request lost), or to end in a Rust panic. Inside
`deferred()` the request is noted and raised when the outermost block ends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_state = {"depth": 0, "pending": False}


def interrupt(signum: int, frame: Any) -> None:
    """The CLI's SIGTERM and SIGINT handler: KeyboardInterrupt now, or when the current
    `deferred()` block of the main thread ends."""
    if _state["depth"]:
        _state["pending"] = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop request back until the block ends (main thread only: signal handlers run
    there; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"]:
            _state["pending"] = False
            raise KeyboardInterrupt
