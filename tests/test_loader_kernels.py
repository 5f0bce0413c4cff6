"""Loader layout shortcuts against their plain definitions: `input_starts` (a counting sort by row
that falls back to a sort) against numpy's sort, and `Schedule.locate` (64 mixture blocks located
at once and kept) against a fresh schedule per call."""

from __future__ import annotations

import numpy as np

from pipeline.loader.mixing import Schedule
from pipeline.loader.plankernels import input_starts


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
