"""Batch-level pair merging: pre-token boundaries of a tokenized batch and the incremental merge loop.

docs/algorithms.md section 3 ("Dynamic batch-level merging"). A batch is base-tokenized once
(`BaseBatch`); then the most frequent valid adjacent pair over the whole batch is merged, up to
`max_merges` times, by `merge_batch_ids`.

Data structures of `merge_batch_ids` (the standard fast-BPE layout, O(N log N) for N base tokens):
- `ids`, `nxt`, `prv`: Python lists indexed by base position. A merged token lives at the position
  of its first base token ("head"); the positions it swallowed get id -1. `nxt`/`prv` link the heads
  of one mergeable run (a maximal stretch of tokens inside one pre-token), -1 at the run's ends, so
  every adjacent pair the structure can see is valid by construction.
- `occurrences[pair]`: head positions where the pair was seen, ascending. Entries that stop matching
  (a neighbour merged) are never valid again, so they are skipped lazily behind `first[pair]`.
- `counts[pair]`: exact number of current (overlapping) occurrences.
- a heap of `(-count, first head position, pair)`. Counts of existing pairs only fall and their first
  position only moves right; new pairs are pushed when created. A popped entry that no longer matches
  is pushed back with its current key, so the first entry that matches is the true maximum.
The first head position is the tie-break: it is where a left-to-right scan of the batch first sees the
pair, which is the order a recount-per-merge implementation uses.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_SHIFT = 32
_LOW = (1 << _SHIFT) - 1


@dataclass
class BaseBatch:
    """A batch of documents after base tokenization, with the boundaries merges must respect."""

    ids: np.ndarray  # uint32, base ids of all documents concatenated
    offsets: np.ndarray  # int64, len(docs) + 1
    byte_lengths: np.ndarray  # int64, bytes of each base token (same length as ids)
    boundaries: list[np.ndarray]  # per document: byte offsets where its pre-tokens start
    mergeable: np.ndarray  # bool per token: False for special and empty tokens

    _joins: np.ndarray | None = field(default=None, init=False, repr=False)

    def joins(self) -> np.ndarray:
        """joins[p]: base tokens p-1 and p lie in one pre-token (so everything between may merge).

        A pair's bytes stay inside one pre-token iff no pre-token starts after its first byte and at
        or before its last byte; along a document that relation is transitive, so a merged token
        never spans two pre-tokens however merges are nested.
        """
        if self._joins is None:
            n = len(self.ids)
            ends = np.cumsum(self.byte_lengths)
            starts = ends - self.byte_lengths
            doc_base = np.concatenate([[0], ends])[self.offsets[:-1]]
            marks = np.zeros(int(ends[-1]) + 1 if n else 1, dtype=np.int32)
            for boundaries, base in zip(self.boundaries, doc_base, strict=True):
                marks[boundaries + base] = 1
            segment = np.cumsum(marks)
            joins = np.zeros(n, dtype=bool)
            joins[1:] = segment[starts[:-1]] == segment[ends[1:] - 1]
            joins[1:] &= self.mergeable[:-1] & self.mergeable[1:]
            joins[self.offsets[:-1][self.offsets[:-1] < n]] = False
            self._joins = joins
        return self._joins

    def word_length(self) -> int:
        """Lword: the length at which no valid pair is left (the number of pre-tokens for a base
        tokenizer whose tokens never span two pre-tokens, such as byte-level BPE)."""
        return int(len(self.ids) - self.joins().sum())

    def doc_ids(self) -> list[np.ndarray]:
        return [self.ids[s:e] for s, e in zip(self.offsets[:-1], self.offsets[1:], strict=True)]


@dataclass
class MergeResult:
    """Merged ids of one batch plus its batch-local vocabulary and length statistics."""

    flat: np.ndarray  # uint32 merged ids, documents concatenated
    offsets: np.ndarray  # int64, len(docs) + 1
    vocab: dict[int, tuple[int, ...]]  # new id -> base ids, in merge order
    merges: list[tuple[int, int]]  # the pair merged at each step (may contain earlier new ids)
    replaced: list[int]  # occurrences replaced at each step
    l0: int  # base length
    lm: int  # merged length
    lword: int  # word (pre-token) level length
    ids: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [
            self.flat[s:e] for s, e in zip(self.offsets[:-1], self.offsets[1:], strict=True)
        ]

    @property
    def relative_reduction(self) -> float:
        """100 (L0 - Lm) / (L0 - Lword): 100 means word level."""
        return 100.0 * (self.l0 - self.lm) / (self.l0 - self.lword) if self.l0 > self.lword else 0.0

    @property
    def absolute_reduction(self) -> float:
        """100 (L0 - Lm) / L0."""
        return 100.0 * (self.l0 - self.lm) / self.l0 if self.l0 else 0.0


def merge_batch_ids(
    batch: BaseBatch,
    first_new_id: int,
    max_merges: int | None,
    target_length: int | None = None,
) -> MergeResult:
    """Merge the most frequent valid pair up to `max_merges` times (None: until none is left), or
    until the batch is at most `target_length` tokens long.

    Hot loop (every engine batch of the `dynamic_merge` plugin runs it): one function on purpose, so
    that the linked lists, counts and heap stay local variables and the helpers close over them
    (see the module docstring for the data structures).
    """
    n = len(batch.ids)
    joins = batch.joins()
    lword = int(n - joins.sum())
    ids = _int_array(batch.ids)
    nxt_arr = np.arange(1, n + 1, dtype=np.int64)
    nxt_arr[:-1][~joins[1:]] = -1
    if n:
        nxt_arr[-1] = -1
    prv_arr = np.arange(-1, n - 1, dtype=np.int64)
    prv_arr[~joins] = -1
    nxt, prv = _int_array(nxt_arr), _int_array(prv_arr)

    # Initial pairs, grouped: pair k occurs at grouped_heads[bounds[k]:bounds[k + 1]] (unordered).
    heads = np.flatnonzero(nxt_arr >= 0)
    keys = (batch.ids[heads].astype(np.int64) << _SHIFT) | batch.ids[heads + 1].astype(np.int64)
    order = np.argsort(keys)
    unique, starts, counts_arr = np.unique(keys[order], return_index=True, return_counts=True)
    grouped = heads[order]
    first_heads = np.minimum.reduceat(grouped, starts) if len(starts) else starts
    grouped_heads = _int_array(grouped)
    bounds = _int_array(np.append(starts, len(order)))
    initial_count = _int_array(counts_arr)
    group = dict(zip(unique.tolist(), range(len(unique)), strict=True))
    counts: dict[int, int] = {}  # pairs whose count changed since the start (else initial_count)
    occurrences: dict[int, list[int]] = {}  # ascending; filled on first use or at creation
    first: dict[int, int] = {}
    # Candidates: the initial pairs as one list sorted by (-count, first head), read with a cursor,
    # plus a heap for pairs pushed later; both hold keys that may be stale (see module docstring).
    rank = np.lexsort((first_heads, -counts_arr))
    cold_count = _int_array(counts_arr[rank])
    cold_head = _int_array(first_heads[rank])
    cold_key = _int_array(unique[rank])
    cold = 0
    heap: list[tuple[int, int, int]] = []

    def count_of(key: int) -> int:
        c = counts.get(key)
        return initial_count[group[key]] if c is None else c

    def occurrences_of(key: int) -> list[int]:
        positions = occurrences.get(key)
        if positions is None:
            k = group[key]
            positions = occurrences[key] = sorted(grouped_heads[bounds[k] : bounds[k + 1]])
        return positions

    def first_head(key: int) -> int:
        """Position of the first current occurrence of `key` (it has at least one)."""
        a, b = key >> _SHIFT, key & _LOW
        positions = occurrences_of(key)
        p = first.get(key, 0)
        while True:
            h = positions[p]
            j = nxt[h]
            if ids[h] == a and j >= 0 and ids[j] == b:
                first[key] = p
                return h
            p += 1

    vocab: dict[int, tuple[int, ...]] = {}
    merges: list[tuple[int, int]] = []
    replaced_counts: list[int] = []
    length = n
    new_id = first_new_id
    limit = float("inf") if max_merges is None else max_merges
    floor = -1 if target_length is None else target_length
    while len(merges) < limit and length > floor:
        if cold < len(cold_key) and (
            not heap or (-cold_count[cold], cold_head[cold]) < (heap[0][0], heap[0][1])
        ):
            neg, pos, key = -cold_count[cold], cold_head[cold], cold_key[cold]
            cold += 1
        elif heap:
            neg, pos, key = heapq.heappop(heap)
        else:
            break
        c = count_of(key)
        if c <= 0:
            continue
        h0 = first_head(key)
        if c != -neg or h0 != pos:
            heapq.heappush(heap, (-c, h0, key))
            continue
        a, b = key >> _SHIFT, key & _LOW
        x = new_id
        new_id += 1
        created: set[int] = set()
        replaced = 0
        for h in occurrences[key][first[key] :]:
            j = nxt[h]
            if ids[h] != a or j < 0 or ids[j] != b:
                continue
            left, right = prv[h], nxt[j]
            if left >= 0:
                li = ids[left]
                lk = (li << _SHIFT) | a
                seen = counts.get(lk)
                counts[lk] = (initial_count[group[lk]] if seen is None else seen) - 1
                nk = (li << _SHIFT) | x
                if nk in created:
                    counts[nk] += 1
                    occurrences[nk].append(left)
                else:
                    created.add(nk)
                    counts[nk] = 1
                    occurrences[nk] = [left]
            if right >= 0:
                ri = ids[right]
                rk = (b << _SHIFT) | ri
                seen = counts.get(rk)
                counts[rk] = (initial_count[group[rk]] if seen is None else seen) - 1
                nk = (x << _SHIFT) | ri
                if nk in created:
                    counts[nk] += 1
                    occurrences[nk].append(h)
                else:
                    created.add(nk)
                    counts[nk] = 1
                    occurrences[nk] = [h]
                prv[right] = h
            ids[h] = x
            ids[j] = -1
            nxt[h] = right
            replaced += 1
        counts[key] = 0
        del occurrences[key]
        first.pop(key, None)
        for nk in created:
            if counts[nk] > 0:
                heapq.heappush(heap, (-counts[nk], first_head(nk), nk))
        vocab[x] = vocab.get(a, (a,)) + vocab.get(b, (b,))
        merges.append((a, b))
        replaced_counts.append(replaced)
        length -= replaced

    merged = np.frombuffer(ids, dtype=np.int64)
    alive = merged >= 0
    offsets = np.concatenate([[0], np.cumsum(alive)])[batch.offsets].astype(np.int64)
    return MergeResult(
        flat=merged[alive].astype(np.uint32),
        offsets=offsets,
        vocab=vocab,
        merges=merges,
        replaced=replaced_counts,
        l0=n,
        lm=length,
        lword=lword,
    )


def _int_array(values: np.ndarray) -> array:
    """An int64 array.array copy of a numpy array: list-speed item access without a list of ints."""
    out = array("q")
    out.frombytes(np.ascontiguousarray(values, dtype=np.int64).tobytes())
    return out


def expand(ids: Sequence[int] | np.ndarray, vocab: dict[int, tuple[int, ...]]) -> list[int]:
    """Base ids of a merged sequence (ids not in `vocab` are base ids)."""
    out: list[int] = []
    for i in ids:
        i = int(i)
        out.extend(vocab.get(i, (i,)))
    return out
