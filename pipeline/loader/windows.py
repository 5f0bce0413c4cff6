"""One epoch of a dataset (`Epoch`: its sources, schedule and length) and how a block of its
windows is filled: tokens first, then the rows a batch asks for besides them (labels when they
differ from the shifted tokens, or a target mask, position and document ids) and the cu_seqlens
starts, all from the segments the reading kernels placed (pipeline/loader/kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.kernels import mask_labels
from pipeline.loader.mixing import Schedule, epoch_end, integer_rates, sample_rates
from pipeline.loader.plankernels import input_starts, segment_ids
from pipeline.loader.source import SourceEpoch
from pipeline.loader.stream import Segments

REFINE = 4  # rounds of share correction (non-token weights, best_fit)
SHARE_TOLERANCE = 1e-4


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


def build_epoch(ds: Any, epoch: int) -> Epoch:
    """The Epoch of a TokenDataset `ds` (its stores, shards, options and mixing settings)."""
    sources = [
        SourceEpoch(
            i,
            store,
            list(shards),
            ds.options,
            seed=ds._source_seed(i),
            epoch=epoch,
            packing=ds.packing,
            skip=ds.skip,
            masked=ds.masked[i],
        )
        for i, (store, shards) in enumerate(zip(ds.stores, ds.shards, strict=True))
    ]
    rates = [1]
    if len(sources) > 1:
        windows = [s.windows_per_pass() for s in sources]
        units = [s.units(ds.weight_unit) for s in sources]
        for source, url, w, n, u in zip(sources, ds.urls, ds.weights, windows, units, strict=True):
            if w > 0 and not (n and u):  # (its rate would be 0: the weight silently dropped)
                raise LoaderError(
                    f"mixture source {url} has no window of seq_len + 1 = {ds.seq_len + 1} "
                    f"tokens (its committed documents hold {source.total} stream tokens), so "
                    f"its weight {w} cannot be met: give it weight 0 or leave it out"
                )
        rates = sample_rates(ds.weights, windows, units)
    schedule = Schedule(rates, block=ds.mix_block, seed=ds.seed, epoch=epoch)
    mode, length = epoch_length(ds, schedule, sources)
    if len(sources) > 1 and (ds.weight_unit != "token" or ds.packing == "best_fit"):
        for _ in range(REFINE):  # shares by what the windows used really hold
            used = [
                s.units_used(n, ds.weight_unit)
                for s, n in zip(sources, schedule.counts(length), strict=True)
            ]
            rates = refined_rates(rates, used, ds.weights)
            if rates is None:
                break
            schedule = Schedule(rates, block=ds.mix_block, seed=ds.seed, epoch=epoch)
            mode, length = epoch_length(ds, schedule, sources)
    single = len(sources) == 1 and ds.packing == "concat" and mode == "first_exhausted"
    padded = single and sources[0].total % (ds.seq_len + 1) != 0
    limit = sources[0].total if single else None
    return Epoch(epoch, sources, schedule, mode, length, padded, limit)


def epoch_length(ds: Any, schedule: Schedule, sources: list[SourceEpoch]) -> tuple[str, int]:
    """(mode, samples) of an epoch: budget, all_exhausted or first_exhausted (mixing.py)."""
    if ds.budget_tokens is not None:
        return "budget", ds.budget_tokens // ds.seq_len
    if ds.stopping_strategy == "all_exhausted":
        return "all_exhausted", schedule.first_covering([s.covering_windows() for s in sources])
    return "first_exhausted", schedule.last_within([s.full_windows() for s in sources])


def refined_rates(rates: list[int], used: list[float], weights: list[float]) -> list[int] | None:
    """Rates that move the realised unit shares (`used`) towards the weights, or None when
    they are within SHARE_TOLERANCE already. Average densities set the first rates; what the
    windows an epoch uses really hold (repeats, a subsampled prefix, padding) corrects them."""
    total, wanted = sum(used), sum(weights)
    if total <= 0:
        return None
    shares = [u / total for u in used]
    targets = [w / wanted for w in weights]
    if max(abs(s - t) for s, t in zip(shares, targets, strict=True)) < SHARE_TOLERANCE:
        return None
    return integer_rates(
        [
            Fraction(r) * Fraction(t / s).limit_denominator(1 << 30) if s > 0 else Fraction(r)
            for r, s, t in zip(rates, shares, targets, strict=True)
        ]
    )


def epoch_warning(epoch: Epoch, ds: Any) -> str | None:
    """An epoch with no batch at all (what it has and why), or what a mixture that stops at its
    first exhausted source by default leaves unused."""
    batch = ds.batch_size or 1
    if epoch.end(0, batch, ds.drop_last) == 0:  # (none for one process: none for any layout)
        tokens = sum(s.total for s in epoch.sources)
        return (
            f"epoch {epoch.epoch} of {', '.join(ds.urls)} holds no "
            f"{'batch' if ds.batch_size else 'sample'}: {tokens:,} stream tokens make "
            f"{epoch.length} window(s) of seq_len + 1 = {ds.seq_len + 1} tokens ({ds.packing})"
            + (f", fewer than batch_size={batch}" if epoch.length else "")
            + (
                " (drop_last=False also gives what is left)"
                if ds.drop_last and epoch.end(0, batch, False)
                else ""
            )
        )
    if len(epoch.sources) < 2 or ds.stopping_strategy or ds.budget_tokens is not None:
        return None
    counts = epoch.samples_of(epoch.length)
    unused = sum(s.total - s.tokens_used(n) for s, n in zip(epoch.sources, counts, strict=True))
    if unused <= 0:
        return None
    return (
        f"the mixture of {len(epoch.sources)} outputs stops when its first source runs out "
        f"(stopping_strategy='first_exhausted', the default): {unused:,} of "
        f"{sum(s.total for s in epoch.sources):,} stream tokens are not used in an epoch "
        "(plan() says which). Pass stopping_strategy='all_exhausted' or budget_tokens= to use "
        "every token, or stopping_strategy='first_exhausted' to keep this without the warning"
    )


@dataclass(frozen=True)
class Rows:
    """What a block holds: [tokens, labels?, position ids?, document ids?], whether the
    cu_seqlens starts are wanted, and whether labels come as a target mask (labels="mask": a
    bool [samples, seq_len] block of its own beside the token block, always written, and no
    labels row)."""

    labels: bool = False  # labels differ from the shifted window
    position: bool = False
    document: bool = False
    seq_lens: bool = False
    mask_cross: bool = False
    target_mask: bool = False  # labels="mask"

    @property
    def label_block(self) -> bool:
        """An int labels row in the block (labels="ids" when labels differ from the window)."""
        return self.labels and not self.target_mask

    @property
    def count(self) -> int:
        return 1 + self.label_block + self.position + self.document


@dataclass
class Filled:
    """What a fill tells the batches besides the block: the valid tokens of its last window
    (padding after them, masked in labels when there is no labels row), the source of each
    sample (mixtures), and the cu_seqlens starts over the block's input positions (flat,
    sorted, the block's total appended)."""

    valid: int
    source: np.ndarray | None = None
    starts: np.ndarray | None = None


def read_windows(
    epoch: Epoch, a: int, b: int, tokens: np.ndarray, labels: np.ndarray, segments: Segments
) -> Filled:
    """Samples a .. b-1 into tokens ([b - a, window]) and, unless labels has no columns, their
    labels (shifted tokens, IGNORE where padding is the target; or a target mask) into labels."""
    n, window = tokens.shape
    if len(epoch.sources) == 1:
        source = epoch.sources[0]
        placed = source.read(a, b, tokens, labels, np.arange(n), segments, epoch.limit)
        return Filled(window if placed >= n * window else placed - (n - 1) * window)
    sources, local = epoch.schedule.locate(a, b)
    for s, source in enumerate(epoch.sources):
        rows = np.flatnonzero(sources == s)  # consecutive windows of source s
        if len(rows):
            j0 = int(local[rows[0]])
            source.read(j0, j0 + len(rows), tokens, labels, rows, segments)
    return Filled(window, sources)


def fill(
    epoch: Epoch,
    a: int,
    b: int,
    block: np.ndarray,
    rows: Rows,
    skips: bool,
    mask: np.ndarray | None = None,
) -> Filled:
    """Samples a .. b-1 into block ([rows.count, b - a, window]) and, with rows.target_mask,
    their target mask into `mask` ([b - a, seq_len] bool; the kernels write it like labels)."""
    segments = Segments(skips)
    if rows.target_mask:
        labels = mask
    else:
        labels = block[1] if rows.labels else np.empty((1, 0), dtype=block.dtype)
    filled = read_windows(epoch, a, b, block[0], labels, segments)
    if not (skips or rows.mask_cross or rows.position or rows.document or rows.seq_lens):
        return filled  # (padding's labels and loss masks are written by the readers)
    table, skipped = segments.table()
    if labels.shape[1] and (skipped is not None or rows.mask_cross):  # (padding: the readers)
        marks = np.zeros(len(table), dtype=np.int8)
        if skipped is not None:
            marks[skipped] = 1
        if rows.mask_cross:  # a segment's first token after another segment in its row: a
            # document's start, or (best_fit) the rest of a split document after another one
            marks[(marks == 0) & (table[:, 3] >= 0)] = 2
        mask_labels(labels, table, marks)
    if rows.position or rows.document:
        order = np.lexsort((table[:, 1], table[:, 0]))
        first = 1 + rows.label_block
        positions = block[first] if rows.position else block[0]
        documents = block[first + rows.position] if rows.document else block[0]
        segment_ids(positions, documents, table, order, rows.position, rows.document)
    if rows.seq_lens:
        seq_len = block.shape[2] - 1
        filled.starts = input_starts(table, seq_len, (b - a) * seq_len)
    return filled


def join_filled(parts: list[Filled], sizes: list[int], seq_len: int) -> Filled:
    """One Filled for fills of consecutive sub-blocks of `sizes` samples."""
    sources = [p.source for p in parts]
    joined = Filled(parts[-1].valid, None if sources[0] is None else np.concatenate(sources))
    if parts[0].starts is not None:
        at = np.concatenate([[0], np.cumsum(sizes)]) * seq_len
        starts = [p.starts[:-1] + at[i] for i, p in enumerate(parts)]
        joined.starts = np.concatenate([*starts, [at[-1]]])
    return joined
