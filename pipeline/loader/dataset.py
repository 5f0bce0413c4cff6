"""Trainer data loader: a torch IterableDataset over the shards a ledger lists, packed into
seq_len + 1 token windows, split by rank and DataLoader worker, resumable mid-epoch.

The samples of an epoch form one global sequence that depends only on (outputs, weights and their
unit, stopping strategy or budget, packing, seed, epoch, seq_len, BOS): see stream.py, source.py
and mixing.py. Consumers (rank, worker) take whole batches of it:
global step s holds samples [s * B * R, (s + 1) * B * R); rank r takes the r-th block of B of each
step and DataLoader worker w of that rank takes the steps with s % num_workers == w, which is the
order an in-order DataLoader hands them out. After every rank has taken n batches the samples seen
are exactly the prefix [0, n * B * R), so a resume point is one number: the global sample index.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.errors import LoaderError
from pipeline.loader.arrays import ArrayPool
from pipeline.loader.batches import batch_items, span
from pipeline.loader.dataloader import build_dataloader
from pipeline.loader.kernels import warm_kernels
from pipeline.loader.options import (
    check_counts,
    check_id_range,
    check_labels,
    check_options,
    check_packing,
    check_special_ids,
)
from pipeline.loader.plan import EpochPlan, plan_epoch
from pipeline.loader.prefetch import Batches, Cursor, consume
from pipeline.loader.provenance import load_skip, sample_segments
from pipeline.loader.shards import LOSS_MASK, ShardStore, committed_shards
from pipeline.loader.slots import Bundle, WorkerSlots
from pipeline.loader.state import (
    check_state,
    consumer_state,
    epoch_state,
    global_state,
    order_key,
    order_keys,
    resume_sample,
    start_point,
)
from pipeline.loader.stream import StreamOptions
from pipeline.loader.windows import (
    Epoch,
    Filled,
    Rows,
    build_epoch,
    epoch_warning,
    fill,
    join_filled,
)
from schemas.shards import token_type


class TokenDataset(IterableDataset):
    """Packed token windows from one output (or a weighted mixture of several).

    Yields dicts of `dtype` tensors (int64 by default; int32 halves the bytes moved):
    `input_ids` and `labels` (the window shifted by one; -100 where the target is padding, a
    skipped document's, or of loss_mask 0 in a chat output), plus `position_ids` (restarting at each
    document) and `document_ids` (segment number within the window, for block-diagonal attention
    masks) when asked, `cu_seqlens` / `max_seqlen` (flash-attn varlen, `seq_lens=True`), and
    `index` (global sample index, int64) when `return_index`. With `batch_size` set, each item is a
    whole batch [batch_size, seq_len]: use `DataLoader(dataset, batch_size=None)` (or
    `dataset.dataloader(...)`); that is what makes the resume state exact with several workers.
    Without it, items are single samples [seq_len].

    `input_ids` and `labels` are the views `w[:, :-1]` and `w[:, 1:]` of the batch's rows `w` of
    one [samples, seq_len + 1] chunk array (about `chunk_tokens`, or `bundle_tokens` in a
    dataloader() worker's shared slot; each token copied once; not contiguous: use
    `.reshape`/`.flatten`, not `.view`); labels are a block of their own when they differ from the
    shifted tokens (best_fit padding, skipped documents, cross-document masking, loss masks), and
    `position_ids`/`document_ids` are views of further blocks of that array. A batch kept alive
    keeps its chunk alive. Exceptions: the last batch of each chunk a process reads itself (a
    copy of its own rows, so that a loop holding its current batch lets the next fill reuse the
    chunk while it is in the cache), the padded labels of a `drop_last=False` tail (their own
    copy), and pinned batches (`pin_memory`: contiguous pinned copies, ready for non_blocking
    transfer). Without DataLoader workers a thread fills `prefetch` chunks ahead (0: none;
    pipeline/loader/prefetch.py).

    `labels="mask"`: `targets` (the view `w[:, 1:]`, never -100) and `target_mask` (bool, True
    exactly where `labels` would not be -100; 1 byte a token) instead of `labels`: build them on
    the device (`pipeline.loader.labels_from`). docs/loader.md documents every option.
    """

    def __init__(  # noqa: PLR0913
        self,
        url: str | Sequence[str],
        seq_len: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        batch_size: int | None = None,
        weights: Sequence[float] | None = None,
        weight_unit: str = "token",
        stopping_strategy: str | None = None,
        budget_tokens: int | None = None,
        packing: str = "concat",
        pack_buffer: int = 1024,
        shuffle: bool = True,
        group_shards: int = 4,
        eos_id: int | None = None,
        bos_id: int | None = None,
        pad_id: int | None = None,
        drop_last: bool = True,
        position_ids: bool = False,
        document_ids: bool = False,
        seq_lens: bool = False,
        mask_cross_document: bool = False,
        skip_documents: str | os.PathLike | Iterable[str] | None = None,
        loss_mask: bool = True,
        labels: str = "ids",
        return_index: bool = False,
        pin_memory: bool = False,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        cache_limit: int | None = None,
        mix_block: int = 64,
        dtype: torch.dtype | str = torch.int64,
        chunk_tokens: int = 1 << 19,
        bundle_tokens: int = 1 << 20,
        prefetch: int = 0,
    ):
        super().__init__()
        urls = [url] if isinstance(url, str) else list(url)
        check_options(
            urls, seq_len, batch_size, rank, world_size, weights, weight_unit, stopping_strategy
        )
        check_packing(packing, pack_buffer, budget_tokens, seq_len, stopping_strategy)
        check_counts(group_shards, mix_block, chunk_tokens, bundle_tokens)
        check_labels(labels, prefetch)
        self.urls, self.seq_len, self.seed = urls, seq_len, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.shuffle, self.group_shards, self.drop_last = shuffle, group_shards, drop_last
        self.weight_unit, self.stopping_strategy = weight_unit, stopping_strategy
        self.budget_tokens, self.packing, self.pack_buffer = budget_tokens, packing, pack_buffer
        self.position_ids, self.document_ids = position_ids, document_ids
        self.return_index, self.pin_memory, self.mix_block = return_index, pin_memory, mix_block
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self._np_dtype = {torch.int64: np.int64, torch.int32: np.int32}.get(self.dtype)
        if self._np_dtype is None:
            raise ValueError(f"dtype {dtype}: int64 or int32")
        self.chunk_tokens, self.bundle_tokens, self.prefetch = chunk_tokens, bundle_tokens, prefetch
        self.skip = load_skip(skip_documents)
        open_shards = 2 * group_shards if cache_limit is not None else 16
        self.stores = [
            ShardStore(u, storage_options, cache_dir, cache_limit, open_shards) for u in urls
        ]
        self._ids(storage_options, eos_id, bos_id, pad_id)
        self._rows(loss_mask, labels, position_ids, document_ids, seq_lens, mask_cross_document)
        self._kernels()
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(urls)
        self.epoch = 0
        self._resume: dict[str, Any] | None = None
        # consumer state after the last yield here: (layout, start, next_step, sample), made
        # into a dict only when asked (state_dict), not for every batch
        self._progress: tuple | None = None
        self._moves, self._iterations = 0, 0  # state moves (set_epoch...), iterations begun
        self._built: Epoch | None = None
        self._warned = False
        self._slots: WorkerSlots | None = None  # in a dataloader() worker: its shared slots
        self._blocks = ArrayPool(prefetch)  # chunk arrays (and target masks) to refill
        self._owned = ArrayPool()  # the copies of chunks' last batches
        self._guard: tuple[int, threading.RLock] | None = None  # (pid, lock): see _lock

    def _rows(  # noqa: PLR0913
        self,
        loss_mask: bool,
        labels: str,
        position: bool,
        document: bool,
        seq_lens: bool,
        mask_cross: bool,
    ) -> None:
        """Whose loss masks apply, and what a filled block holds (windows.Rows)."""
        self.masked = [  # per output: its loss_mask applied (True), absent (False), ignored (None)
            store.has_column(shards[0], LOSS_MASK) if loss_mask else None
            for store, shards in zip(self.stores, self.shards, strict=True)
        ]
        self.labels = labels  # "ids" or "mask"
        differ = self.packing == "best_fit" or self.skip is not None or mask_cross
        differ = differ or any(self.masked)  # labels that differ from the shifted window
        self.rows = Rows(differ, position, document, seq_lens, mask_cross, labels == "mask")

    def _kernels(self) -> None:
        """How documents become windows, and the kernels that will do it compiled (or loaded)
        in this process, before any DataLoader worker forks from it."""
        self.options = StreamOptions(
            self.seq_len + 1,
            int(self.bos_id is not None),
            self.bos_id or 0,
            self.eos_id,
            self.pad_id,
            self.pack_buffer,
            self.shuffle,
            self.group_shards,
        )
        shard_dtype = np.dtype(token_type(self.tokenizer.get("vocab_size") or 0).to_pandas_dtype())
        best = self.packing == "best_fit"
        warm_kernels(
            self._np_dtype, shard_dtype, self.group_shards, best=best, mask=self.rows.target_mask
        )

    def _ids(self, storage_options: dict | None, eos_id: Any, bos_id: Any, pad_id: Any) -> None:
        """The ledger's shards and tokenizer of every output; EOS, BOS (the tokenizer's when it
        has one, unless bos_id < 0) and padding ids."""
        self.shards, tokenizers = zip(
            *(committed_shards(u, storage_options) for u in self.urls), strict=True
        )
        if len({t["fingerprint"] for t in tokenizers}) > 1:
            raise LoaderError(f"outputs {self.urls} were tokenized with different tokenizers")
        self.tokenizer = tokenizers[0]
        check_special_ids(self.urls, tokenizers, eos_id=eos_id, bos_id=bos_id)
        self.eos_id = eos_id if eos_id is not None else self.tokenizer.get("eos_id")
        if self.eos_id is None:
            raise LoaderError(f"tokenizer of {self.urls[0]} has no eos_id; pass eos_id=")
        bos = self.tokenizer.get("bos_id") if bos_id is None else bos_id
        self.bos_id = None if bos is None or bos < 0 else bos
        self.pad_id = self.eos_id if pad_id is None else pad_id
        check_id_range(eos_id=self.eos_id, bos_id=self.bos_id, pad_id=self.pad_id)

    def __getstate__(self) -> dict:
        """Pickled for spawned DataLoader workers: without this process's arrays and slots."""
        state = dict(self.__dict__)
        state.update(_blocks=ArrayPool(self.prefetch), _owned=ArrayPool(), _slots=None)
        if type(self._progress) is Cursor:  # (its position, not the chunk's batches)
            state["_progress"] = self._progress.position()
        state["_guard"] = None
        return state

    def _lock(self) -> threading.RLock:
        """This process's lock over the epoch, its sources' caches, the shard stores and the
        chunk pools: held by every fill (a prefetch thread's too) and by plan / provenance /
        samples. (A forked child makes its own: the parent's may be held by a thread.)"""
        if self._guard is None or self._guard[0] != os.getpid():
            self._guard = (os.getpid(), threading.RLock())
        return self._guard[1]

    # -- the global sample sequence -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a loaded resume point applies only to its own epoch."""
        if epoch != self.epoch:
            self._progress = None
            self._moves += 1
        self.epoch = epoch

    def _epoch(self, epoch: int | None = None) -> Epoch:
        """The epoch's sources, schedule and length (built once per epoch and process)."""
        epoch = self.epoch if epoch is None else epoch
        with self._lock():
            built = self._built
            if built is None or built.epoch != epoch:
                self._built = built = build_epoch(self, epoch)
                if not self._warned:
                    self._warned = True
                    warning = epoch_warning(built, self)
                    if warning:
                        warnings.warn(warning, stacklevel=3)
            return built

    def _source_seed(self, i: int) -> int:
        return (
            self.seed
            if len(self.urls) == 1
            else int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        )

    def _world(self) -> tuple[int, int]:
        if self.rank is not None:
            return self.world_size, self.rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _end(self, epoch: int, start: int, per_step: int) -> int:
        return self._epoch(epoch).end(start, per_step, self.drop_last)

    def plan(self, epoch: int | None = None, detail: bool | None = None) -> EpochPlan:
        """Sample and token counts of an epoch from its start (the drop-last tail reported) and
        per source: tokens available and used, repeats, tokens dropped, share, padding, and with
        `detail` cut documents: concat reads every shard's document lengths for it, so the
        default is detail for local outputs (and best_fit, which has the lengths anyway) only."""
        world, _ = self._world()
        per_step = (self.batch_size or 1) * world
        with self._lock():
            if detail is None:
                detail = self.packing == "best_fit" or all(store.local for store in self.stores)
            built = self._epoch(epoch)
            return plan_epoch(
                built,
                built.end(0, per_step, self.drop_last),
                per_step,
                urls=self.urls,
                weights=self.weights,
                packing=self.packing,
                weight_unit=self.weight_unit,
                detail=detail,
            )

    def provenance(self, sample_index: int, epoch: int | None = None) -> list[dict[str, Any]]:
        """The document segments of a global sample (pipeline/loader/provenance.py), from the
        ledger and this deterministic plan alone."""
        with self._lock():
            return sample_segments(self._epoch(epoch), sample_index)

    # -- iteration -----------------------------------------------------------------------------

    def _layout(self) -> list[int]:
        world, rank = self._world()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return [world, rank, workers, worker, self.batch_size or 1]

    def _loaded(self) -> dict[str, Any] | None:
        """The loaded resume state when it is of the current epoch."""
        return self._resume if self._resume and self._resume["epoch"] == self.epoch else None

    def _start(self, layout: list[int]) -> tuple[int, int, int]:
        """(global start sample, this consumer's first step, sample reported before any yield)."""
        return start_point(self._loaded(), layout)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor] | Bundle]:
        slots = self._slots if get_worker_info() is not None else None
        if slots is not None:  # a dataloader() worker: bundles, where the main process says
            return consume(self, slots)
        return Batches.of(consume(self, None))  # (no Python per batch)

    def _chunk_batches(self, tokens: int) -> int:
        """Batches (or samples, without batch_size) read in one fill of about `tokens`."""
        return max(1, tokens // ((self.batch_size or 1) * (self.seq_len + 1)))

    def _state(self, sample: int, exact: bool) -> dict[str, Any]:
        return epoch_state(self.epoch, sample, self.seed, self.seq_len, exact, order_key(self))

    def _consumer_state(self, layout: list[int], start: int, next_step: int, sample: int) -> dict:
        return consumer_state(self._state(sample, layout[2] == 1), layout, start, next_step)

    def _chunk(
        self, ranges: list[tuple[int, int]], epoch: int, dtype: type
    ) -> tuple[np.ndarray, np.ndarray | None, Filled]:
        """A fresh [rows, samples, seq_len + 1] block holding the sample ranges, in order, and
        (labels="mask") their [samples, seq_len] target mask."""
        n, _ = span(ranges)
        masks = (n, self.seq_len) if self.rows.target_mask else None
        with self._lock():
            block, mask = self._blocks.take((self.rows.count, n, self.seq_len + 1), dtype, masks)
            return block, mask, self._fill_ranges(ranges, epoch, block, mask)

    def _fill_ranges(
        self,
        ranges: list[tuple[int, int]],
        epoch: int,
        block: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> Filled:
        """Samples of several ranges placed one after another in block (and mask; one read when
        they follow each other in the stream, as a lone rank's consecutive steps do)."""
        with self._lock():
            built, skips = self._epoch(epoch), self.skip is not None
            if span(ranges)[1]:
                return fill(built, ranges[0][0], ranges[-1][1], block, self.rows, skips, mask)
            at, parts = 0, []
            for a, b in ranges:
                part = None if mask is None else mask[at : at + b - a]
                parts.append(fill(built, a, b, block[:, at : at + b - a], self.rows, skips, part))
                at += b - a
            return join_filled(parts, [b - a for a, b in ranges], self.seq_len)

    def _items(
        self,
        block: np.ndarray,
        ranges: list[tuple[int, int]],
        filled: Filled,
        single: bool = False,
        pin: bool | None = None,
        mask: np.ndarray | None = None,
        own_last: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The batch dicts (or samples, `single`) of the sample ranges held by one
        [rows, samples, seq_len + 1] block and its target mask (labels="mask"; batch_items);
        pinned copies with pin_memory in the main process; `own_last`: the last item holds
        copies, not views of the block."""
        if pin is None:
            pin = self.pin_memory and get_worker_info() is None and torch.cuda.is_available()
        return batch_items(
            block,
            ranges,
            filled,
            seq_len=self.seq_len,
            rows=self.rows,
            return_index=self.return_index,
            single=single,
            pin=pin,
            mask=mask,
            own_last=self._owned.take if own_last else None,
        )

    def samples(self, a: int, b: int, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """Global samples a .. b-1 of an epoch (default: the current one) as one batch
        (always batch-shaped, also with batch_size=None)."""
        epoch = self.epoch if epoch is None else epoch
        block, mask, filled = self._chunk([(a, b)], epoch, self._np_dtype)
        return next(self._items(block, [(a, b)], filled, mask=mask))

    # -- resume --------------------------------------------------------------------------------

    def state_dict(self, steps: int | None = None) -> dict[str, Any]:
        """The resume point. In a consumer (a DataLoader worker, or this process when it iterated
        itself) it is that consumer's exact position. With `steps` (batches this rank took since
        the iteration began) it is the global position, right for any DataLoader."""
        progress = self._progress
        if steps is None and progress is not None:
            return self._consumer_state(
                *(progress.position() if type(progress) is Cursor else progress)
            )
        loaded = self._loaded()
        base = loaded["sample"] if loaded else 0
        world, _ = self._world()
        per_step = (self.batch_size or 1) * world
        sample = min(base + (steps or 0) * per_step, self._end(self.epoch, base, per_step))
        return self._state(sample, exact=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a state of `state_dict` or `global_state` (also with another world size
        or worker count when the state is global)."""
        check_state(state, order_keys(self), seed=self.seed, seq_len=self.seq_len)
        self.epoch = state["epoch"]
        self._resume = dict(state)
        self._progress = None
        self._moves += 1

    global_state = staticmethod(global_state)

    def dataloader(
        self,
        num_workers: int = 0,
        *,
        stateful: bool = False,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
        shared_slots: bool = True,
        **kwargs: Any,
    ) -> DataLoader:
        """A DataLoader (or torchdata StatefulDataLoader) set up the way this dataset expects.

        With workers (and a dataset batch_size, and no collate_fn), `shared_slots` makes the
        workers fill bundles of batches (about chunk_tokens) into shared-memory slots and send
        only slot numbers; batches are handed out as views of the slots, and a slot is reused
        only once nothing references it (pipeline/loader/slots.py). Workers are persistent
        unless `persistent_workers=False` is passed: they follow set_epoch and load_state_dict
        (each iteration tells them where to start), and torch's fork and join of every worker
        each epoch is saved. Otherwise every batch travels as torch's per-tensor
        shared-memory segments. Without workers (plain DataLoader), batches come straight from
        the dataset's iterator: the same items, without the DataLoader's per-batch profiler
        annotation and conversion walk (about 60 us a batch here)."""
        return build_dataloader(
            self,
            num_workers,
            stateful=stateful,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
            shared_slots=shared_slots,
            **kwargs,
        )

    # -- shared batch slots (DataLoader workers, see pipeline/loader/slots.py) ------------------

    def _ring_shapes(self, workers: int, slots: int) -> tuple[tuple, tuple | None]:
        """The slots' ring and, labels="mask", the target masks' ring beside it."""
        samples = self._chunk_batches(self.bundle_tokens) * self.batch_size
        masks = (workers, slots, samples, self.seq_len) if self.rows.target_mask else None
        return (workers, slots, self.rows.count, samples, self.seq_len + 1), masks

    def _resume_sample(self) -> int:
        """Where the next iteration of this (main process) dataset starts: a loaded global
        state of the current epoch, else 0."""
        return resume_sample(self._loaded(), self._layout())

    def describe(self) -> dict[str, Any]:
        fields = ("urls", "seq_len", "eos_id", "bos_id", "tokenizer")
        return {**{k: getattr(self, k) for k in fields}, **asdict(self.plan(detail=False))}
