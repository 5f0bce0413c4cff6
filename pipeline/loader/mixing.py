"""Which source each sample of an epoch comes from, and how long the epoch is.

Shares. Weights are per token (default), per byte or per document (`weight_unit`): source s gets
a share of the samples proportional to w_s / (units of s per window), so the delivered units
follow the weights whatever the tokenizer (a window of concatenated tokens holds the same tokens
for every source; best_fit windows hold fewer, by their padding).

Order. The samples of all sources are merged in the order of their ideal times: the j-th sample
of source s is due at (j + 1/2) / r_s (r_s: its share as an exact integer rate; ties: the lower
source first). Among the first m samples source s then has its share within one sample, for every
m, and the count is a closed form (plus at most one correction per source), so any sample is
located without the ones before it. Blocks of `block` samples keep their counts and are permuted by
a hash of (seed, epoch, block, position): with integer weights whose shares times the block are
whole numbers every block holds exactly those counts, as before. Counts at a block boundary are
the closed form; within a block they are the closed form at the block's start plus what the
permuted block places before the sample, so an epoch's length (the fewest samples covering every
source, or the most within every source's windows) and plan() count what the loader reads.

Length. "first_exhausted" (the default, HF datasets' convention): the epoch ends before any source
would repeat a window (a single source: its whole windows, as before). "all_exhausted": it ends
once every source has given every token at least once (smaller sources cycle: later passes are
reshuffled). `budget_tokens`: exactly budget_tokens / seq_len samples, sources repeated or
subsampled to their shares.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.plankernels import mixed_blocks

STRATEGIES = ("first_exhausted", "all_exhausted")
UNITS = ("token", "byte", "document")
SPAN_BLOCKS = 64  # blocks a Schedule locates at once: a fill's locate is then mostly a slice


def integer_rates(shares: list[Fraction]) -> list[int]:
    """Exact integers proportional to non-negative rational shares."""
    if any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"weights {[float(s) for s in shares]} must be non-negative, not all 0")
    den = math.lcm(*(s.denominator for s in shares))
    rates = [int(s * den) for s in shares]
    g = math.gcd(*rates)
    return [r // g for r in rates]


def sample_rates(weights: list[float], windows: list[Fraction], units: list[int]) -> list[int]:
    """Integer sample rates: weight_s * windows_s / units_s (samples per weight unit)."""
    shares = []
    for w, n, u in zip(weights, windows, units, strict=True):
        if w < 0:
            raise ValueError(f"weights {weights} must be non-negative")
        shares.append(Fraction(w) * n / u if u and n else Fraction(0))
    return integer_rates(shares)


class Schedule:
    """Source and source-window index of every sample of an epoch (see the module docstring)."""

    def __init__(self, rates: list[int], *, block: int, seed: int, epoch: int):
        self.rates, self.block, self.seed, self.epoch = rates, block, seed, epoch
        self.total = sum(rates)
        self.key = int(np.random.SeedSequence([seed, epoch, 2]).generate_state(1)[0])
        self._counts: dict[int, list[int]] = {}
        self._span: tuple[int, int, np.ndarray, np.ndarray] | None = None  # (k0, k1, located)

    def counts(self, m: int) -> list[int]:
        """Samples of each source among the first m, as located (a block's permutation
        included)."""
        if len(self.rates) == 1:
            return [m]
        k, r = divmod(m, self.block)
        due = self._due(k * self.block)
        if r == 0:
            return due
        before = np.array([due, self._due((k + 1) * self.block)], np.int64)
        sources = mixed_blocks(self.key, k, before)[0][:r]
        placed = np.bincount(sources, minlength=len(self.rates)).tolist()
        return [c + n for c, n in zip(due, placed, strict=True)]

    def _due(self, m: int) -> list[int]:
        """Samples of each source due among the first m (in the order of their ideal times):
        the counts at a block boundary."""
        found = self._counts.get(m)
        if found is None:
            if len(self._counts) > 64:
                self._counts.clear()
            found = self._counts[m] = self._dues([m])[0]
        return found

    def _dues(self, ms: list[int]) -> list[list[int]]:
        """_due of each of `ms`: the closed form a source at a time (one list comprehension
        each), corrected where it does not sum to m."""
        a, total = self.rates, self.total
        # samples due strictly before m / total: j < (2 m a_s - total) / (2 total)
        columns = [
            [max(0, -((total - 2 * m * r) // (2 * total))) for m in ms] if r else [0] * len(ms)
            for r in a
        ]
        rows = [list(c) for c in zip(*columns, strict=True)]
        for m, c in zip(ms, rows, strict=True):
            if sum(c) != m:
                self._correct(c, m)
        return rows

    def _correct(self, c: list[int], m: int) -> None:
        """Bring the closed-form counts `c` to m samples in all, in the order of ideal times."""
        a = self.rates
        due = [i for i in range(len(a)) if a[i]]
        while sum(c) < m:  # add the next due: least (2 c_s + 1) / a_s, lower source on ties
            s = due[0]
            for i in due[1:]:
                if (2 * c[i] + 1) * a[s] < (2 * c[s] + 1) * a[i]:
                    s = i
            c[s] += 1
        while sum(c) > m:  # remove the last due: greatest (2 c_s - 1) / a_s, higher on ties
            s = -1
            for i in due:
                if c[i] and (s < 0 or (2 * c[i] - 1) * a[s] >= (2 * c[s] - 1) * a[i]):
                    s = i
            c[s] -= 1

    def locate(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Source and source-window index of samples a .. b-1. A block's order depends on that
        block alone: SPAN_BLOCKS blocks from the first one asked are located at once and kept."""
        if len(self.rates) == 1:
            return np.zeros(b - a, dtype=np.int64), np.arange(a, b, dtype=np.int64)
        k0, k1 = a // self.block, (b - 1) // self.block + 1
        span = self._span
        if span is None or k0 < span[0] or k1 > span[1]:  # blocks k0 .. k0 + SPAN_BLOCKS at once
            k1 = max(k1, k0 + SPAN_BLOCKS)
            ms = [k * self.block for k in range(k0, k1 + 1)]
            before = np.array(self._dues(ms), np.int64)
            self._span = span = (k0, k1, *mixed_blocks(self.key, k0, before))
        lo = a - span[0] * self.block  # (copies: a caller may keep or change them)
        return span[2][lo : lo + b - a].copy(), span[3][lo : lo + b - a].copy()

    def last_within(self, limits: list[int]) -> int:
        """The most samples with no source past its limit (sources of rate 0 aside)."""
        lo, hi = 0, sum(limits) + 1  # lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            fits = all(
                c <= n for c, n, r in zip(self.counts(mid), limits, self.rates, strict=True) if r
            )
            lo, hi = (mid, hi) if fits else (lo, mid)
        return lo

    def first_covering(self, needs: list[int]) -> int:
        """The fewest samples giving every source (of rate > 0) at least its need."""

        def covers(m: int) -> bool:
            return all(
                c >= n for c, n, r in zip(self.counts(m), needs, self.rates, strict=True) if r
            )

        hi = max(sum(needs), 1)
        while not covers(hi):
            hi *= 2
        lo = -1  # lo does not cover (or is -1), hi does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if covers(mid) else (mid, hi)
        return hi


def epoch_end(
    mode: str, length: int, padded: bool, start: int, per_step: int, drop_last: bool
) -> int:
    """Where an epoch of `length` samples (mode: first_exhausted, all_exhausted or budget)
    ends for a consumer layout of `per_step` samples a step that starts at `start`.

    first_exhausted: drop_last cuts to whole steps (the tail is reported by plan()), else a
    padded partial window may follow (`padded`). all_exhausted: drop_last extends to whole steps
    (the sequence goes on cycling, so nothing is dropped). budget: exactly `length`; with
    drop_last the remaining samples must make whole steps."""
    if mode == "first_exhausted":
        if drop_last:
            return start + max(length - start, 0) // per_step * per_step
        return length + padded
    if mode == "all_exhausted":
        if drop_last and length > start:
            return start + -(-(length - start) // per_step) * per_step
        return max(length, start)
    if drop_last and (length - start) % per_step:
        raise LoaderError(
            f"budget_tokens gives {length} samples; from sample {start} the {length - start} left "
            f"are not whole steps of {per_step} (batch_size x world_size): pass drop_last=False "
            f"(the last step is short) or a budget that is a multiple of seq_len x {per_step}"
        )
    return length
