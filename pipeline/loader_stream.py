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

import numpy as np

from pipeline.loader_shards import ShardInfo, ShardStore

GROUPS_KEPT = 2  # a read may straddle two groups


def epoch_rng(seed: int, epoch: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, *salt]))


@dataclass
class Group:
    """One shuffle group: its documents in stream order (after the permutation)."""

    buffers: list[np.ndarray]
    doc_buffer: np.ndarray
    doc_start: np.ndarray
    doc_len: np.ndarray
    ends: np.ndarray  # stream end (exclusive, relative to the group) of each document's EOS

    def __post_init__(self) -> None:  # plain lists: indexing them is far cheaper per document
        self.buffer_list = self.doc_buffer.tolist()
        self.start_list = self.doc_start.tolist()
        self.len_list = self.doc_len.tolist()
        self.end_list = self.ends.tolist()


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
        self.shuffle = shuffle
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
        self._eos_piece = np.full(1, eos_id, dtype=np.int64)  # cast into the output by the copy

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def _group(self, g: int) -> Group:
        found = self._cache.get(g)
        if found is not None:
            return found
        mapped = [self.store.tokens(s) for s in self.groups[g]]
        buffers: list[np.ndarray] = []
        doc_buffer, doc_start, doc_len = [], [], []
        for shard in mapped:
            doc_buffer.append(shard.doc_buffer + len(buffers))
            buffers.extend(shard.buffers)
            doc_start.append(shard.doc_start)
            doc_len.append(shard.doc_len)
        n_docs = sum(len(x) for x in doc_len)
        perm = (
            epoch_rng(self.seed, self.epoch, 1, g).permutation(n_docs)
            if self.shuffle
            else np.arange(n_docs)
        )
        lengths = np.concatenate(doc_len)[perm]
        group = Group(
            buffers,
            np.concatenate(doc_buffer)[perm],
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

        `doc_starts`, if given, gets True where a document's first token lands. The pieces
        (document slices, zero-copy views of the mapped shards, and EOS) are gathered first and
        copied by one np.concatenate: one C call instead of a numpy assignment per document.
        """
        pos, filled, want = start, 0, len(out)
        eos = self._eos_piece
        pieces: list[np.ndarray] = []
        add = pieces.append
        while filled < want and pos < self.total:
            g = bisect.bisect_right(self.bound_list, pos) - 1
            group, base = self._group(g), self.bound_list[g]
            buffers, doc_buffer, doc_start = group.buffers, group.buffer_list, group.start_list
            doc_len, ends = group.len_list, group.end_list
            rel = pos - base
            stop = rel + want - filled
            if stop > ends[-1]:  # this part ends with the group
                stop = ends[-1]
            # document d spans [ends[d] - doc_len[d] - 1, ends[d]): its text, then one EOS
            d = bisect.bisect_right(ends, rel)  # the document holding position rel
            last = bisect.bisect_left(ends, stop)  # the document holding position stop - 1
            for k in (d, last) if last > d else (d,):  # partial ends: clip to [rel, stop)
                length, end = doc_len[k], ends[k]
                first = end - length - 1
                lo = rel - first if rel > first else 0  # (no min/max calls: this is hot)
                hi = (stop if stop < end else end) - first
                text = hi if hi < length else length
                if text > lo:
                    at = doc_start[k]
                    add(buffers[doc_buffer[k]][at + lo : at + text])
                if hi > length:
                    add(eos)
                if k == d:  # whole documents between the two ends
                    for j in range(d + 1, last):
                        at = doc_start[j]
                        add(buffers[doc_buffer[j]][at : at + doc_len[j]])
                        add(eos)
            if doc_starts is not None:
                firsts = group.ends[d : last + 1] - group.doc_len[d : last + 1] - 1
                firsts = firsts[(firsts >= rel) & (firsts < stop)]
                doc_starts[filled + firsts - rel] = True
            filled += stop - rel
            pos = base + stop
        if pieces:
            np.concatenate(pieces, out=out[:filled], casting="unsafe")
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
