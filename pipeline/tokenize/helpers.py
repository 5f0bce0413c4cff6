"""Helper processes of a local run: the driver's workers after the first each hand their units to
a process of their own, so that a local run uses every core it is given. Threads alone cannot:
record parsing and the Python around each batch hold the GIL (about 30% of a unit's time).

A helper is a fresh interpreter (`python -m pipeline.tokenize.helpers FD`), not a fork: the driver
may already hold the tokenizer libraries' thread pools and Arrow's. Nor is it a multiprocessing
"spawn", which re-imports the caller's main script: a script calling `run_job` at its top level
would run again in every helper. It talks to its driver thread over a socket pair
(multiprocessing's Connection: pickled messages, between the driver and the child it started on
an inherited socket, nothing read from storage or a network), loads its own tokenizer and output, then runs
`process_unit` on each unit it is sent, one at a time, exactly as an actor does: the same units
commit the same bytes and ledger entries whoever runs them. It leaves stopping to its driver (a
Ctrl-C to the terminal's process group ends the unit in hand, then the driver says stop) and dies
with it (Linux: the parent-death signal; elsewhere it sees the socket close after its unit), so a
killed run leaves no helper working."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

from pipeline.tokenize.unit import WORKER_ENV, UnitTask, process_unit
from schemas.records import LedgerEntry

READY_TIMEOUT_S = 300.0  # loading a big tokenizer on a busy machine can take a while
READY_POLL_S = 0.05
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `pipeline` package


class HelperDied(ChildProcessError):
    """A helper process ended without answering (killed, out of memory, crashed). An OSError
    (a child process's): a run fails the unit in hand with UnitFailed naming it, one line and
    exit 3 as a unit that could not be read, and a rerun redoes it."""


def available() -> bool:
    """Helpers need POSIX file-descriptor passing (`pass_fds`)."""
    return os.name == "posix"


class HelperProcess:
    """One helper process running units for one driver thread; `process_unit` blocks that thread
    (not the GIL) until the unit is committed. It starts loading the tokenizer at once; with
    `task` None it waits for `start` (the job's output and task) before it says it is ready, so
    that a driver can start it before it has loaded its own tokenizer (`early`)."""

    def __init__(
        self,
        spec: str,
        options: dict[str, Any],
        output_url: str | None,
        task: UnitTask | None,
        storage_options: dict[str, Any] | None = None,
    ):
        ours, theirs = socket.socketpair()
        env = dict(os.environ, **WORKER_ENV)  # before the tokenizer libraries start their pools
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        # SIGINT blocked across the spawn: the child inherits the mask, so a Ctrl-C to the
        # terminal's process group while it imports (before `serve` ignores it) is not a
        # KeyboardInterrupt traceback from the helper
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "pipeline.tokenize.helpers", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._conn = Connection(ours.detach())
        storage = task.storage_options if task is not None else storage_options or {}
        with contextlib.suppress(OSError):  # (one that died at once is told by wait_ready)
            self._conn.send((spec, options, storage, os.getpid(), sys.path))
        self._ready = False
        self.started = False
        if task is not None:
            self.start(output_url, task)

    @classmethod
    def early(cls, spec: str, options: dict[str, Any], storage_options: dict[str, Any]) -> Self:
        """A helper that loads the tokenizer now and takes its job later (`start`)."""
        return cls(spec, options, None, None, storage_options)

    def start(self, output_url: str, task: UnitTask) -> None:
        """Give the helper its job: it checks its tokenizer's fingerprint against the task's,
        opens the output, and says it is ready."""
        self.started = True
        with contextlib.suppress(OSError):  # (one that died is told by wait_ready)
            self._conn.send((output_url, task))

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, give_up: Any = None) -> bool:
        """Until the helper has loaded its tokenizer (its load error is raised here); False
        when `give_up()` turns true first (checked every READY_POLL_S: a job done meanwhile
        does not wait for it)."""
        waited = 0.0
        while not self._ready:
            if self._conn.poll(READY_POLL_S):
                self._answer("starting")
                self._ready = True
            elif give_up is not None and give_up():
                return False
            else:
                waited += READY_POLL_S
                if waited >= READY_TIMEOUT_S:
                    raise HelperDied(f"helper process {self.pid} did not start in time")
        return True

    def process_unit(self, unit: Any, data: bytes | None) -> LedgerEntry:
        """Commit one unit in the helper; its ledger entry (the unit's error is raised here)."""
        self.wait_ready()
        try:
            self._conn.send((unit, data))
        except OSError as exc:  # (a broken pipe: it is gone)
            raise self._died(f"unit {unit.unit_id}") from exc
        return self._answer(f"unit {unit.unit_id}")

    def close(self) -> None:
        """Tell the helper to stop (between units) and wait for it; kill it if it hangs, and at
        once if it never said it was ready (it has touched nothing; its interpreter's shutdown
        took a tiny job 0.2 s)."""
        if not self._ready:
            self.process.kill()
        with contextlib.suppress(OSError):  # (a broken pipe: it is gone already)
            self._conn.send(None)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._conn.close()

    def _answer(self, doing: str) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(doing) from exc
        if status == "error":
            raise value
        return value

    def _died(self, doing: str) -> HelperDied:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(1.0)
        code = self.process.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return HelperDied(f"helper process {self.pid} ended ({how}) while {doing}")


class EarlyHelpers:
    """Helper processes started before the job's own tokenizer is loaded (their imports and
    tokenizer load then run beside the driver's instead of after it), handed to the driver's
    workers by `take`; on leaving, those not taken are stopped."""

    def __init__(self, helpers: list[HelperProcess]):
        self._waiting = list(helpers)

    def take(self, output_url: str, task: UnitTask) -> HelperProcess | None:
        """A waiting helper, given its job; None when none is left."""
        if not self._waiting:
            return None
        helper = self._waiting.pop(0)
        helper.start(output_url, task)
        return helper

    def __enter__(self) -> EarlyHelpers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()

    def discard(self) -> None:
        """Stop the helpers not taken (the job does not use them after all)."""
        while self._waiting:
            self._waiting.pop().close()  # (never ready: killed, it has touched nothing)


def serve(conn: Connection) -> None:
    """A helper's life: load, then one unit per message until told to stop (None) or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops it, after the unit in hand
    try:
        spec, options, storage_options, parent, path = conn.recv()
    except (EOFError, OSError):
        return
    _die_with_parent(parent)
    sys.path[:] = [*path, *(p for p in sys.path if p not in path)]  # as the driver imports
    failed = tokenizer = None
    try:
        from pipeline.output.storage import Output
        from pipeline.tokenize.unit import check_fingerprint
        from tokenizers_impl import load_tokenizer

        tokenizer = load_tokenizer(spec, storage_options=storage_options, **options)
        import pipeline.tokenize.textkernels  # noqa: F401 - a helper's units are big ones
    except BaseException as exc:  # noqa: BLE001 - sent to the driver, which raises it
        failed = exc
    try:
        job = conn.recv()  # (the output and task; None: not needed after all)
    except (EOFError, OSError):
        return
    if job is None:
        return
    output_url, task = job
    try:
        if failed is not None:
            raise failed
        check_fingerprint(tokenizer, task, spec, "by a helper process")
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


def _send(conn: Connection, status: str, value: Any) -> None:
    """Send an answer. An exception goes as it is when the driver can rebuild it (its class
    called with its args: what the driver's side does), else as a RuntimeError with its type,
    message and the helper's traceback."""
    if status == "error":
        try:
            type(value)(*value.args)
        except Exception:  # noqa: BLE001
            value = _described(value)
    with contextlib.suppress(OSError):  # the driver is gone
        try:
            conn.send((status, value))
        except Exception:  # noqa: BLE001 - it cannot be sent as it is (e.g. an unpicklable arg)
            conn.send((status, _described(value)))


def _described(exc: BaseException) -> RuntimeError:
    text = "".join(traceback.format_exception(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc} (in a helper process)\n{text}")


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


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
