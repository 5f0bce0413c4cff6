"""Helper processes of a local run: the driver's workers after the first each hand their units to
a process of their own, so that a local run uses every core it is given. Threads alone cannot:
record parsing and the Python around each batch hold the GIL, and a second thread added about a
third of a core.

A helper is a spawned interpreter (not a fork: the driver may already hold the tokenizer
libraries' thread pools and Arrow's) that loads its own tokenizer and output, then runs
`process_unit` on each unit its driver thread sends it, one at a time, exactly as an actor does:
the same units commit the same bytes and ledger entries whoever runs them. It leaves stopping to
its driver (a Ctrl-C to the terminal's process group ends the unit in hand, then the driver says
stop) and dies with it (Linux: the parent-death signal), so a killed run leaves no helper behind."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
from typing import Any

from pipeline.tokenize.unit import WORKER_ENV, UnitTask, process_unit
from schemas.records import LedgerEntry

READY_TIMEOUT_S = 300.0  # loading a big tokenizer on a busy machine can take a while
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


class HelperDied(RuntimeError):
    """A helper process ended without answering (killed, out of memory, crashed)."""


class HelperProcess:
    """One spawned process running units for one driver thread; `process` blocks that thread
    (not the GIL) until the unit is committed."""

    def __init__(self, spec: str, options: dict[str, Any], output_url: str, task: UnitTask):
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=serve,
            args=(child, spec, options, output_url, task, os.getpid()),
            name="tokenmill-helper",
            daemon=True,  # multiprocessing ends it if the driver exits without `close`
        )
        self.process.start()
        child.close()
        self._ready = False

    def wait_ready(self) -> None:
        """Until the helper has loaded its tokenizer (its load error is raised here)."""
        if not self._ready:
            if not self._conn.poll(READY_TIMEOUT_S):
                raise HelperDied(f"helper process {self.process.pid} did not start in time")
            self._answer("starting")
            self._ready = True

    def process_unit(self, unit: Any, data: bytes | None) -> LedgerEntry:
        """Commit one unit in the helper; its ledger entry (the unit's error is raised here)."""
        self.wait_ready()
        try:
            self._conn.send((unit, data))
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise self._died(f"unit {unit.unit_id}") from exc
        return self._answer(f"unit {unit.unit_id}")

    def close(self) -> None:
        """Tell the helper to stop (between units) and wait for it; kill it if it hangs."""
        with contextlib.suppress(OSError, EOFError):  # (a broken pipe: it is gone already)
            self._conn.send(None)
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()

    def _answer(self, doing: str) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError) as exc:
            raise self._died(doing) from exc
        if status == "error":
            raise value
        return value

    def _died(self, doing: str) -> HelperDied:
        self.process.join(1.0)
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return HelperDied(f"helper process {self.process.pid} ended ({how}) while {doing}")


def serve(  # noqa: PLR0913
    conn: Any, spec: str, options: dict, output_url: str, task: UnitTask, parent: int
) -> None:
    """A helper's life: load, then one unit per message until told to stop (None) or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops it, after the unit in hand
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    os.environ.update(WORKER_ENV)  # before the tokenizer libraries start their pools
    try:
        from pipeline.output.storage import Output
        from tokenizers_impl import load_tokenizer

        tokenizer = load_tokenizer(spec, storage_options=task.storage_options, **options)
        output = Output(output_url, task.storage_options)
    except BaseException as exc:  # noqa: BLE001 - sent to the driver, which raises it
        _send(conn, "error", exc)
        return
    _send(conn, "ok", None)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the driver is gone
        if message is None:
            return
        unit, data = message
        try:
            entry = process_unit(unit, tokenizer, task, output, data).entry
        except BaseException as exc:  # noqa: BLE001
            _send(conn, "error", exc)
            continue
        _send(conn, "ok", entry)


def _send(conn: Any, status: str, value: Any) -> None:
    """Send an answer; an exception that does not survive pickling goes as a RuntimeError with
    its type, message and the helper's traceback."""
    if status == "error":
        try:
            pickle.loads(pickle.dumps(value))
        except Exception:  # noqa: BLE001
            text = "".join(traceback.format_exception(value))
            value = RuntimeError(f"{type(value).__name__}: {value} (in a helper process)\n{text}")
    with contextlib.suppress(OSError):  # the driver is gone
        conn.send((status, value))


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the driver dies (a killed run leaves no helper working)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the driver died before prctl
        os._exit(1)
