"""The batches of a process that iterates a TokenDataset itself (no DataLoader workers: a loop
over the dataset, `ds.dataloader(num_workers=0)`, a torch DataLoader without workers), one
chunk of about `chunk_tokens` at a time, and the thread that fills the next chunks ahead of the
consumer (`prefetch`, chunks filled ahead; 0: every fill in the consumer, between its batches).

With prefetch, while the consumer works through chunk k's batches a background thread fills
chunk k + 1 (up to k + prefetch); the consumer cuts a chunk into batch views when it takes it
(torch calls: Python under the GIL, nothing gained in the thread). The fill's heavy parts are
numba `nogil` kernels, so they run beside whatever the consumer does outside the GIL (a
training step waiting on its GPU); its Python parts wait for the GIL (docs/loader.md, "Measured
(issue 15, prefetch)"). A fill is a pure function of (epoch, sample ranges), so the batches
are the same, in the same order, as without. Ordering and memory: fill k + prefetch starts only
once the consumer asks for the second batch of chunk k (it has then let go of chunk k - 1's last
batch, if it keeps only its current one), so at most `prefetch` chunks exist beyond the one being
consumed; a chunk's arrays are refilled only when nothing references them any more
(ArrayPool's reference counts, checked by the filling thread under the dataset's lock), so a
batch the consumer still holds is never overwritten. The resume position counts the batches
yielded, never the ones filled ahead. Lifecycle: the thread stops (and is joined) when the
iteration ends, is abandoned (the generator closed or collected), or raises; an exception in a
fill re-raises in the consumer at the chunk where it happened, after every batch before it."""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from torch.utils.data import get_worker_info

from pipeline.loader.batches import step_ranges
from pipeline.loader.slots import fill_bundles

WAIT_S = 0.1  # the filling thread's waits for the dataset lock: it checks for a stop between
JOIN_S = 10.0  # close(): longest wait for a fill under way (a download, say: it then ends alone)


class Prefetcher:
    """Runs `make(spec)` for each spec of `specs` in a daemon thread, under `guard` (the
    dataset's lock), and hands the results out in order (`take`); result j + ahead is made only
    once result j is released (`release`)."""

    def __init__(
        self,
        make: Callable[[Any], Any],
        specs: Iterable[Any],
        ahead: int,
        guard: threading.RLock,
    ):
        self.make, self.specs, self.ahead, self.guard = make, iter(specs), ahead, guard
        self.cond = threading.Condition(threading.RLock())  # (re-entrant: a close() run by GC)
        self.ready: deque[tuple[str, Any]] = deque()
        self.released = 0  # results the consumer is done with but for their current batch
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="tokenmill-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        made = 0
        try:
            for spec in self.specs:
                with self.cond:
                    while not self.stopped and made >= self.released + self.ahead:
                        self.cond.wait()
                if self.stopped or not self._lock():
                    return
                try:
                    result = self.make(spec)
                finally:
                    self.guard.release()
                made += 1
                if not self._put("item", result):
                    return
                del result
            self._put("end", None)
        except BaseException as error:  # noqa: BLE001 (re-raised in the consumer)
            self._put("error", error)

    def _lock(self) -> bool:
        """The dataset's lock, or False once stopped (a consumer closing this while it holds
        the lock, e.g. from a garbage collection inside plan(), must not wait on us)."""
        while not self.guard.acquire(timeout=WAIT_S):
            if self.stopped:
                return False
        return True

    def _put(self, kind: str, value: Any) -> bool:
        with self.cond:
            if self.stopped:
                return False
            self.ready.append((kind, value))
            self.cond.notify_all()
            return True

    def take(self) -> Any:
        """The next result (re-raising the exception of its fill); StopIteration at the end."""
        with self.cond:
            while not self.ready:
                if not self.thread.is_alive() and not self.ready:
                    raise RuntimeError("the prefetch thread ended without a result")
                self.cond.wait(WAIT_S)
            kind, value = self.ready.popleft()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def release(self) -> None:
        """The oldest result not released yet may be overwritten once nothing references it:
        the thread may make one more."""
        with self.cond:
            self.released += 1
            self.cond.notify_all()

    def close(self) -> None:
        """Stop the thread (after the fill under way, if any) and join it (a fill still running
        after JOIN_S ends on its own, its result dropped); results not taken are dropped."""
        with self.cond:
            self.stopped = True
            self.ready.clear()
            self.cond.notify_all()
        if self.thread is not threading.current_thread() and not sys.is_finalizing():
            self.thread.join(JOIN_S)  # (at exit a daemon thread may never run again)


def chunk_specs(
    step: int, chunk: int, workers: int, base: int, per_step: int, batch: int, end: int
) -> Iterator[list[tuple[int, int]]]:
    """The sample ranges of each chunk of a consumer's steps (`chunk` steps a chunk, every
    `workers`-th step from `step`; step s starts at sample base + s * per_step)."""
    while True:
        ranges = step_ranges(
            range(step, step + chunk * workers, workers), base, per_step, batch, end
        )
        if not ranges:
            return
        yield ranges
        step += chunk * workers


LIST_ITERATOR = type(iter([]))


class Batches(itertools.chain):
    """What TokenDataset.__iter__ returns in a process that reads the dataset itself: each
    chunk's batches chained (chain's own `next`: no Python per batch) and, as a generator has,
    `close()`: the iteration ends there (a prefetch thread is stopped and joined), its position
    kept."""

    __slots__ = ("_chunks",)

    @classmethod
    def of(cls, chunks: Generator[Iterator[Any], None, None]) -> Batches:
        batches = cls.from_iterable(chunks)
        batches._chunks = chunks
        return batches

    def close(self) -> None:
        self._chunks.close()


class Cursor:
    """Where a consumer stands in one chunk of its steps: read from the chunk's list iterator
    (its length hint is what is left) only when a state is asked for, so nothing runs per
    batch; a chunk that comes as a generator (prefetched, pinned) is counted as it yields."""

    __slots__ = ("before", "layout", "start", "step", "per_step", "end", "items", "count", "gen")

    def __init__(
        self, before: tuple, step: int, per_step: int, end: int, items: Iterator, count: int
    ):
        self.before, self.layout, self.start, self.step = before, before[0], before[1], step
        self.per_step, self.end, self.items, self.count = per_step, end, items, count
        self.gen: Generator[dict[str, Any], None, None] | None = None

    def counted(self) -> Iterator[dict[str, Any]]:
        items, self.items, self.count = self.items, None, 0
        self.gen = self._count(items)
        return self.gen

    def _count(self, items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            self.count += 1
            yield item

    def position(self, taken: int | None = None) -> tuple:
        """(layout, start, next step, sample after the last batch taken): the state's parts."""
        if taken is None:  # (the iterator's own method: at exit, module globals may be gone)
            taken = self.count if self.items is None else self.count - self.items.__length_hint__()
        if taken == 0:
            return self.before
        workers = self.layout[2]
        done = self.start + (self.step + (taken - 1) * workers + 1) * self.per_step
        return (self.layout, self.start, self.step + taken * workers, min(done, self.end))

    def stop(self) -> None:
        """Hand out nothing more of this chunk (the iteration was closed in it)."""
        if self.gen is not None:
            self.gen.close()
        elif self.items is not None:
            for _ in self.items:
                pass


def consume(ds: Any, slots: Any) -> Iterator[Any]:
    """TokenDataset.__iter__'s work: a dataloader() worker's bundles (`slots`: where the main
    process says), or (this process reads) each fill's batches, `chunk` steps a fill (and
    prefetch ahead), started where the resume state says."""
    if slots is not None:
        ds.epoch, sample = slots.begin()
        ds._resume = {"epoch": ds.epoch, "sample": sample, "exact": True}
    layout = ds._layout()
    epoch, per_step = ds.epoch, layout[4] * layout[0]  # batch * world
    chunk = ds._chunk_batches(ds.chunk_tokens if slots is None else ds.bundle_tokens)
    if slots is not None:  # bundles of `chunk` consecutive steps per worker: part of layout
        layout.append(chunk)
    start, step, sample = ds._start(layout)
    end = ds._end(epoch, start, per_step)
    ds._progress = (layout, start, step, sample)
    ds._iterations += 1
    if slots is not None:
        yield from fill_bundles(ds, slots, layout, start, step, end)
    else:
        yield from local_chunks(ds, ds._progress, end, chunk)


def local_chunks(ds: Any, here: tuple, end: int, chunk: int) -> Iterator[Iterator[dict[str, Any]]]:
    """What TokenDataset.__iter__ chains in a process that reads the dataset itself, from
    `here` (layout, start sample, consumer step, sample reported): each chunk's batches (or
    samples), `chunk` steps a fill. The dataset's `_progress` is a Cursor over the chunk being
    consumed (the batches yielded, not those filled ahead) while this is the dataset's latest
    iteration and nothing moved its position since it began (set_epoch to another epoch,
    load_state_dict: they apply to the next iteration)."""
    layout, start, step, _ = here
    world, rank, workers, _, batch = layout
    epoch, per_step, single = ds.epoch, batch * world, ds.batch_size is None
    specs = chunk_specs(step, chunk, workers, start + rank * batch, per_step, batch, end)
    worker = get_worker_info() is not None  # (torch's per-tensor transport: no thread there)
    if ds.prefetch > 0 and not worker:
        chunks = prefetched(ds, specs, epoch, single)
    else:  # (a worker's batches are pickled anyway: no own last batch there)
        chunks = ((r, chunk_items(ds, r, epoch, single, not worker)) for r in specs)
    mine, at = (ds._moves, ds._iterations), None
    try:
        for ranges, items in chunks:
            at = Cursor(here, step, per_step, end, items, len(ranges))
            if (ds._moves, ds._iterations) == mine:
                ds._progress = at
            yield items if type(items) is LIST_ITERATOR else at.counted()
            here, step, items = at.position(len(ranges)), step + len(ranges) * workers, None
    finally:  # (closed or abandoned mid-chunk: the state no longer holds the chunk's batches)
        if at is not None:
            if ds._progress is at:
                ds._progress = at.position()
            at.stop()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def chunk_items(
    ds: Any, ranges: list[tuple[int, int]], epoch: int, single: bool, own_last: bool = True
) -> Iterator[dict[str, Any]]:
    """One chunk filled and cut into its batches; `own_last`: the last one a copy of its own
    rows, so that a loop holding only its current batch leaves the chunk arrays unreferenced
    and the next fill refills them while they are in the cache (not alternating between two)."""
    block, mask, filled = ds._chunk(ranges, epoch, ds._np_dtype)
    return ds._items(block, ranges, filled, single, mask=mask, own_last=own_last)


def prefetched(
    ds: Any, specs: Iterator, epoch: int, single: bool
) -> Iterator[tuple[list, Iterator]]:
    """Each chunk's batches: filled by a Prefetcher thread `ds.prefetch` chunks ahead, cut into
    batch views here (torch calls: Python, no gain in the thread)."""

    def make(ranges: list[tuple[int, int]]) -> tuple:
        return ranges, *ds._chunk(ranges, epoch, ds._np_dtype)

    pre = Prefetcher(make, specs, ds.prefetch, ds._lock())
    try:
        while True:
            try:
                ranges, block, mask, filled = pre.take()
            except StopIteration:
                return
            items = ds._items(block, ranges, filled, single, mask=mask, own_last=True)
            del block, mask  # only the batches hold the chunk arrays now
            yield ranges, released(items, pre)
            del items
    finally:
        pre.close()


def released(items: Iterator[dict[str, Any]], pre: Prefetcher) -> Iterator[dict[str, Any]]:
    """A chunk's batches; the next fill may start once the consumer asks for the batch after
    the chunk's first: a loop that holds only its current batch has let go of the previous
    chunk's last batch by then (a view of that chunk when it is not a copy), so the fill
    reuses the previous chunk's arrays: 1 + prefetch chunks in all."""
    first = True
    for item in items:
        yield item
        if first:
            first = False
            pre.release()
