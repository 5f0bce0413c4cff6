"""The packed token stream of one epoch: a pure function of (shards, seed, epoch, seq_len).

Shards are permuted by (seed, epoch) and taken in groups of `group_shards`; the documents of a
group are permuted together (a bounded shuffle buffer: only one group's index is ever built).
Every document is followed by one EOS; the stream is cut into windows of seq_len + 1 tokens, and
window i covers stream positions [i * (seq_len + 1), (i + 1) * (seq_len + 1)). Any window can be
read without reading the ones before it: group token counts come from the ledger alone.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit

from pipeline.errors import LoaderError
from pipeline.loader.shards import ShardInfo, ShardStore

GROUPS_KEPT = 2  # a read may straddle two groups


def epoch_rng(seed: int, epoch: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, *salt]))


@dataclass
class Group:
    """One shuffle group: its documents in stream order (after the permutation)."""

    files: tuple[np.ndarray, ...]  # each shard's whole file as tokens (padded to group_shards)
    doc_file: np.ndarray  # which of `files` holds each document
    doc_start: np.ndarray  # the document's first token in its file array
    doc_len: np.ndarray
    ends: np.ndarray  # stream end (exclusive, relative to the group) of each document's EOS


@njit(cache=True, nogil=True)
def gather(out, filled, files, doc_file, doc_start, doc_len, ends, rel, stop, eos):  # noqa: ANN001, ANN201
    """Copy group stream positions [rel, stop) into out[filled:], converting to out's dtype;
    returns the new fill. Document d spans [ends[d] - doc_len[d] - 1, ends[d]): its tokens
    files[doc_file[d]][doc_start[d]:][:doc_len[d]], then one EOS."""
    d = np.searchsorted(ends, rel, side="right")  # the document holding position rel
    pos, o = rel, filled
    while pos < stop:
        length, end = doc_len[d], ends[d]
        first = end - length - 1
        lo = pos - first
        hi = (stop if stop < end else end) - first
        text = hi if hi < length else length
        if text > lo:
            tokens = files[doc_file[d]]
            dst, src = numba.uint64(o), numba.uint64(doc_start[d] + lo)
            for i in range(numba.uint64(text - lo)):  # unsigned: no wraparound, vectorized
                out[dst + i] = tokens[src + i]
            o += text - lo
        if hi > length:
            out[o] = eos
            o += 1
        pos = first + hi
        d += 1
    return o


@njit(cache=True, nogil=True)
def segment_ids(block, starts, position_row, document_row):  # noqa: ANN001, ANN201
    """From the document-start marks of [n, seq_len + 1] windows, write position ids (0 at the
    row start and at each document start, then counting) into block[position_row] and segment
    numbers within the row into block[document_row] (rows < 0: not wanted), first seq_len
    columns. Marks are sparse: each segment is then filled by a loop that vectorises."""
    n, window = starts.shape
    for i in range(n):
        a, segment = 0, 0
        for j in range(1, window):
            if j < window - 1 and not starts[i, j]:
                continue
            first, length = numba.uint64(a), numba.uint64(j - a)  # segment [a, j)
            if position_row >= 0:
                positions = block[position_row, i]
                for k in range(length):
                    positions[first + k] = k
            if document_row >= 0:
                documents = block[document_row, i]
                for k in range(length):
                    documents[first + k] = segment
            a, segment = j, segment + 1


def warm_kernels(out_dtype: type, token_dtype: np.dtype, group_shards: int, ids: bool) -> None:
    """Compile (or load from numba's disk cache) the kernels a dataset will call, in this
    process, so that DataLoader workers forked from it start with them (a cold first call
    costs ~0.5 s)."""
    files = np.zeros(1, dtype=token_dtype)
    files.flags.writeable = False  # as the mapped shards are
    one = np.ones(1, dtype=np.int64)
    out = np.zeros(2, dtype=out_dtype)
    gather(out, 0, (files,) * group_shards, np.zeros(1, np.int32), 0 * one, one, 2 * one, 0, 2, 0)
    if ids:
        segment_ids(np.zeros((2, 1, 2), dtype=out_dtype), np.zeros((1, 2), dtype=bool), 0, 1)


class PackedStream:
    """Reads any range of one epoch's packed stream of one output."""

    def __init__(
        self,
        store: ShardStore,
        shards: list[ShardInfo],
        *,
        eos_id: int,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        group_shards: int = 4,
    ):
        self.store, self.eos_id, self.seed, self.epoch = store, eos_id, seed, epoch
        self.shuffle, self.group_shards = shuffle, group_shards
        n = len(shards)
        order = epoch_rng(seed, epoch).permutation(n) if shuffle else np.arange(n)
        self.groups = [
            [shards[j] for j in order[i : i + group_shards]] for i in range(0, n, group_shards)
        ]
        sizes = [sum(s.stream_tokens for s in group) for group in self.groups]
        self.group_bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.bound_list = self.group_bounds.tolist()  # bisect on a list: no numpy call per read
        self.total = int(self.group_bounds[-1])
        self._cache: OrderedDict[int, Group] = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def _group(self, g: int) -> Group:
        found = self._cache.get(g)
        if found is not None:
            return found
        mapped = [self.store.tokens(s) for s in self.groups[g]]
        dtypes = {m.data.dtype for m in mapped}
        if len(dtypes) > 1:
            raise LoaderError(
                f"{self.store.url}: shards hold tokens of types {sorted(map(str, dtypes))}"
            )
        pad = np.zeros(0, dtype=mapped[0].data.dtype)  # the last group may have fewer shards
        pad.flags.writeable = False  # like the mapped files: one tuple type for numba
        files = tuple(m.data for m in mapped) + (pad,) * (self.group_shards - len(mapped))
        doc_file = [np.full(len(m.doc_len), i, dtype=np.int32) for i, m in enumerate(mapped)]
        doc_start = [m.doc_start for m in mapped]
        doc_len = [m.doc_len for m in mapped]
        n_docs = sum(len(x) for x in doc_len)
        perm = (
            epoch_rng(self.seed, self.epoch, 1, g).permutation(n_docs)
            if self.shuffle
            else np.arange(n_docs)
        )
        lengths = np.concatenate(doc_len)[perm]
        group = Group(
            files,
            np.concatenate(doc_file)[perm],
            np.concatenate(doc_start)[perm],
            lengths,
            np.cumsum(lengths + 1),
        )
        self._cache[g] = group
        while len(self._cache) > GROUPS_KEPT:
            self._cache.popitem(last=False)
        return group

    def read(self, start: int, out: np.ndarray, doc_starts: np.ndarray | None = None) -> int:
        """Copy stream[start : start + len(out)] into `out`; returns how many tokens existed.

        `doc_starts`, if given, gets True where a document's first token lands. One compiled
        `gather` call per group copies every document slice (from zero-copy views of the mapped
        shards) and EOS: no Python or numpy call per document.
        """
        pos, filled, want = start, 0, len(out)
        while filled < want and pos < self.total:
            g = bisect.bisect_right(self.bound_list, pos) - 1
            group, base = self._group(g), self.bound_list[g]
            rel = pos - base
            stop = min(rel + want - filled, int(group.ends[-1]))  # this part ends with the group
            done = gather(
                out,
                filled,
                group.files,
                group.doc_file,
                group.doc_start,
                group.doc_len,
                group.ends,
                rel,
                stop,
                self.eos_id,
            )
            if doc_starts is not None:
                d, last = np.searchsorted(group.ends, [rel, stop], side="right")
                firsts = group.ends[d : last + 1] - group.doc_len[d : last + 1] - 1
                firsts = firsts[(firsts >= rel) & (firsts < stop)]
                doc_starts[filled + firsts - rel] = True
            filled, pos = done, base + stop
        return filled


class Mixture:
    """Interleaves several sources' windows by weight, in blocks of `block` samples.

    Each block holds a fixed count of windows from each source (largest remainder of
    weight * block), in an order permuted by (seed, epoch, block). The mixed epoch ends when the
    first source runs out of windows, so no window is repeated.
    """

    def __init__(
        self, weights: list[float], windows: list[int], *, block: int, seed: int, epoch: int
    ):
        w = np.asarray(weights, dtype=np.float64)
        if len(w) != len(windows) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {weights} must be non-negative, one per source, not all 0")
        quota = w / w.sum() * block
        counts = np.floor(quota).astype(np.int64)
        for i in np.argsort(-(quota - counts), kind="stable")[: block - int(counts.sum())]:
            counts[i] += 1
        self.counts, self.block, self.seed, self.epoch = counts, block, seed, epoch
        used = counts > 0
        self.blocks = int(min(np.asarray(windows)[used] // counts[used]))
        self.num_samples = self.blocks * block

    def block_layout(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Source of each sample of block k, and that sample's window index in its source."""
        sources = epoch_rng(self.seed, self.epoch, 2, k).permutation(
            np.repeat(np.arange(len(self.counts)), self.counts)
        )
        local = np.empty(self.block, dtype=np.int64)
        for s, count in enumerate(self.counts):
            local[sources == s] = k * count + np.arange(count)
        return sources, local

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Source and source-window index of mixed samples a .. b-1."""
        parts_s, parts_l = [], []
        for k in range(a // self.block, (b - 1) // self.block + 1):
            sources, local = self.block_layout(k)
            lo, hi = max(a - k * self.block, 0), min(b - k * self.block, self.block)
            parts_s.append(sources[lo:hi])
            parts_l.append(local[lo:hi])
        return np.concatenate(parts_s), np.concatenate(parts_l)
