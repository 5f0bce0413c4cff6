"""A local run that does not wait for Ray: the driver tokenizes units from the first second, with
workers of its own (one per CPU up to 8: threads, sharing the job's tokenizer when it is
`thread_safe` and each with a copy otherwise, or a thread and helper processes from 4 workers
on or for a job of 1 GiB or more, see `uses_helpers` and pipeline/tokenize/helpers.py), and
Ray is started (in the main thread, while the driver keeps working) only once the driver's measured rate says the rest of the job
would take it longer than `ray_after_seconds` alone (by default: when
Ray's start-up pays for itself on this machine's CPUs, see `ray_after_seconds()`). A job the driver
finishes first never starts Ray; a bigger one hands the rest of its units to the actors as soon as
they run, the driver's workers stopping after the units in their hands. The same units, through the
same `process_unit`, commit the same bytes and ledger entries whoever runs them, so the output
equals a fresh run on Ray alone.

Used for local runs only (no Ray address, no `--actors`); on a cluster the actors do everything."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from pipeline.errors import local_unit_error
from pipeline.interrupts import deferred
from pipeline.tokenize.config import JobConfig, tokenizer_options
from pipeline.tokenize.feed import Work, WorkFeed, skipped_note, todo_bytes
from pipeline.tokenize.helpers import EarlyHelpers, HelperProcess
from pipeline.tokenize.helpers import available as helpers_available
from pipeline.tokenize.unit import UnitTask, check_fingerprint, process_unit
from schemas.records import RunCounts
from tokenizers_impl import TokenizerBase, load_tokenizer

log = logging.getLogger("tokenmill")
POLL_S = 0.05  # how often the main thread looks at the driver's progress


class SharedWork:
    """The feed's work items, taken one at a time under a lock by the driver's threads and by the
    actors' dispatcher: each item goes to exactly one of them."""

    def __init__(self, feed: WorkFeed):
        self._items = iter(feed)
        self._lock = threading.Lock()
        self.exhausted = False

    def take(self) -> Work | None:
        with self._lock:
            if self.exhausted:
                return None
            item = next(self._items, None)
            if item is None:
                self.exhausted = True
            return item

    def __iter__(self) -> Iterator[Work]:
        while (item := self.take()) is not None:
            yield item


@dataclass
class DriverWorker:
    """Processes units in a thread until told to stop (after the unit in hand) or out of work;
    keeps what it added and how fast it went."""

    work: SharedWork
    # a loaded tokenizer (its own or shared), how to load its own copy, or a helper process
    tokenizer: TokenizerBase | Callable[[], TokenizerBase] | HelperProcess
    task: UnitTask
    output: Any  # pipeline.output.storage.Output
    progress: bool
    done: RunCounts = field(default_factory=RunCounts)
    input_bytes: int = 0  # of every unit done
    warm_bytes: int = 0  # of the units after the first, done in busy_s
    busy_s: float = 0.0
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    changed: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="tokenmill-driver", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        bar = tqdm(unit="unit", disable=not self.progress, file=sys.stderr, desc="tokenize")
        helper = self.tokenizer if isinstance(self.tokenizer, HelperProcess) else None
        if helper is not None and not self._helper_started(helper):
            return
        item = None
        try:
            if helper is None and not isinstance(self.tokenizer, TokenizerBase):
                self.tokenizer = self.tokenizer()
                check_fingerprint(self.tokenizer, self.task, "(a copy)", "by a driver thread")
            with bar:
                while not self.stop.is_set():
                    item = None  # (a failure taking the next item is not the last unit's)
                    item = self.work.take()
                    if item is None:
                        break
                    t0 = time.perf_counter()
                    if helper is not None:
                        entry = helper.process_unit(item.unit, item.data)
                    else:
                        entry = process_unit(
                            item.unit, self.tokenizer, self.task, self.output, item.data
                        ).entry
                    seconds, nbytes = time.perf_counter() - t0, _input_bytes(item)
                    if self.done.units:  # the first unit also pays the warm-up: left out
                        self.busy_s += seconds
                        self.warm_bytes += nbytes
                    self.input_bytes += nbytes
                    self.done = self.done.add(
                        RunCounts(1, entry.documents, entry.tokens, entry.bytes, entry.rejected)
                    )
                    bar.update(1)
                    self.changed.set()
        except BaseException as exc:  # re-raised by the main thread
            self.error = local_unit_error(item.unit, exc) if item is not None else exc
        finally:
            if helper is not None:
                helper.close()
            self.changed.set()

    def _helper_started(self, helper: HelperProcess) -> bool:
        """Wait until the helper can take units (not past the end of the work or a stop). One
        that cannot start (it has taken no unit) leaves the work to the driver's other workers,
        with a warning, instead of failing the run."""
        try:
            if helper.wait_ready(lambda: self.stop.is_set() or self.work.exhausted):
                return True
        except Exception as exc:  # noqa: BLE001 - any start-up failure: the others go on
            log.warning(
                "a helper process could not start (%s); the driver's other workers go on", exc
            )
        helper.close()  # (or the work ran out, or the run stops, before it was ready)
        self.changed.set()
        return False

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def rate(self) -> float | None:
        """Input bytes per second of the units after the first (which also loads kernels and
        fills caches); None before the second unit is done."""
        return self.warm_bytes / self.busy_s if self.busy_s > 0 and self.warm_bytes else None


class DriverPool:
    """The driver's tokenizing threads (one per core it may use): the first with the job's
    loaded tokenizer, the others each handing their units to a helper process (`helpers`, which
    starts them: spawned from the calling thread), or sharing the job's tokenizer when it is
    `thread_safe` (one encoder and one set of encoder caches), or loading a copy of their own;
    one stop, one progress signal, and their sums."""

    def __init__(  # noqa: PLR0913
        self,
        work: SharedWork,
        tokenizer: TokenizerBase,
        load: Callable[[], TokenizerBase],
        task: UnitTask,
        output: Callable[[], Any],
        threads: int,
        progress: bool,
        helpers: Callable[[], HelperProcess] | None = None,
    ):
        self.stop, self.changed = threading.Event(), threading.Event()

        def runner(i: int) -> TokenizerBase | Callable[[], TokenizerBase] | HelperProcess:
            if i == 0:
                return tokenizer
            if helpers:
                try:
                    return helpers()
                except OSError as exc:  # (no process to spare: this worker is a thread)
                    log.warning("could not start a helper process (%s); a thread instead", exc)
            return tokenizer if tokenizer.thread_safe else load

        self.workers = [
            DriverWorker(
                work,
                runner(i),
                task,
                output(),
                progress and i == 0,
                stop=self.stop,
                changed=self.changed,
            )
            for i in range(max(threads, 1))
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    @property
    def alive(self) -> bool:
        return any(w.alive for w in self.workers)

    @property
    def error(self) -> BaseException | None:
        return next((w.error for w in self.workers if w.error is not None), None)

    @property
    def input_bytes(self) -> int:
        return sum(w.input_bytes for w in self.workers)

    @property
    def units(self) -> int:
        return sum(w.done.units for w in self.workers)

    def rate(self) -> float | None:
        """The threads' summed rate (None until one has a rate)."""
        rates = [r for r in (w.rate() for w in self.workers) if r is not None]
        return sum(rates) if rates else None

    def finish(self) -> RunCounts:
        """Stop every thread after its unit in hand; what they committed (or the first error)."""
        self.stop.set()
        for worker in self.workers:
            if worker.thread is not None:
                worker.thread.join()
        if self.error is not None:
            raise self.error
        done = RunCounts()
        for worker in self.workers:
            done = done.add(worker.done)
        return done


def _input_bytes(item: Work) -> int:
    """The planned input bytes a work item stands for (a stream's range: the compressed bytes
    read for it), so that rates project the run's bytes to do."""
    if item.planned_bytes is not None:
        return item.planned_bytes
    return len(item.data) if item.data is not None else todo_bytes([item.unit])


RAY_START_S = 8.0  # a local Ray's start-up and its actors' (5-12 s measured on 2 cores)
DRIVER_SLOWDOWN = 0.6  # the driver's speed while Ray starts beside it
THREAD_GAIN = 0.35  # what each driver thread after the first adds (the GIL: JSON parsing)
HELPER_GAIN = 1.0  # what each helper process adds: a core, as an actor does
ACTOR_EFFICIENCY = 0.8  # an actor per CPU, against a lone process on the same CPU
MAX_WORKERS = 8  # the driver's workers by default: past that, Ray's actors on every core
HELPERS_FROM = 4  # workers from which the driver's workers are processes by default
HELPER_BYTES = 1 << 30  # input bytes to do from which fewer workers are processes by default


def ray_after_seconds(
    cfg: JobConfig, threads: int, cpus: int | None = None, helpers: bool = False
) -> float:
    """`ray_after_seconds`, or by default the projected driver time beyond which starting Ray
    pays: with S the start-up, g the actors' speed over the driver's workers (`threads`, after
    the first helper processes with `helpers`) and the driver working on (slowed) during S, Ray
    takes S + (T - 0.6 S) / g for what the driver does in T, so it pays when
    T > S (g - 0.6) / (g - 1); never on one CPU, nor where the driver's helpers use every CPU."""
    if cfg.ray_after_seconds is not None:
        return cfg.ray_after_seconds
    cpus = cpus or os.cpu_count() or 1
    gain_each = HELPER_GAIN if helpers else THREAD_GAIN
    gain = ACTOR_EFFICIENCY * cpus / (1 + gain_each * (threads - 1))
    if gain <= 1:
        return float("inf")
    return RAY_START_S * (gain - DRIVER_SLOWDOWN) / (gain - 1)


def wants_ray(after_s: float, driver: DriverPool, total_bytes: int) -> bool:
    """Whether to start Ray now: at once when told (0 s); never where it cannot pay (`after_s`
    infinite: one CPU, or helper processes on every CPU); otherwise once the driver's rate
    projects more than `after_s` for the bytes left (a big compressed file's ranges count the
    compressed bytes read for them, as the file counts in the bytes to do: before, such a file
    started Ray at once, whatever `ray_after_seconds` said)."""
    if after_s <= 0:
        return True
    if after_s == float("inf"):  # actors would not beat the driver's workers here
        return False
    rate = driver.rate()
    if rate is None:
        return False
    return (total_bytes - driver.input_bytes) / rate > after_s


def driver_threads(cfg: JobConfig) -> int:
    """Tokenizing workers in the driver: `driver_threads`, or (0) one per CPU up to MAX_WORKERS
    (4 with threads alone: the GIL-held part of a unit, JSON parsing and Python per record,
    caps the gain of more threads)."""
    cap = 4 if cfg.driver_processes is False else MAX_WORKERS
    return cfg.driver_threads or max(1, min(os.cpu_count() or 1, cap))


def uses_helpers(cfg: JobConfig, workers: int, todo: int = 0) -> bool:
    """Whether the driver's workers after the first are helper processes: `driver_processes`,
    or by default from HELPERS_FROM workers on (a unit holds the GIL about 20-30% of its time,
    so up to 3 threads seldom wait on it, and a helper costs a process start and a tokenizer), and
    with fewer workers for a job of HELPER_BYTES input bytes to do or more (the helper's start,
    about a second of a core, pays there: docs/scale-out.md)."""
    if workers < 2 or not helpers_available():
        return False
    if cfg.driver_processes is not None:
        return cfg.driver_processes
    return workers >= HELPERS_FROM or todo >= HELPER_BYTES


def _workers_note(driver: DriverPool) -> str:
    """What the driver's workers are, e.g. "2 threads" or "1 thread and 3 helper processes" (a
    helper that could not be spawned left a thread in its place)."""
    helpers = sum(isinstance(w.tokenizer, HelperProcess) for w in driver.workers)
    threads = len(driver.workers) - helpers
    if not helpers:
        return f"{threads} thread{'s' if threads != 1 else ''}"
    return (
        f"{threads} thread{'s' if threads > 1 else ''} and {helpers} helper "
        f"process{'es' if helpers > 1 else ''}"
    )


def _helpers(
    cfg: JobConfig, task: UnitTask, early: EarlyHelpers | None
) -> Callable[[], HelperProcess]:
    """What starts a worker's helper: one of `early` while any is left, else a new one."""

    def helper() -> HelperProcess:
        started = early.take(cfg.output, task) if early is not None else None
        if started is not None:
            return started
        return HelperProcess(cfg.tokenizer.spec, tokenizer_options(cfg), cfg.output, task)

    return helper


def run_local(
    cfg: JobConfig,
    feed: WorkFeed,
    tokenizer: TokenizerBase,
    task: UnitTask,
    output: Callable[[], Any],
    publish_session: Callable[[str], None],
    early: EarlyHelpers | None = None,
) -> tuple[RunCounts, int, list[str]]:
    """Run the feed in the driver's threads (the first with the job's loaded tokenizer; `output`
    makes each thread's Output), starting Ray and its actors when the job turns out to need
    them; returns (what this run added, actors used, notes for the summary). Helper processes
    come from `early` (started with the job) while it has any."""
    work = SharedWork(feed)

    def load() -> TokenizerBase:
        spec, options = cfg.tokenizer.spec, tokenizer_options(cfg)
        return load_tokenizer(spec, storage_options=task.storage_options, **options)

    threads, total = driver_threads(cfg), todo_bytes(feed.todo)
    helpers = uses_helpers(cfg, threads, total)
    if early is not None and not helpers:
        early.discard()  # (the committed units left too little to do)
    make_helper = _helpers(cfg, task, early) if helpers else None
    driver = DriverPool(work, tokenizer, load, task, output, threads, cfg.progress, make_helper)
    after_s = ray_after_seconds(cfg, threads, helpers=helpers)
    how = _workers_note(driver)
    started = time.perf_counter()
    driver.start()
    try:
        while driver.alive and not wants_ray(after_s, driver, total - feed.skipped_bytes):
            driver.changed.wait(POLL_S)
            driver.changed.clear()
        if not driver.alive:  # done (or failed) before Ray was needed
            counts = driver.finish()
            split = " + ".join(str(w.done.units) for w in driver.workers)
            note = f"ran in the driver process ({how}; units {split}): {total} input bytes to do"
            note += skipped_note(feed)
            return counts, 0, [note]
        with deferred():  # importing and starting Ray, and the actors, are not cut short
            from pipeline.tokenize.actors import init_ray, run_actors, size_pool, start_actors

            rate = driver.rate()
            log.info(
                "starting Ray: %s",
                f"driver rate {rate / 1e6:.1f} MB/s, {total - driver.input_bytes} bytes left"
                if rate
                else "no driver rate yet",
            )
            session_dir = init_ray(cfg.ray_address, dashboard=cfg.dashboard)
            if session_dir:
                publish_session(session_dir)
            left = max(len(feed) - driver.units, 1) + (1 << 20) * feed.has_streams
            n_actors, notes = size_pool(cfg, left)
            actors = start_actors(cfg, task, n_actors) if not work.exhausted else []
        driver.stop.set()  # the actors take the rest; the driver ends its units in hand
        if driver.error is not None:
            if actors:
                run_actors(cfg, actors, iter(()), 0)  # (stops the actors)
            driver.finish()  # raises the driver's error
        handed_over = time.perf_counter() - started
        by_actors = run_actors(cfg, actors, iter(work), None) if actors else RunCounts()
        by_driver = driver.finish()
    finally:
        driver.stop.set()
        for worker in driver.workers:
            if worker.thread is not None:
                worker.thread.join()
    notes.append(
        f"the driver processed {by_driver.units} units ({driver.input_bytes} input bytes, "
        f"{how}) while Ray started ({handed_over:.1f} s); {len(actors)} actors "
        f"processed {by_actors.units}"
    )
    return by_driver.add(by_actors), len(actors), notes
