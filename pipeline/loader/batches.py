"""Batch assembly: which sample ranges a consumer's steps cover, and the batch dicts of torch
views that one filled [rows, samples, seq_len + 1] block of windows (and, labels="mask", its
[samples, seq_len] target mask) is cut into (plus each batch's cu_seqlens / max_seqlen when
asked); `labels_from`, a batch's labels from either format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pipeline.loader.kernels import varlen
from pipeline.loader.windows import Filled, Rows

IGNORE_INDEX = -100  # label value of padding (torch's cross_entropy default ignore_index)
OWN_LAST_SHARE = 16  # own_last: copy a block's last item when it is at most 1/16 of the block


def step_ranges(
    steps: range, base: int, per_step: int, batch: int, end: int
) -> list[tuple[int, int]]:
    """The sample range [a, b) of each of a consumer's steps (a = base + step * per_step) that
    starts before `end` (the last one cut at `end`)."""
    ranges = []
    for step in steps:
        a = base + step * per_step
        if a >= end:
            break
        ranges.append((a, a + batch if a + batch < end else end))
    return ranges


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
    whole = torch.from_numpy(block)
    sizes = [1] * sum(b - a for a, b in ranges) if single else [b - a for a, b in ranges]
    keys = ["input_ids", "targets" if rows.target_mask else "labels"]
    keys += ["position_ids"] * rows.position + ["document_ids"] * rows.document
    # (block row, shift) of each key's window view
    at = [(0, 0), (1, 0) if rows.label_block else (0, 1)]
    at += [(1 + rows.label_block + i, 0) for i in range(rows.position + rows.document)]
    equal = not single and sizes.count(sizes[0]) == len(sizes)
    if equal:  # equal batches: one view per key
        columns = {
            k: batch_views(whole, row, shift, sizes[0], seq_len)
            for k, (row, shift) in zip(keys, at, strict=True)
        }
    else:
        parts = {
            k: whole[row, :, shift : shift + seq_len]
            for k, (row, shift) in zip(keys, at, strict=True)
        }
        columns = {k: v.unbind(0) if single else v.split(sizes) for k, v in parts.items()}
    if rows.target_mask:
        flags = torch.from_numpy(mask)
        columns["target_mask"] = (
            flags.unbind(0) if single else flags.split(sizes[0] if equal else sizes)
        )
    first = sum(sizes) - sizes[-1]
    if own_last is not None and not pin and sizes[-1] * OWN_LAST_SHARE <= first + sizes[-1]:
        # one copy of the last item's rows, its views cut from it (numpy copies: torch's may
        # wake its thread pool)
        tail, tail_mask = block[:, first:], None if mask is None else mask[first:]
        copy, copy_mask = own_last(tail.shape, tail.dtype, getattr(tail_mask, "shape", None))
        np.copyto(copy, tail)
        own = torch.from_numpy(copy)
        for k, (row, shift) in zip(keys, at, strict=True):
            view = own[row, :, shift : shift + seq_len]
            columns[k] = [*columns[k][:-1], view[0] if single else view]
        if rows.target_mask:
            np.copyto(copy_mask, tail_mask)
            flag = torch.from_numpy(copy_mask)
            columns["target_mask"] = [*columns["target_mask"][:-1], flag[0] if single else flag]
    if return_index:
        index = [np.arange(a, b) for a, b in ranges]
        index = torch.from_numpy(index[0] if len(index) == 1 else np.concatenate(index))
        columns["index"] = index.unbind(0) if single else index.split(sizes)
        if filled.source is not None:
            source = torch.from_numpy(filled.source)
            columns["source"] = source.unbind(0) if single else source.split(sizes)
    if filled.valid < seq_len + 1 and not rows.labels and not rows.target_mask:
        labels = list(columns["labels"])  # padding masked: the last gets a copy
        last = labels[-1].clone()
        (last if single else last[-1])[max(filled.valid - 1, 0) :] = IGNORE_INDEX
        columns["labels"] = [*labels[:-1], last]
    if filled.starts is not None:
        columns.update(cu_seqlens(filled.starts, sizes, seq_len))
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        if pin:  # contiguous pinned copies: what a non_blocking copy to the GPU wants
            yield {k: pinned(v) for k, v in zip(names, values, strict=True)}
        else:
            yield dict(zip(names, values, strict=True))


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
        "cu_seqlens": torch.from_numpy(values).split(counts.tolist()),
        "max_seqlen": longest.tolist(),
    }


def batch_views(whole: torch.Tensor, row: int, shift: int, batch: int, seq_len: int) -> tuple:
    """Each batch's [batch, seq_len] view of block row `row` from column `shift` (the block
    [rows, samples, seq_len + 1] holds whole batches one after another): one strided view of
    them all, unbound (two torch calls per key and block, whatever its layout's strides)."""
    s_row, s_sample, s_col = whole.stride()
    batches = whole.shape[1] // batch
    return whole.as_strided(
        (batches, batch, seq_len),
        (batch * s_sample, s_sample, s_col),
        whole.storage_offset() + row * s_row + shift * s_col,
    ).unbind(0)


def pinned(value: Any) -> Any:
    return value.pin_memory() if isinstance(value, torch.Tensor) else value
