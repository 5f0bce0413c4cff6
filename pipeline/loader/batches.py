"""Batch assembly: which sample ranges a consumer's steps cover, and the batch dicts of torch
views that one filled [rows, samples, seq_len + 1] block of windows (and, labels="mask", its
[samples, seq_len] target mask) is cut into (plus each batch's cu_seqlens / max_seqlen when
asked); `labels_from`, a batch's labels from either format."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pipeline.loader.plankernels import varlen
from pipeline.loader.windows import Filled, Rows

IGNORE_INDEX = -100  # label value of padding (torch's cross_entropy default ignore_index)
OWN_LAST_SHARE = 16  # own_last: copy a block's last item when it is at most 1/16 of the block


def step_ranges(
    steps: range, base: int, per_step: int, batch: int, end: int
) -> list[tuple[int, int]]:
    """The sample range [a, b) of each of a consumer's steps (a = base + step * per_step) that
    starts before `end` (the last one cut at `end`)."""
    firsts = range(
        base + steps.start * per_step, min(base + steps.stop * per_step, end), steps.step * per_step
    )
    ranges = [(a, a + batch) for a in firsts]
    if ranges and ranges[-1][1] > end:
        ranges[-1] = (ranges[-1][0], end)
    return ranges


def span(ranges: list[tuple[int, int]]) -> tuple[int, bool]:
    """(samples in the sorted, disjoint sample ranges, whether each starts where the one before
    it ends): no Python loop per range."""
    flat = list(itertools.chain.from_iterable(ranges))
    return sum(flat[1::2]) - sum(flat[::2]), flat[1:-1:2] == flat[2::2]


def batch_items(
    block: np.ndarray,
    ranges: list[tuple[int, int]],
    filled: Filled,
    *,
    seq_len: int,
    rows: Rows,
    return_index: bool,
    single: bool,
    pin: bool,
    mask: np.ndarray | None = None,
    own_last: Callable[..., tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> Iterator[dict[str, Any]]:
    """The batch dicts (or samples, `single`) of the sample ranges held by one
    [rows, samples, seq_len + 1] block: views of it, cut by one torch split per key for the
    whole block (per batch only a dict is built, and cu_seqlens when asked), or pinned copies.
    With rows.target_mask, `targets` (the shifted window) and `target_mask` (views of `mask`,
    [samples, seq_len] bool) instead of `labels`. `own_last(shape, dtype, mask_shape)`: arrays
    the last item's rows (and mask) are copied into, its tensors then views of them, so that it
    does not keep the block alive (only when it is at most 1 / OWN_LAST_SHARE of the block: the
    copy costs that share of the fill's writes)."""
    sizes = item_sizes(ranges, single)
    total, last = sum(sizes), sizes[-1]
    cut = viewed(sizes, own_last is not None and not pin)  # (the last one: a copy if not all)
    own = cut < len(sizes)
    columns = window_views(block, mask, sizes, seq_len=seq_len, rows=rows, single=single, cut=cut)
    keys, at = key_rows(rows)
    if own:  # one copy of the last item's rows, its views cut from it (numpy copies: torch's
        # may wake its thread pool)
        first = total - last
        tail, tail_mask = block[:, first:], None if mask is None else mask[first:]
        copy, copy_mask = own_last(tail.shape, tail.dtype, getattr(tail_mask, "shape", None))
        np.copyto(copy, tail)
        copied = torch.from_numpy(copy)  # [rows, last, seq_len + 1], contiguous
        shape, strides = ((seq_len,), (1,)) if single else ((last, seq_len), (seq_len + 1, 1))
        for k, (row, shift) in zip(keys, at, strict=True):
            view = copied.as_strided(shape, strides, row * last * (seq_len + 1) + shift)
            columns[k] = [*columns[k][:cut], view]
        if rows.target_mask:
            np.copyto(copy_mask, tail_mask)
            flag = torch.from_numpy(copy_mask)
            columns["target_mask"] = [*columns["target_mask"][:cut], flag[0] if single else flag]
    if return_index:
        index = [np.arange(a, b) for a, b in ranges]
        index = torch.from_numpy(index[0] if len(index) == 1 else np.concatenate(index))
        columns["index"] = index.unbind(0) if single else index.split(sizes)
        if filled.source is not None:
            source = torch.from_numpy(filled.source)
            columns["source"] = source.unbind(0) if single else source.split(sizes)
    if filled.valid < seq_len + 1 and not rows.labels and not rows.target_mask:
        labels = list(columns["labels"])  # padding masked: the last gets a copy
        end = labels[-1].clone()
        (end if single else end[-1])[max(filled.valid - 1, 0) :] = IGNORE_INDEX
        columns["labels"] = [*labels[:-1], end]
    if filled.starts is not None:
        columns.update(cu_seqlens(filled.starts, sizes, seq_len))
    names = list(columns)
    if pin:
        return pinned_items(names, columns)
    # every dict at once (a list's iterator lets go of them all once it is exhausted; map:
    # dict(zip(...)) per item without zip's keyword, which costs as much as the dict)
    items = zip(*columns.values(), strict=True)
    return iter(list(map(dict, map(zip, itertools.repeat(names), items))))


def pinned_items(names: list[str], columns: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Contiguous pinned copies of each item: what a non_blocking copy to the GPU wants."""
    for values in zip(*columns.values(), strict=True):
        yield {k: pinned(v) for k, v in zip(names, values, strict=True)}


@functools.cache
def key_rows(rows: Rows) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """The window keys of a block's items and the (block row, shift) each is a view of."""
    keys = ["input_ids", "targets" if rows.target_mask else "labels"]
    keys += ["position_ids"] * rows.position + ["document_ids"] * rows.document
    at = [(0, 0), (1, 0) if rows.label_block else (0, 1)]
    at += [(1 + rows.label_block + i, 0) for i in range(rows.position + rows.document)]
    return tuple(keys), tuple(at)


def item_sizes(ranges: list[tuple[int, int]], single: bool) -> list[int]:
    """Samples of each item of the ranges: their batches, or one each (`single`)."""
    return [1] * sum(b - a for a, b in ranges) if single else [b - a for a, b in ranges]


def viewed(sizes: list[int], own: bool) -> int:
    """Items of `sizes` samples viewed in their block: all but the last when it gets a copy of
    its own (`own`, and it is at most 1 / OWN_LAST_SHARE of the block)."""
    return len(sizes) - (own and sizes[-1] * OWN_LAST_SHARE <= sum(sizes))


def window_views(
    block: np.ndarray,
    mask: np.ndarray | None,
    sizes: list[int],
    *,
    seq_len: int,
    rows: Rows,
    single: bool,
    cut: int,
) -> dict[str, Any]:
    """The views of each window key and of the target mask of the block's items of `sizes`
    samples (or samples, `single`): of the first `cut` items at least (equal batches: one
    strided view per key, unbound; else a torch split)."""
    whole = torch.from_numpy(block)
    keys, at = key_rows(rows)
    equal = not single and sizes.count(sizes[0]) == len(sizes)
    if equal:  # equal batches: one view per key
        columns = {
            k: batch_views(whole, row, shift, sizes[0], seq_len, cut)
            for k, (row, shift) in zip(keys, at, strict=True)
        }
    else:
        parts = {
            k: whole[row, :, shift : shift + seq_len]
            for k, (row, shift) in zip(keys, at, strict=True)
        }
        columns = {
            k: v.unbind(0) if single else v.split_with_sizes(sizes) for k, v in parts.items()
        }
    if rows.target_mask:
        flags = torch.from_numpy(mask)
        columns["target_mask"] = (
            flags.unbind(0) if single else flags.split(sizes[0] if equal else sizes)
        )
    return columns


def labels_from(batch: dict[str, Any], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The labels of a batch of either format: `labels` itself (labels="ids"), or built from
    `targets` and `target_mask` (labels="mask"): the target where the mask is True, else
    `ignore_index`. Call it after moving targets and target_mask to the device (one `where`
    there instead of a second int block written and copied on the host). Keeps the targets'
    dtype (int32 stays int32: `.long()` it for cross_entropy)."""
    if "labels" in batch:
        return batch["labels"]
    return torch.where(batch["target_mask"], batch["targets"], ignore_index)


def cu_seqlens(starts: np.ndarray, sizes: list[int], seq_len: int) -> dict[str, Any]:
    """flash-attn varlen inputs of each item (`sizes` rows each) from the block's segment starts
    (flat input positions, sorted, the block's total last): `cu_seqlens` (int32, [segments + 1],
    0 first and the item's tokens last) and `max_seqlen` (int). One kernel call and one torch
    split per block, nothing per item."""
    values, counts, longest = varlen(starts, np.asarray(sizes, dtype=np.int64), seq_len)
    return {
        "cu_seqlens": torch.from_numpy(values).split_with_sizes(counts.tolist()),
        "max_seqlen": longest.tolist(),
    }


def batch_views(
    whole: torch.Tensor, row: int, shift: int, batch: int, seq_len: int, count: int | None = None
) -> tuple:
    """Each batch's [batch, seq_len] view of block row `row` from column `shift` (the block
    [rows, samples, seq_len + 1] holds whole batches one after another), of the first `count`
    batches (default: all): one strided view of them, unbound (two torch calls per key and
    block, whatever its layout's strides)."""
    s_row, s_sample, s_col = whole.stride()
    batches = whole.shape[1] // batch if count is None else count
    return whole.as_strided(
        (batches, batch, seq_len),
        (batch * s_sample, s_sample, s_col),
        whole.storage_offset() + row * s_row + shift * s_col,
    ).unbind(0)


def pinned(value: Any) -> Any:
    return value.pin_memory() if isinstance(value, torch.Tensor) else value
