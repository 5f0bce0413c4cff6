"""One pass over one output's shards in one epoch, readable at any position: a pure function of
(shards, seed, epoch, pass).

Shards are permuted by (seed, epoch, pass) and taken in groups of `group_shards`; the documents of
a group are permuted together (a bounded shuffle buffer: only one group's index is ever built).
Pass 0 is the order earlier versions read (the same seeds); a repeated source's later passes are
shuffled anew. Each document's stream is `[BOS] + tokens + [EOS]` (pipeline/loader/kernels.py).

- `PackedStream` (packing="concat"): the documents' streams one after another; a reader asks for
  stream positions. Group token counts come from the ledger alone, so any position is located
  without reading the shards before it.
- `BestFitPass` (packing="best_fit"): each group's documents packed into windows by best-fit
  decreasing over buffers of consecutive documents (kernels.best_fit); a reader asks for windows
  (bins). Bin counts need every document's length: per-shard lengths come from the shards'
  offsets (ShardStore.lengths), once per process.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.kernels import SEG_FIELDS, gather_bins, gather_concat, mask_targets
from pipeline.loader.plankernels import best_fit
from pipeline.loader.shards import LOSS_MASK, ShardInfo, ShardStore, ShardTokens, id_matches

GROUPS_KEPT = 2  # a read may straddle two groups


def epoch_rng(seed: int, epoch: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, *salt]))


@dataclass
class Group:
    """One shuffle group: its documents in stream order (after the permutation)."""

    shards: list[ShardInfo]
    files: tuple[np.ndarray, ...]  # each shard's whole file as tokens (padded to group_shards)
    doc_file: np.ndarray  # which of `files` (and `shards`) holds each document
    doc_start: np.ndarray  # the document's first token in its file array
    doc_len: np.ndarray
    doc_row: np.ndarray  # the document's row in its shard
    ends: np.ndarray  # stream end (exclusive, relative to the group) of each document's stream
    skip: np.ndarray | None  # documents whose labels are masked (skip_documents)
    masks: tuple[np.ndarray, ...] | None = None  # each shard's file as uint8 (loss_mask)
    mask_start: np.ndarray | None = None  # the document's first loss_mask entry in its file


@dataclass
class StreamOptions:
    """How documents become windows (the same for every source of a dataset)."""

    window: int  # seq_len + 1
    lead: int = 0  # 1: a BOS before each document
    bos: int = 0
    eos: int = 0
    pad: int = 0
    buffer: int = 1024  # best_fit: documents packed together
    shuffle: bool = True
    group_shards: int = 4


class Segments:
    """The segments a fill placed (kernels.py): per kernel call, which source, pass and group it
    read, and its (row, column, length, document, offset) rows."""

    def __init__(self, skips: bool):
        self.parts: list[tuple[int, int, int, np.ndarray, np.ndarray | None]] = []
        self.skips = skips

    def add(self, source: int, repeat: int, g: int, group: Group | None, rows: np.ndarray) -> None:
        skipped = None
        if self.skips and group is not None and group.skip is not None:
            skipped = (rows[:, 3] >= 0) & group.skip[np.maximum(rows[:, 3], 0)]
        self.parts.append((source, repeat, g, rows, skipped))

    def table(self) -> tuple[np.ndarray, np.ndarray | None]:
        """All segments [n, 5], and which are of skipped documents (None: no skips)."""
        if not self.parts:
            return np.zeros((0, SEG_FIELDS), dtype=np.int64), None
        table = np.concatenate([p[3] for p in self.parts])
        if not self.skips:
            return table, None
        skipped = [p[4] if p[4] is not None else np.zeros(len(p[3]), bool) for p in self.parts]
        return table, np.concatenate(skipped)


class Pass:
    """Shard order, shuffle groups and document order of one pass (see the module docstring)."""

    def __init__(
        self,
        store: ShardStore,
        shards: list[ShardInfo],
        options: StreamOptions,
        *,
        seed: int,
        epoch: int,
        repeat: int = 0,
        skip: frozenset[str] | None = None,
        masked: bool | None = None,
    ):
        self.store, self.options, self.skip = store, options, skip
        self.seed, self.epoch, self.repeat = seed, epoch, repeat
        self.masked = masked  # shards with loss_mask (True), without (False), ignored (None)
        self.salt = () if repeat == 0 else (3, repeat)
        n, size = len(shards), options.group_shards
        order = self.rng().permutation(n) if options.shuffle else np.arange(n)
        self.groups = [[shards[j] for j in order[i : i + size]] for i in range(0, n, size)]
        sizes = [sum(s.stream(options.lead) for s in group) for group in self.groups]
        self.group_bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.bound_list = self.group_bounds.tolist()  # bisect on a list: no numpy call per read
        self.total = int(self.group_bounds[-1])
        self._cache: OrderedDict[int, Group] = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def rng(self, *salt: int) -> np.random.Generator:
        return epoch_rng(self.seed, self.epoch, *self.salt, *salt)

    def _perm(self, g: int, n_docs: int) -> np.ndarray:
        return self.rng(1, g).permutation(n_docs) if self.options.shuffle else np.arange(n_docs)

    def lengths(self, g: int) -> np.ndarray:
        """Stream tokens of each document of group g in stream order (shard lengths only)."""
        lengths = np.concatenate([self.store.lengths(s) for s in self.groups[g]]).astype(np.int64)
        return lengths[self._perm(g, len(lengths))] + 1 + self.options.lead

    def doc_units(self, g: int, unit: str) -> np.ndarray:
        """Weight units of each document of group g in stream order: its stream tokens, 1, or
        its text's UTF-8 bytes."""
        if unit == "token":
            return self.lengths(g).astype(np.float64)
        if unit == "document":
            return np.ones(sum(s.documents for s in self.groups[g]))
        units = np.concatenate([self.store.doc_bytes(s) for s in self.groups[g]])
        return units[self._perm(g, len(units))].astype(np.float64)

    def unit_bounds(self, unit: str) -> list[float]:
        """Cumulative weight units of the groups (from the ledger alone)."""
        per_shard = {
            "token": lambda s: s.stream(self.options.lead),
            "document": lambda s: s.documents,
            "byte": lambda s: s.bytes,
        }[unit]
        sums = [sum(per_shard(s) for s in group) for group in self.groups]
        return np.concatenate([[0], np.cumsum(sums, dtype=np.float64)]).tolist()

    def prefix_units(self, stop: int, unit: str) -> float:
        """Weight units in stream positions [0, stop) of the pass; a document cut at `stop`
        counts by the fraction of its stream tokens before it."""
        g = bisect.bisect_right(self.bound_list, stop) - 1
        bounds = self.unit_bounds(unit)
        if g >= len(self.groups):
            return bounds[-1]
        lengths = self.lengths(g)
        ends, rel = np.cumsum(lengths), stop - self.bound_list[g]
        k = int(np.searchsorted(ends, rel, side="right"))
        units = self.doc_units(g, unit)
        partial = units[k] * (rel - (ends[k] - lengths[k])) / lengths[k] if k < len(ends) else 0
        return bounds[g] + float(units[:k].sum()) + float(partial)

    def group(self, g: int) -> Group:
        found = self._cache.get(g)
        if found is not None:
            return found
        while len(self._cache) >= GROUPS_KEPT:  # before mapping: a cache_limit holds 2 groups
            self._cache.popitem(last=False)
        shards = self.groups[g]
        mapped = [self.store.tokens(s) for s in shards]
        dtypes = {m.data.dtype for m in mapped}
        if len(dtypes) > 1:
            raise LoaderError(
                f"{self.store.url}: shards hold tokens of types {sorted(map(str, dtypes))}"
            )
        pad = np.zeros(0, dtype=mapped[0].data.dtype)  # the last group may have fewer shards
        pad.flags.writeable = False  # like the mapped files: one tuple type for numba
        files = tuple(m.data for m in mapped) + (pad,) * (self.options.group_shards - len(mapped))
        doc_len = [m.doc_len for m in mapped]
        perm = self._perm(g, sum(len(x) for x in doc_len))
        lengths = np.concatenate(doc_len)[perm]
        skip = None
        if self.skip:
            skip = np.concatenate([self._skipped(s) for s in shards])[perm]
        masks = self._masks(shards, mapped)
        group = Group(
            shards,
            files,
            np.concatenate([np.full(len(x), i, dtype=np.int32) for i, x in enumerate(doc_len)])[
                perm
            ],
            np.concatenate([m.doc_start for m in mapped])[perm],
            lengths,
            np.concatenate([np.arange(len(x), dtype=np.int64) for x in doc_len])[perm],
            np.cumsum(lengths + 1 + self.options.lead),
            skip,
        )
        if masks is not None:
            group.masks = masks
            group.mask_start = np.concatenate([m.mask_start for m in mapped])[perm]
        self._cache[g] = group
        return group

    def _masks(
        self, shards: list[ShardInfo], mapped: list[ShardTokens]
    ) -> tuple[np.ndarray, ...] | None:
        """The loss masks of a group's shards (uint8 views of their files, padded to
        group_shards) when this output's shards have them; all or none must."""
        if self.masked is None:
            return None
        for shard, m in zip(shards, mapped, strict=True):
            if (m.mask is not None) != self.masked:
                raise LoaderError(
                    f"{self.store.url}: some shards have a {LOSS_MASK} column and some do not "
                    f"({shard.rel} {'lacks' if self.masked else 'has'} it)"
                )
        if not self.masked:
            return None
        pad = np.zeros(0, dtype=np.uint8)
        pad.flags.writeable = False
        return tuple(m.mask for m in mapped) + (pad,) * (self.options.group_shards - len(mapped))

    def _skipped(self, shard: ShardInfo) -> np.ndarray:
        return id_matches(self.store.doc_ids(shard), self.skip)


def masked_targets(labels: np.ndarray, seg: np.ndarray, group: Group, lead: int) -> None:
    """Labels -100 where the target's loss mask is 0 (kernels.mask_targets), for a group whose
    shards have loss masks, when the labels have a block of their own."""
    if group.masks is not None and labels.shape[1]:
        mask_targets(
            labels, seg, group.masks, group.doc_file, group.mask_start, group.doc_len, lead
        )


class PackedStream(Pass):
    """A pass packed by concatenation: reads any range of stream positions."""

    def read(
        self,
        start: int,
        stop: int,
        out: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        o: int,
        segments: Segments,
        source: int = 0,
    ) -> int:
        """Copy stream[start : stop] to flat position `o` of the windows out[rows] ([n, window]
        rows, consecutive in the stream; shifted into labels[rows] too unless labels has no
        columns); returns the new flat position. One compiled call per group: no Python or numpy
        call per document."""
        opts, pos = self.options, start
        stop = min(stop, self.total)
        while pos < stop:
            g = bisect.bisect_right(self.bound_list, pos) - 1
            group, base = self.group(g), self.bound_list[g]
            rel = pos - base
            end = min(stop - base, int(group.ends[-1]))  # this part ends with the group
            first, last = np.searchsorted(group.ends, [rel, end - 1], side="right")
            seg = np.empty(
                (last - first + 2 + (end - rel) // opts.window + 1, SEG_FIELDS), np.int64
            )
            o, nseg = gather_concat(
                out,
                labels,
                rows,
                o,
                group.files,
                group.doc_file,
                group.doc_start,
                group.doc_len,
                group.ends,
                rel,
                end,
                opts.lead,
                opts.bos,
                opts.eos,
                seg,
                0,
            )
            masked_targets(labels, seg[:nseg], group, opts.lead)
            segments.add(source, self.repeat, g, group, seg[:nseg])
            pos = base + end
        return o


class BestFitPass(Pass):
    """A pass packed by best fit: `nbins` windows, each readable at random."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._layouts: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bounds: list[int] | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_layouts"] = OrderedDict()
        return state

    def layout(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """(bin starts, pieces) of group g (kernels.best_fit), a few kept."""
        found = self._layouts.get(g)
        if found is None:
            lengths, window = self.lengths(g), self.options.window
            keys = self.rng(4, g).integers(
                0, 1 << 62, len(lengths) + 1 + int((lengths // window).sum())
            )
            found = best_fit(lengths, window, self.options.buffer, keys)
            self._layouts[g] = found
            while len(self._layouts) > GROUPS_KEPT:
                self._layouts.popitem(last=False)
        return found

    @property
    def bin_bounds(self) -> list[int]:
        """Cumulative bins per group ([groups + 1]); packs every group once."""
        if self._bounds is None:
            counts = [len(self.layout(g)[0]) - 1 for g in range(len(self.groups))]
            self._bounds = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
        return self._bounds

    @property
    def nbins(self) -> int:
        return self.bin_bounds[-1]

    def tokens_before(self, b: int) -> int:
        """Stream tokens (no padding) in bins [0, b) of the pass."""
        bounds = self.bin_bounds
        g = bisect.bisect_right(bounds, b) - 1
        if g >= len(self.groups):
            return self.total
        bins, pieces = self.layout(g)
        return self.bound_list[g] + int(pieces[: bins[b - bounds[g]], 2].sum())

    def bin_prefix_units(self, b: int, unit: str) -> float:
        """Weight units in bins [0, b) of the pass (a document counts by the fraction of its
        stream tokens in them)."""
        bounds, units_before = self.bin_bounds, self.unit_bounds(unit)
        g = bisect.bisect_right(bounds, b) - 1
        if g >= len(self.groups):
            return units_before[-1]
        bins, pieces = self.layout(g)
        placed = pieces[: bins[b - bounds[g]]]
        lengths = self.lengths(g)
        got = np.bincount(placed[:, 0], weights=placed[:, 2], minlength=len(lengths))
        return units_before[g] + float((self.doc_units(g, unit) * got / lengths).sum())

    def split_documents(self) -> int:
        """Documents of the pass longer than a window (the only ones cut)."""
        window = self.options.window
        return sum(int((self.lengths(g) > window).sum()) for g in range(len(self.groups)))

    def read_bins(
        self,
        b0: int,
        b1: int,
        out: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        segments: Segments,
        source: int,
    ) -> None:
        """Windows b0 .. b1-1 of the pass into out[rows] (one row each; labels as in read)."""
        opts, bounds = self.options, self.bin_bounds
        b = b0
        while b < b1:
            g = bisect.bisect_right(bounds, b) - 1
            group, (bins, pieces) = self.group(g), self.layout(g)
            lo, hi = b - bounds[g], min(b1, bounds[g + 1]) - bounds[g]
            seg = np.empty((int(bins[hi] - bins[lo]) + hi - lo, SEG_FIELDS), dtype=np.int64)
            nseg = gather_bins(
                out,
                labels,
                rows[b - b0 :],
                group.files,
                group.doc_file,
                group.doc_start,
                group.doc_len,
                bins,
                pieces,
                lo,
                hi,
                opts.lead,
                opts.bos,
                opts.eos,
                opts.pad,
                seg,
                0,
            )
            masked_targets(labels, seg[:nseg], group, opts.lead)
            segments.add(source, self.repeat, g, group, seg[:nseg])
            b += hi - lo
