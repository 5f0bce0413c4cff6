"""One output's windows in one epoch: its passes one after another (pipeline/loader/stream.py),
so a source asked for more windows than one pass holds repeats (each pass shuffled anew) and one
asked for fewer is subsampled (a prefix of a shuffled pass).

With packing="concat" the passes' streams are concatenated and window j is stream positions
[j * window, (j + 1) * window): the window that holds the end of pass 0 continues with pass 1, so
covering every token once takes ceil(tokens / window) windows. With packing="best_fit" window j is
a bin of pass p (bins of earlier passes counted first).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from fractions import Fraction

import numpy as np

from pipeline.loader.kernels import IGNORE
from pipeline.loader.shards import ShardInfo, ShardStore
from pipeline.loader.stream import BestFitPass, PackedStream, Pass, Segments, StreamOptions

PACKINGS = ("concat", "best_fit")
ACTIVE_PASSES = 2  # passes whose groups stay cached (a read may straddle two)


class SourceEpoch:
    """Windows of output number `index` in one epoch (see the module docstring)."""

    def __init__(
        self,
        index: int,
        store: ShardStore,
        shards: list[ShardInfo],
        options: StreamOptions,
        *,
        seed: int,
        epoch: int,
        packing: str = "concat",
        skip: frozenset[str] | None = None,
        masked: bool | None = None,
    ):
        self.index, self.store, self.shards, self.options = index, store, shards, options
        self.seed, self.epoch, self.packing, self.skip = seed, epoch, packing, skip
        self.masked = masked  # its shards have loss_mask (True), do not (False), ignored (None)
        self.total = sum(s.stream(options.lead) for s in shards)  # stream tokens of one pass
        self.documents = sum(s.documents for s in shards)
        self.bytes = sum(s.bytes for s in shards)
        self._passes: dict[int, Pass] = {}
        self._active: OrderedDict[int, None] = OrderedDict()
        self._starts = [0]  # best_fit: first window of passes 0, 1, ... (as far as known)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_passes={}, _active=OrderedDict())
        return state

    def pass_(self, p: int) -> Pass:
        found = self._passes.get(p)
        if found is None:
            kind = PackedStream if self.packing == "concat" else BestFitPass
            found = self._passes[p] = kind(
                self.store,
                self.shards,
                self.options,
                seed=self.seed,
                epoch=self.epoch,
                repeat=p,
                skip=self.skip,
                masked=self.masked,
            )
        self._active[p] = None
        self._active.move_to_end(p)
        while len(self._active) > ACTIVE_PASSES:  # drop cached groups (and their shards)
            old = self._passes[self._active.popitem(last=False)[0]]
            old._cache.clear()
        return found

    # -- counts ------------------------------------------------------------------------------

    @property
    def window(self) -> int:
        return self.options.window

    def full_windows(self) -> int:
        """Windows of one pass without repeating anything (concat: whole windows only)."""
        if self.packing == "concat":
            return self.total // self.window
        return self.pass_(0).nbins

    def covering_windows(self) -> int:
        """Windows that hold every token of pass 0 at least once."""
        if self.packing == "concat":
            return -(-self.total // self.window)
        return self.pass_(0).nbins

    def windows_per_pass(self) -> Fraction:
        """Windows one pass fills (fractional for concat): the density of weight units."""
        if self.packing == "concat":
            return Fraction(self.total, self.window)
        return Fraction(self.pass_(0).nbins)

    def units(self, unit: str) -> int:
        return {"token": self.total, "byte": self.bytes, "document": self.documents}[unit]

    def _locate(self, j: int) -> tuple[int, int]:
        """(pass, bin) of best_fit window j."""
        while j >= self._starts[-1]:
            self._starts.append(self._starts[-1] + self.pass_(len(self._starts) - 1).nbins)
        p = bisect.bisect_right(self._starts, j) - 1
        return p, j - self._starts[p]

    def tokens_used(self, n: int, limit: int | None = None) -> int:
        """Stream tokens (no padding) in windows [0, n)."""
        if self.packing == "concat":
            return n * self.window if limit is None else min(n * self.window, limit)
        if n == 0:
            return 0
        p, b = self._locate(n - 1)
        return p * self.total + self.pass_(p).tokens_before(b + 1)

    def units_used(self, n: int, unit: str, limit: int | None = None) -> float:
        """Weight units in windows [0, n): tokens (no padding), bytes or documents, a document
        cut by the end counted by the fraction of its stream tokens delivered."""
        if n == 0:
            return 0.0
        if self.packing == "concat":
            p, rest = divmod(self.tokens_used(n, limit), self.total)
            return p * self.units(unit) + self.pass_(p).prefix_units(rest, unit)
        p, b = self._locate(n - 1)
        return p * self.units(unit) + self.pass_(p).bin_prefix_units(b + 1, unit)

    def split_documents(self) -> int:
        """Documents of pass 0 that are cut: across a window boundary (concat), or longer
        than a window (best_fit)."""
        first = self.pass_(0)
        if isinstance(first, BestFitPass):
            return first.split_documents()
        split = 0
        for g in range(len(first.groups)):
            ends = first.bound_list[g] + np.cumsum(first.lengths(g))
            starts = ends - first.lengths(g)
            split += int(((ends - 1) // self.window > starts // self.window).sum())
        return split

    # -- reading -----------------------------------------------------------------------------

    def read(
        self,
        j0: int,
        j1: int,
        out: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        segments: Segments,
        limit: int | None = None,
    ) -> int:
        """Windows j0 .. j1-1 into out[rows] (and their labels, shifted, into labels[rows] unless
        it has no columns; IGNORE where padding is the target); with `limit` (concat),
        stream positions from `limit` on are padding. Returns the tokens placed before any
        padding after `limit` (best_fit: all)."""
        if self.packing == "concat":
            return self._read_concat(j0, j1, out, labels, rows, segments, limit)
        j = j0
        while j < j1:
            p, b = self._locate(j)
            first = self.pass_(p)
            n = min(j1 - j, first.nbins - b)
            first.read_bins(b, b + n, out, labels, rows[j - j0 :], segments, self.index)
            j += n
        return (j1 - j0) * self.window  # every window is whole (padding included)

    def _read_concat(
        self,
        j0: int,
        j1: int,
        out: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        segments: Segments,
        limit: int | None,
    ) -> int:
        window = self.window
        pos, stop = j0 * window, j1 * window
        if limit is not None:
            stop = min(stop, limit)
        o = 0
        while pos < stop:
            p = pos // self.total
            part = min(stop, (p + 1) * self.total)
            o = self.pass_(p).read(
                pos - p * self.total,
                part - p * self.total,
                out,
                labels,
                rows,
                o,
                segments,
                self.index,
            )
            pos = part
        placed, want = o, (j1 - j0) * window
        while o < want:  # padding after `limit` (labels IGNORE where it is the target)
            r, c = divmod(o, window)
            out[rows[r], c:] = self.options.pad
            if labels.shape[1]:  # (a target mask: False)
                labels[rows[r], max(c - 1, 0) :] = False if labels.dtype == np.bool_ else IGNORE
            segments.add(self.index, 0, -1, None, np.array([[rows[r], c, window - c, -1, 0]]))
            o += window - c
        return placed
