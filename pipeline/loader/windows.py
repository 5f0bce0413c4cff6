"""One epoch of a dataset (`Epoch`: its sources, schedule and length) and how a block of its
windows is filled: tokens first, then the rows a batch asks for besides them (labels when they
differ from the shifted tokens, position and document ids) and the cu_seqlens starts, all from the
segments the reading kernels placed (pipeline/loader/kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.loader.kernels import label_rows, segment_ids
from pipeline.loader.mixing import Schedule, epoch_end
from pipeline.loader.source import SourceEpoch
from pipeline.loader.stream import Segments


@dataclass
class Epoch:
    """The global sample sequence of one epoch."""

    epoch: int
    sources: list[SourceEpoch]
    schedule: Schedule
    mode: str  # first_exhausted | all_exhausted | budget
    length: int  # samples (first_exhausted: whole windows; a padded one may follow)
    padded: bool  # a padded partial window follows `length` when drop_last=False
    limit: int | None  # stream position from which the only source's windows are padding

    def end(self, start: int, per_step: int, drop_last: bool) -> int:
        return epoch_end(self.mode, self.length, self.padded, start, per_step, drop_last)

    def samples_of(self, end: int) -> list[int]:
        """Windows of each source among samples [0, end)."""
        return self.schedule.counts(end)


@dataclass(frozen=True)
class Rows:
    """What a block holds: [tokens, labels?, position ids?, document ids?] and whether the
    cu_seqlens starts are wanted."""

    labels: bool = False
    position: bool = False
    document: bool = False
    seq_lens: bool = False
    mask_cross: bool = False

    @property
    def count(self) -> int:
        return 1 + self.labels + self.position + self.document


@dataclass
class Filled:
    """What a fill tells the batches besides the block: the valid tokens of its last window
    (padding after them, masked in labels when there is no labels row), the source of each
    sample (mixtures), and the cu_seqlens starts over the block's input positions (flat,
    sorted, the block's total appended)."""

    valid: int
    source: np.ndarray | None = None
    starts: np.ndarray | None = None


def read_windows(epoch: Epoch, a: int, b: int, tokens: np.ndarray, segments: Segments) -> Filled:
    """Samples a .. b-1 into tokens ([b - a, window])."""
    n, window = tokens.shape
    if len(epoch.sources) == 1:
        placed = epoch.sources[0].read(a, b, tokens, np.arange(n), segments, epoch.limit)
        return Filled(window if placed >= n * window else placed - (n - 1) * window)
    sources, local = epoch.schedule.locate(a, b)
    for s in np.unique(sources):
        rows = np.flatnonzero(sources == s)  # consecutive windows of source s
        j0 = int(local[rows[0]])
        epoch.sources[s].read(j0, j0 + len(rows), tokens, rows, segments)
    return Filled(window, sources)


def fill(epoch: Epoch, a: int, b: int, block: np.ndarray, rows: Rows, skips: bool) -> Filled:
    """Samples a .. b-1 into block ([rows.count, b - a, window])."""
    segments = Segments(skips)
    filled = read_windows(epoch, a, b, block[0], segments)
    if not (rows.labels or rows.position or rows.document or rows.seq_lens):
        return filled
    table, skipped = segments.table()
    if rows.labels:
        mask = (table[:, 3] < 0).astype(np.int8)  # padding
        if skipped is not None:
            mask[skipped] = 1
        if rows.mask_cross:
            mask[(mask == 0) & (table[:, 4] == 0)] = 2  # a document's first stream token
        label_rows(block[0], block[1], table, len(table), mask)
    if rows.position or rows.document:
        order = np.lexsort((table[:, 1], table[:, 0]))
        first = 1 + rows.labels
        segment_ids(
            block,
            table,
            order,
            first if rows.position else -1,
            first + rows.position if rows.document else -1,
        )
    if rows.seq_lens:
        seq_len = block.shape[2] - 1
        inputs = table[table[:, 1] < seq_len]  # a segment at the last column is a label only
        starts = np.sort(inputs[:, 0] * seq_len + inputs[:, 1])
        filled.starts = np.append(starts, (b - a) * seq_len)
    return filled
