"""Trainer data loader: a torch IterableDataset over the shards a ledger lists, packed into
seq_len + 1 token windows, split by rank and DataLoader worker, resumable mid-epoch.

The samples of an epoch form one global sequence that depends only on (outputs, weights, seed,
epoch, seq_len): see pipeline/loader_stream.py. Consumers (rank, worker) take whole batches of it:
global step s holds samples [s * B * R, (s + 1) * B * R); rank r takes the r-th block of B of each
step and DataLoader worker w of that rank takes the steps with s % num_workers == w, which is the
order an in-order DataLoader hands them out. After every rank has taken n batches the samples seen
are exactly the prefix [0, n * B * R), so a resume point is one number: the global sample index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.loader_shards import LoaderError, ShardStore, read_ledger
from pipeline.loader_stream import Mixture, PackedStream

STATE_VERSION = 1
IGNORE_INDEX = -100  # label value of padding (torch's cross_entropy default ignore_index)


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch delivers, counted from its start, for the current world size and batch."""

    epoch: int
    num_samples: int  # samples delivered (global, all ranks)
    samples_per_step: int  # batch_size * world_size
    steps: int  # global steps (batches per rank, the last one maybe partial unless drop_last)
    stream_tokens: int  # documents' tokens plus one EOS each, over all sources
    dropped_samples: int  # full windows dropped to keep every step full (drop_last)
    dropped_tokens: int  # stream tokens no sample covers (partial window, dropped windows, mixing)


class TokenDataset(IterableDataset):
    """Packed token windows from one output (or a weighted mixture of several).

    Yields dicts of int64 tensors: `input_ids` and `labels` (the window shifted by one), plus
    `position_ids` (restarting at each document) and `document_ids` (segment number within the
    window, for block-diagonal attention masks) when asked, and `index` (global sample index)
    when `return_index`. With `batch_size` set, each item is a whole batch [batch_size, seq_len]:
    use `DataLoader(dataset, batch_size=None)` (or `dataset.dataloader(...)`); that is what makes
    the resume state exact with several workers. Without it, items are single samples [seq_len].
    """

    def __init__(
        self,
        url: str | Sequence[str],
        seq_len: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        batch_size: int | None = None,
        weights: Sequence[float] | None = None,
        shuffle: bool = True,
        group_shards: int = 4,
        eos_id: int | None = None,
        pad_id: int | None = None,
        drop_last: bool = True,
        position_ids: bool = False,
        document_ids: bool = False,
        return_index: bool = False,
        pin_memory: bool = False,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        mix_block: int = 64,
    ):
        super().__init__()
        urls = [url] if isinstance(url, str) else list(url)
        if seq_len < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
        if (rank is None) != (world_size is None) or (
            rank is not None and not 0 <= rank < world_size
        ):
            raise ValueError(
                f"rank={rank}, world_size={world_size}: give both, 0 <= rank < world_size"
            )
        if weights is not None and len(weights) != len(urls):
            raise ValueError(f"{len(weights)} weights for {len(urls)} outputs")
        self.urls, self.seq_len, self.seed = urls, seq_len, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.shuffle, self.group_shards, self.drop_last = shuffle, group_shards, drop_last
        self.position_ids, self.document_ids = position_ids, document_ids
        self.return_index, self.pin_memory, self.mix_block = return_index, pin_memory, mix_block
        self.stores = [ShardStore(u, storage_options, cache_dir) for u in urls]
        self.shards, tokenizers = zip(*(read_ledger(u, storage_options) for u in urls), strict=True)
        if len({t["fingerprint"] for t in tokenizers}) > 1:
            raise LoaderError(f"outputs {urls} were tokenized with different tokenizers")
        self.tokenizer = tokenizers[0]
        self.eos_id = eos_id if eos_id is not None else self.tokenizer.get("eos_id")
        if self.eos_id is None:
            raise LoaderError(f"tokenizer of {urls[0]} has no eos_id; pass eos_id=")
        self.pad_id = self.eos_id if pad_id is None else pad_id
        self.weights = list(weights) if weights is not None else [1.0] * len(urls)
        self.epoch = 0
        self._resume: dict[str, Any] | None = None
        self._progress: dict[str, Any] | None = None  # consumer state after the last yield here
        self._built: tuple[int, list[PackedStream], Mixture | None] | None = None
        self._scratch: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}

    # -- the global sample sequence -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a loaded resume point applies only to its own epoch."""
        if epoch != self.epoch:
            self._progress = None
        self.epoch = epoch

    def _sources(self, epoch: int) -> tuple[list[PackedStream], Mixture | None]:
        if self._built is None or self._built[0] != epoch:
            streams = [
                PackedStream(
                    store,
                    list(shards),
                    eos_id=self.eos_id,
                    seed=self._source_seed(i),
                    epoch=epoch,
                    shuffle=self.shuffle,
                    group_shards=self.group_shards,
                )
                for i, (store, shards) in enumerate(zip(self.stores, self.shards, strict=True))
            ]
            mixture = None
            if len(streams) > 1:
                mixture = Mixture(
                    self.weights,
                    [s.total // (self.seq_len + 1) for s in streams],
                    block=self.mix_block,
                    seed=self.seed,
                    epoch=epoch,
                )
            self._built = (epoch, streams, mixture)
        return self._built[1], self._built[2]

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

    def _counts(self, epoch: int) -> tuple[int, int, int]:
        """(full windows, windows incl. a padded partial one, stream tokens) of an epoch."""
        streams, mixture = self._sources(epoch)
        window = self.seq_len + 1
        total = sum(s.total for s in streams)
        if mixture is not None:
            return mixture.num_samples, mixture.num_samples, total
        full = total // window
        return full, full + (1 if total % window and not self.drop_last else 0), total

    def _end(self, epoch: int, start: int, per_step: int) -> int:
        full, padded, _ = self._counts(epoch)
        if self.drop_last:
            return start + max(full - start, 0) // per_step * per_step
        return padded

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """Sample and token counts of an epoch from its start, with the drop-last tail reported."""
        epoch = self.epoch if epoch is None else epoch
        world, _ = self._world()
        per_step = (self.batch_size or 1) * world
        full, _, total = self._counts(epoch)
        n = self._end(epoch, 0, per_step)
        covered = min(n * (self.seq_len + 1), total)
        return EpochPlan(
            epoch, n, per_step, -(-n // per_step), total, max(full - n, 0), total - covered
        )

    # -- iteration -----------------------------------------------------------------------------

    def _layout(self) -> list[int]:
        world, rank = self._world()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return [world, rank, workers, worker, self.batch_size or 1]

    def _start(self, layout: list[int]) -> tuple[int, int, int]:
        """(global start sample, this consumer's first step, sample reported before any yield)."""
        resume = self._resume if self._resume and self._resume["epoch"] == self.epoch else None
        worker = layout[3]
        if resume is None:
            return 0, worker, 0
        consumer = resume.get("consumer")
        if consumer is not None and consumer["layout"] == layout:
            return consumer["start"], consumer["next_step"], resume["sample"]
        if consumer is not None and not resume.get("exact", False):
            raise LoaderError(
                f"state of consumer {consumer['layout']} (world, rank, workers, worker, batch) "
                f"cannot resume consumer {layout}: combine the workers' states first with "
                "TokenDataset.global_state(loader.state_dict())"
            )
        return resume["sample"], worker, resume["sample"]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        layout = self._layout()
        world, rank, workers, _, batch = layout
        epoch, per_step = self.epoch, batch * world
        start, step, sample = self._start(layout)
        end = self._end(epoch, start, per_step)
        self._progress = self._consumer_state(layout, start, step, sample)
        while (a := start + step * per_step + rank * batch) < end:
            b = min(a + batch, end)
            item = self.samples(a, b, epoch)
            if self.batch_size is None:
                item = {k: v[0] for k, v in item.items()}
            self._progress = self._consumer_state(
                layout, start, step + workers, min(start + (step + 1) * per_step, end)
            )
            yield item
            step += workers

    def _consumer_state(self, layout: list[int], start: int, next_step: int, sample: int) -> dict:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "sample": sample,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "exact": layout[2] == 1,
            "consumer": {"layout": layout, "start": start, "next_step": next_step},
        }

    def _staging(self, size: int) -> np.ndarray:
        """A per-process scratch buffer for windows (outputs are copied out of it)."""
        if self._scratch is None or len(self._scratch) < size:
            self._scratch = np.empty(size, dtype=np.int64)
        return self._scratch[:size]

    def samples(self, a: int, b: int, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """Global samples a .. b-1 of an epoch (default: the current one) as one batch."""
        epoch = self.epoch if epoch is None else epoch
        streams, mixture = self._sources(epoch)
        window, n = self.seq_len + 1, b - a
        tokens = self._staging(n * window).reshape(n, window)
        wants_bounds = self.position_ids or self.document_ids
        starts = np.zeros((n, window), dtype=bool) if wants_bounds else None
        valid, source = window, None
        if mixture is None:
            got = streams[0].read(
                a * window, tokens.reshape(-1), None if starts is None else starts.reshape(-1)
            )
            if got < n * window:  # the padded partial window (drop_last=False)
                tokens.reshape(-1)[got:] = self.pad_id
                valid = got - (n - 1) * window
        else:
            sources, local = mixture.locate(a, b)
            for s in np.unique(sources):
                rows = np.flatnonzero(sources == s)
                part = np.empty((len(rows), window), dtype=np.int64)
                bounds = None if starts is None else np.zeros((len(rows), window), dtype=bool)
                streams[s].read(
                    int(local[rows[0]]) * window,
                    part.reshape(-1),
                    None if bounds is None else bounds.reshape(-1),
                )
                tokens[rows] = part
                if starts is not None:
                    starts[rows] = bounds
            source = torch.from_numpy(sources.astype(np.int64))
        item = {
            "input_ids": np.ascontiguousarray(tokens[:, :-1]),
            "labels": np.ascontiguousarray(tokens[:, 1:]),
        }
        if valid < window:
            item["labels"][-1, max(valid - 1, 0) :] = IGNORE_INDEX
        if starts is not None:
            seg = starts[:, :-1]
            seg[:, 0] = True
            first = np.flatnonzero(seg)  # flat index of every segment's first token
            lengths = np.diff(np.append(first, seg.size))
            if self.position_ids:
                flat = np.arange(seg.size)
                flat -= np.repeat(first, lengths)
                item["position_ids"] = flat.reshape(seg.shape)
            if self.document_ids:
                row_first = np.searchsorted(first, first // self.seq_len * self.seq_len)
                flat = np.repeat(np.arange(len(first)) - row_first, lengths)
                item["document_ids"] = flat.reshape(seg.shape)
        item = {k: torch.from_numpy(v) for k, v in item.items()}
        if self.return_index:
            item["index"] = torch.arange(a, b)
            if mixture is not None:
                item["source"] = source
        if self.pin_memory and get_worker_info() is None and torch.cuda.is_available():
            item = {k: v.pin_memory() for k, v in item.items()}
        return item

    # -- resume --------------------------------------------------------------------------------

    def state_dict(self, steps: int | None = None) -> dict[str, Any]:
        """The resume point. In a consumer (a DataLoader worker, or this process when it iterated
        itself) it is that consumer's exact position. With `steps` (batches this rank took since
        the iteration began) it is the global position, right for any DataLoader."""
        if steps is None and self._progress is not None:
            return dict(self._progress)
        base = self._resume["sample"] if self._resume and self._resume["epoch"] == self.epoch else 0
        world, _ = self._world()
        per_step = (self.batch_size or 1) * world
        sample = min(base + (steps or 0) * per_step, self._end(self.epoch, base, per_step))
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "sample": sample,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "exact": True,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a state of `state_dict` or `global_state` (also with another world size
        or worker count when the state is global)."""
        for key in ("seed", "seq_len"):
            if state.get(key) != getattr(self, key):
                raise LoaderError(
                    f"resume state has {key}={state.get(key)}, dataset has {getattr(self, key)}"
                )
        self.epoch = state["epoch"]
        self._resume = dict(state)
        self._progress = None

    @staticmethod
    def global_state(loader_states: Any) -> dict[str, Any]:
        """One global resume point from StatefulDataLoader state(s) (one per rank, or one) or
        from consumer states: the furthest worker of a rank marks the rank's prefix; across ranks
        the smallest prefix is taken (ranks move in lockstep, so they agree)."""
        if isinstance(loader_states, dict):
            loader_states = [loader_states]
        per_rank = [max(_consumer_states(s), key=lambda c: c["sample"]) for s in loader_states]
        first = min(per_rank, key=lambda c: c["sample"])
        if len({(c["epoch"], c["seed"], c["seq_len"]) for c in per_rank}) > 1:
            raise LoaderError("ranks' states disagree on epoch, seed or seq_len")
        return {
            "version": STATE_VERSION,
            "epoch": first["epoch"],
            "sample": first["sample"],
            "seed": first["seed"],
            "seq_len": first["seq_len"],
            "exact": True,
        }

    def dataloader(
        self,
        num_workers: int = 0,
        *,
        stateful: bool = False,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
        **kwargs: Any,
    ) -> DataLoader:
        """A DataLoader (or torchdata StatefulDataLoader) set up the way this dataset expects."""
        if stateful:
            from torchdata.stateful_dataloader import StatefulDataLoader as loader_class
        else:
            loader_class = DataLoader
        if pin_memory is None:
            pin_memory = self.pin_memory and torch.cuda.is_available()
        if num_workers and prefetch_factor is None:
            prefetch_factor = 4
        return loader_class(
            self,
            batch_size=None if self.batch_size else kwargs.pop("batch_size", 1),
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if num_workers else None,
            **kwargs,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "urls": self.urls,
            "seq_len": self.seq_len,
            "eos_id": self.eos_id,
            "tokenizer": self.tokenizer,
            **asdict(self.plan()),
        }


def _consumer_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The TokenDataset states inside one StatefulDataLoader state (or the state itself)."""
    if "sample" in state:
        return [state]
    if "_snapshot" in state:
        workers = state["_snapshot"]["_worker_snapshots"].values()
        return [w["dataset_state"] for w in workers if w.get("dataset_state")]
    if state.get("dataset_state"):
        return [state["dataset_state"]]
    raise LoaderError(f"no TokenDataset state in {sorted(state)}")
