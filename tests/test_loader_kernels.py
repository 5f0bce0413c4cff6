"""Loader layout shortcuts against their plain definitions: `input_starts` (a counting sort by row
that falls back to a sort) against numpy's sort, `Schedule.locate` (64 mixture blocks located
at once and kept) against a fresh schedule per call, `best_fit` (a bitset of free rooms, a
counting sort of piece sizes, a quicksort of the bin keys) against a plain-Python best-fit
decreasing, and its two sorts against numpy's stable sort."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.loader.mixing import Schedule
from pipeline.loader.plankernels import best_fit, input_starts, longest_first, stable_argsort


def sorted_starts(seg: np.ndarray, seq_len: int, total: int) -> np.ndarray:
    flat = [row * seq_len + col for row, col in seg[:, :2] if col < seq_len]
    return np.array([*sorted(flat), total], dtype=np.int64)


def test_input_starts_are_the_sorted_starts_whatever_the_segment_order():
    rng = np.random.default_rng(0)
    for trial in range(400):
        n, seq_len = int(rng.integers(0, 60)), int(rng.integers(1, 30))
        seg = np.zeros((n, 5), dtype=np.int64)
        seg[:, 0] = rng.integers(0, 12, n)
        seg[:, 1] = rng.integers(0, seq_len + 1, n)  # seq_len: a label-only segment
        if trial % 2:  # as the readers record them: each row's segments in column order
            seg = seg[np.lexsort((seg[:, 1], seg[:, 0]))]
            blocks = np.split(seg, np.flatnonzero(np.diff(seg[:, 0])) + 1) if n else []
            rng.shuffle(blocks)  # rows in any order
            seg = np.concatenate(blocks) if blocks else seg
        got = input_starts(seg, seq_len, 10_000)
        assert got.tolist() == sorted_starts(seg, seq_len, 10_000).tolist()


def test_locate_with_kept_blocks_is_locate_from_scratch():
    rates = [116294917039837451437509269, 47281316435788287027727442, 3]
    kept = Schedule(rates, block=64, seed=3, epoch=1)
    rng = np.random.default_rng(1)
    spans = [(a, a + int(rng.integers(1, 700))) for a in rng.integers(0, 60_000, 200).tolist()]
    spans += [(4090, 4100), (4096 * 3 - 1, 4096 * 3 + 300), (0, 1)]  # across kept spans
    for a, b in spans:
        sources, local = kept.locate(a, b)
        fresh = Schedule(rates, block=64, seed=3, epoch=1).locate(a, b)
        assert sources.tolist() == fresh[0].tolist() and local.tolist() == fresh[1].tolist()
        sources[:] = -1  # a caller's copy: changing it changes nothing kept
        local[:] = -1
        again = kept.locate(a, b)
        assert again[0].tolist() == fresh[0].tolist() and again[1].tolist() == fresh[1].tolist()


def plain_best_fit(lengths: list[int], window: int, buffer: int, keys: list[int]) -> tuple:
    """Best-fit decreasing as docs/loader.md states it, in plain Python: per buffer of documents,
    full windows first (a bin each), then the remainders largest first (ties: the earlier
    document) into the open bin with the least room that holds it (ties: the bin that last
    reached that room), else a new bin; the buffer's bins ordered by their keys (stable)."""
    bins, pieces, placed, room, nbins = [0], [], [], {}, 0
    for b0 in range(0, len(lengths), buffer):
        first, sizes, at_room = nbins, [], {}  # at_room: free room -> its open bins, last on top
        for d in range(b0, min(b0 + buffer, len(lengths))):
            whole, rest = divmod(lengths[d], window)
            for k in range(whole if rest else whole - 1):
                placed.append((nbins, d, k * window, window))
                nbins += 1
            sizes.append((d, rest or window))
        for d, s in sorted(sizes, key=lambda x: -x[1]):
            fits = [r for r in at_room if r >= s and at_room[r]]
            if fits:
                b = at_room[min(fits)].pop()
            else:
                b, room[nbins] = nbins, window
                nbins += 1
            placed.append((b, d, lengths[d] - s, s))
            room[b] -= s
            if room[b] > 0:
                at_room.setdefault(room[b], []).append(b)
        order = sorted(range(first, nbins), key=lambda b: keys[b])
        for b in order:
            pieces += [p[1:] for p in placed if p[0] == b]
            bins.append(len(pieces))
        placed = []
    return bins, pieces


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 60), max_size=80),
    st.integers(2, 25),
    st.integers(1, 12),
    st.integers(0, 2**31),
)
def test_best_fit_is_plain_best_fit_decreasing(lengths, window, buffer, seed):
    rng = np.random.default_rng(seed)
    n_keys = len(lengths) + 1 + sum(n // window for n in lengths)
    keys = rng.integers(0, 4 if seed % 2 else 1 << 62, n_keys)  # (few distinct keys: ties)
    got_bins, got_pieces = best_fit(np.array(lengths, dtype=np.int64), window, buffer, keys)
    bins, pieces = plain_best_fit(lengths, window, buffer, keys.tolist())
    assert got_bins.tolist() == bins
    assert [tuple(p) for p in got_pieces.tolist()] == pieces


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=300), st.sampled_from([3, 40, 1 << 62]))
def test_the_layout_sorts_are_numpys_stable_sort(values, spread):
    sizes = np.array(values, dtype=np.int64)
    assert longest_first(sizes, 40).tolist() == np.argsort(-sizes, kind="stable").tolist()
    keys = (np.array(values, dtype=np.uint64) * np.uint64(spread // 40 + 1)) % np.uint64(spread)
    assert stable_argsort(keys).tolist() == np.argsort(keys, kind="stable").tolist()


def test_stable_argsort_on_keys_that_crowd_or_span_everything():
    """The bucketed sort equals numpy's stable sort for the keys that make it fall back (all in
    a few buckets, descending runs) and for the extremes of uint64 and int64."""
    rng = np.random.default_rng(5)
    top = np.iinfo(np.uint64).max
    cases = [
        np.concatenate([rng.integers(0, 10, 500), rng.integers(1 << 60, 1 << 61, 500)]),
        np.sort(rng.integers(0, 1 << 62, 2000))[::-1].copy(),
        np.array([top, 0, top, 1, top - 1], dtype=np.uint64),
        rng.integers(0, top, 3000, dtype=np.uint64, endpoint=True),
        rng.integers(-5, 5, 300),
        np.zeros(100, dtype=np.int64),
        np.array([7]),
        np.array([], dtype=np.int64),
    ]
    for keys in cases:
        assert stable_argsort(keys).tolist() == np.argsort(keys, kind="stable").tolist()


def test_the_closed_form_counts_with_corrections_are_the_merge_of_ideal_times():
    """Schedule's counts at block boundaries, batched a span at a time, equal a plain merge of
    the sources' ideal times (j + 1/2) / r_s (ties: the lower source), rates with corrections
    included."""
    from fractions import Fraction

    for rates in (
        [3, 1],
        [1, 1, 1],
        [5, 0, 2],
        [116294917039837451437509269, 47281316435788287027727442, 3],
    ):
        schedule = Schedule(rates, block=4, seed=0, epoch=0)
        times = sorted(
            (Fraction(2 * j + 1, 2 * r), s)
            for s, r in enumerate(rates)
            if r
            for j in range(400 * r // sum(rates) + 2)
        )[:400]
        counts, expected = [0] * len(rates), []
        for m in range(401):
            expected.append(list(counts))
            if m < 400:
                counts[times[m][1]] += 1
        ms = list(range(0, 401, 4))
        assert schedule._dues(ms) == [expected[m] for m in ms]
