"""Shared batch slots: how TokenDataset.dataloader() workers hand batches to the training loop
without a shared-memory segment per tensor and without a copy in the main process.

Each worker owns a row of slots in one shared-memory ring. It fills a bundle of batches (about
`chunk_tokens`) straight into a free slot, in the delivered dtype, and sends only the slot number
and sample ranges through the DataLoader (one queue message per bundle). The main process hands
the batches out as views of the slot. A slot is free for its worker again only once nothing in
the main process references it any more: the main process checks (CPython reference counts: every
tensor or array view of the slot holds one) before it waits for the next bundle, and returns freed
slots to their worker through a pipe. A worker with no free slot (a consumer keeping many batches
alive) sends that bundle by value instead, through torch's own shared memory, so nothing waits.

Each iteration starts with a RESET message per worker (after the main process has written the
epoch and start sample into a shared control block): the worker starts from it, with every slot
free except those the main process still holds. That makes persistent workers follow set_epoch and
load_state_dict, and returns the slots of bundles an abandoned iteration left unread.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.loader.batches import step_ranges

RELEASE, RESET = 0, 1
CONTROL = 3  # generation, epoch, start sample


class Bundle:
    """What a worker sends for a bundle of batches: the slot it filled (or, slot -1, the block
    and target mask themselves), the sample ranges of its batches and what the fill says besides
    the block (valid tokens of the last window, sources, cu_seqlens starts: windows.Filled)."""

    __slots__ = ("worker", "slot", "ranges", "filled", "block", "mask")

    def __init__(self, worker, slot, ranges, filled, block=None, mask=None):  # noqa: ANN001
        self.worker, self.slot, self.ranges = worker, slot, ranges
        self.filled, self.block, self.mask = filled, block, mask

    def __getstate__(self) -> tuple:
        return self.worker, self.slot, self.ranges, self.filled, self.block, self.mask

    def __setstate__(self, state: tuple) -> None:
        self.worker, self.slot, self.ranges, self.filled, self.block, self.mask = state


class WorkerSlots:
    """A worker's side: its slots ([slots, rows, samples, seq_len + 1]), their target masks
    ([slots, samples, seq_len] bool, labels="mask"; else None), the control block and the pipe
    on which the main process returns slots."""

    def __init__(
        self, slots: np.ndarray, control: np.ndarray, conn: Any, masks: np.ndarray | None = None
    ):
        self.slots, self.control, self.conn, self.masks = slots, control, conn, masks
        self.free: set[int] = set()
        self.generation = 0

    def begin(self) -> tuple[int, int]:
        """Wait for this iteration's RESET; returns (epoch, start sample)."""
        generation = int(self.control[0])
        while self.generation != generation:
            self._apply(self.conn.recv_bytes())
        return int(self.control[1]), int(self.control[2])

    def take(self) -> int | None:
        """A free slot, or None when the main process still holds every slot."""
        while self.conn.poll():
            self._apply(self.conn.recv_bytes())
        return self.free.pop() if self.free else None

    def _apply(self, data: bytes) -> None:
        message = np.frombuffer(data, dtype=np.int64).tolist()
        if message[0] == RESET:
            self.generation = message[1]
            self.free = set(range(len(self.slots))) - set(message[2:])
        else:
            self.free.update(message[1:])


class MainSlots:
    """The main process's side of one ring: it makes the shared memory and pipes (before the
    workers start), starts iterations, and tracks which slots the training loop still holds."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        context: Any,
        mask_shape: tuple[int, ...] | None = None,
    ):
        workers = shape[0]
        self.ring = torch.empty(shape, dtype=dtype).share_memory_()
        self.mask_ring = None  # labels="mask": each slot's target mask, 1 byte a token
        if mask_shape is not None:
            self.mask_ring = torch.empty(mask_shape, dtype=torch.bool).share_memory_()
        self.control = torch.zeros(CONTROL, dtype=torch.int64).share_memory_()
        pipes = [context.Pipe(duplex=False) for _ in range(workers)]
        self.receivers = [r for r, _ in pipes]
        self.senders = [s for _, s in pipes]
        self.slots = self.ring.numpy()
        self.masks = None if self.mask_ring is None else self.mask_ring.numpy()
        # (worker, slot) -> the views handed out: (block, target mask or None)
        self.held: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self.generation = 0
        self.bundles = {"in_slots": 0, "by_value": 0}  # how bundles arrived (diagnostics)
        self.finished = False  # an iteration over this ring ran to its end

    def begin(self, epoch: int, start: int) -> None:
        self.release()
        self.generation += 1
        self.control.numpy()[:] = (self.generation, epoch, start)
        for worker, sender in enumerate(self.senders):
            held = [slot for w, slot in self.held if w == worker]
            sender.send_bytes(np.array([RESET, self.generation, *held], np.int64).tobytes())

    def release(self) -> None:
        """Return to their workers the slots nothing references any more."""
        freed: dict[int, list[int]] = {}
        for key in list(self.held):
            views = self.held[key]  # references: the tuple's, getrefcount's argument
            if sys.getrefcount(views[0]) == 2 and (
                views[1] is None or sys.getrefcount(views[1]) == 2
            ):
                del self.held[key]
                freed.setdefault(key[0], []).append(key[1])
        for worker, slots in freed.items():
            self.senders[worker].send_bytes(np.array([RELEASE, *slots], np.int64).tobytes())

    def block(self, bundle: Bundle) -> tuple[np.ndarray, np.ndarray | None]:
        """The bundle's [rows, samples, seq_len + 1] array and [samples, seq_len] target mask
        (None without one): views of its slot (held from now until nothing references them)
        or the arrays it came with."""
        if bundle.slot < 0:
            self.bundles["by_value"] += 1
            return bundle.block.numpy(), None if bundle.mask is None else bundle.mask.numpy()
        self.bundles["in_slots"] += 1
        n = sum(b - a for a, b in bundle.ranges)
        view = self.slots[bundle.worker, bundle.slot, :, :n]
        mask = None if self.masks is None else self.masks[bundle.worker, bundle.slot, :n]
        self.held[(bundle.worker, bundle.slot)] = (view, mask)
        return view, mask

    def __getstate__(self) -> dict:
        """What a worker needs (the ring, control block and pipe ends): with the spawn start
        method this is pickled for each worker (tensors as shared memory, pipes as handles)."""
        return {
            "ring": self.ring,
            "mask_ring": self.mask_ring,
            "control": self.control,
            "receivers": self.receivers,
        }

    def close(self) -> None:
        for conn in (*self.senders, *self.receivers):
            conn.close()


def fill_bundles(
    dataset: Any, slots: WorkerSlots, layout: list[int], start: int, step: int, end: int
) -> Iterator[Bundle]:
    """What a dataloader() worker's TokenDataset yields: bundles of `chunk` consecutive steps
    (bundle j goes to worker j % workers, the order an in-order DataLoader hands items out),
    each filled into a free shared slot (and its target mask), or sent by value when the main
    process holds every slot of this worker."""
    world, rank, workers, worker, batch, chunk = layout
    per_step, base = batch * world, start + rank * batch
    while True:
        ranges = step_ranges(range(step, step + chunk), base, per_step, batch, end)
        if not ranges:
            return
        slot = slots.take()
        if slot is None:
            block, mask, filled = dataset._chunk(ranges, dataset.epoch, dataset._np_dtype)
            mask = None if mask is None else torch.from_numpy(mask)
            bundle = Bundle(worker, -1, ranges, filled, torch.from_numpy(block), mask)
        else:
            rows = sum(b - a for a, b in ranges)
            block = slots.slots[slot, :, :rows]
            mask = None if slots.masks is None else slots.masks[slot, :rows]
            filled = dataset._fill_ranges(ranges, dataset.epoch, block, mask)
            bundle = Bundle(worker, slot, ranges, filled)
        done = start + (step + len(ranges)) * per_step
        step += chunk * workers
        dataset._progress = (layout, start, step, done if done < end else end)
        yield bundle


def attach(main: MainSlots, user_init: Callable[[int], None] | None, worker_id: int) -> None:
    """worker_init_fn of a slot loader: this worker's dataset copy fills its row of the ring."""
    info = get_worker_info()
    masks = None if main.mask_ring is None else main.mask_ring.numpy()[worker_id]
    info.dataset._slots = WorkerSlots(
        main.ring.numpy()[worker_id], main.control.numpy(), main.receivers[worker_id], masks
    )
    if user_init is not None:
        user_init(worker_id)


@functools.cache
def slot_loader(base: type) -> type:
    """`base` (DataLoader or StatefulDataLoader) whose workers hand batches over through shared
    slots (see the module's docstring). Its resume state is the loader's own: `state_dict()` is
    the global position after the batches handed out so far (`TokenDataset.state_dict(steps)`),
    which resumes under any world size or worker count; `load_state_dict` takes that or a
    StatefulDataLoader state."""

    class SlotLoader(base):
        _tm_slots: MainSlots | None = None
        _tm_taken: list[int] = [0]  # noqa: RUF012  (replaced per iteration)
        _tm_moves = 0  # the dataset's position moves when the iteration began

        def __iter__(self):
            dataset, slots = self.dataset, self._tm_slots
            # the ring outlives an iteration when its workers do (persistent), or when they are
            # gone (an iteration run to its end joins them): then no old worker can write to it
            if slots is None or not (self.persistent_workers or slots.finished):
                if slots is not None:
                    slots.close()
                context = self.multiprocessing_context or torch.multiprocessing
                shapes = dataset._ring_shapes(self.num_workers, self.prefetch_factor + 3)
                slots = self._tm_slots = MainSlots(shapes[0], dataset.dtype, context, shapes[1])
            slots.finished = False
            slots.begin(dataset.epoch, dataset._resume_sample())
            self._tm_taken, self._tm_moves = (taken := [0]), dataset._moves
            return self._take(super().__iter__(), slots, taken)

        def _get_iterator(self):
            user_init = getattr(self, "_tm_user_init", self.worker_init_fn)
            self._tm_user_init = user_init
            self.worker_init_fn = functools.partial(attach, self._tm_slots, user_init)
            try:
                return super()._get_iterator()
            finally:
                self.worker_init_fn = user_init

        def _take(self, iterator: Any, slots: MainSlots, taken: list[int]) -> Iterator[dict]:
            items, pin = self.dataset._items, self.pin_memory and torch.cuda.is_available()
            for bundle in iterator:
                block, mask = slots.block(bundle)
                batches = items(block, bundle.ranges, bundle.filled, pin=pin, mask=mask)
                del block, mask  # only the batches may hold the slot now (see release)
                for item in batches:
                    taken[0] += 1
                    yield item
                slots.release()  # before waiting for the next bundle
            slots.finished = True

        @property
        def bundles(self) -> dict[str, int]:
            """Bundles received through shared slots and by value since the ring was made
            (it lasts while iterations run to their end, or with persistent workers)."""
            return dict(self._tm_slots.bundles) if self._tm_slots else {}

        def state_dict(self) -> dict[str, Any]:
            """The global position after the batches taken since the iteration began; none taken
            yet once the dataset moved since (set_epoch to another epoch, or its own
            load_state_dict: the count belongs to the old position, and added to the new one
            it said an epoch not begun was over)."""
            moved = self.dataset._moves != self._tm_moves
            return self.dataset.state_dict(steps=0 if moved else self._tm_taken[0])

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.dataset.load_state_dict(type(self.dataset).global_state(state))
            self._tm_taken = [0]

    SlotLoader.__name__ = SlotLoader.__qualname__ = f"Slot{base.__name__}"
    return SlotLoader
