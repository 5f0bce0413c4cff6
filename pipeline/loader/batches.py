"""Batch assembly: which sample ranges a consumer's steps cover, and the batch dicts of torch
views that one filled [rows, samples, seq_len + 1] block of windows is cut into (plus each
batch's cu_seqlens / max_seqlen when asked)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pipeline.loader.windows import Filled, Rows

IGNORE_INDEX = -100  # label value of padding (torch's cross_entropy default ignore_index)


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
) -> Iterator[dict[str, Any]]:
    """The batch dicts (or samples, `single`) of the sample ranges held by one
    [rows, samples, seq_len + 1] block: views of it, cut by one torch split per key for the
    whole block (per batch only a dict is built, and cu_seqlens when asked), or pinned copies."""
    whole = torch.from_numpy(block)
    tokens = whole[0]
    parts = {
        "input_ids": tokens[:, :-1],
        "labels": whole[1, :, :-1] if rows.labels else tokens[:, 1:],
    }
    row = 1 + rows.labels
    if rows.position:
        parts["position_ids"] = whole[row, :, :-1]
        row += 1
    if rows.document:
        parts["document_ids"] = whole[row, :, :-1]
    if return_index:
        index = [np.arange(a, b) for a, b in ranges]
        parts["index"] = torch.from_numpy(index[0] if len(index) == 1 else np.concatenate(index))
        if filled.source is not None:
            parts["source"] = torch.from_numpy(filled.source)
    sizes = [1] * sum(b - a for a, b in ranges) if single else [b - a for a, b in ranges]
    if single:
        columns = {k: v.unbind(0) for k, v in parts.items()}
    elif sizes.count(sizes[0]) == len(sizes):  # equal batches: a reshaped view, unbound
        columns = {k: v.unflatten(0, (len(sizes), sizes[0])).unbind(0) for k, v in parts.items()}
    else:
        columns = {k: v.split(sizes) for k, v in parts.items()}
    if filled.valid < seq_len + 1 and not rows.labels:  # padding masked: the last gets a copy
        labels = list(columns["labels"])
        last = labels[-1].clone()
        (last if single else last[-1])[max(filled.valid - 1, 0) :] = IGNORE_INDEX
        columns["labels"] = [*labels[:-1], last]
    if filled.starts is not None:
        columns.update(cu_seqlens(filled.starts, sizes, seq_len))
    keys = list(columns)
    for values in zip(*columns.values(), strict=True):
        if pin:  # contiguous pinned copies: what a non_blocking copy to the GPU wants
            yield {k: pinned(v) for k, v in zip(keys, values, strict=True)}
        else:
            yield dict(zip(keys, values, strict=True))


def cu_seqlens(starts: np.ndarray, sizes: list[int], seq_len: int) -> dict[str, Any]:
    """flash-attn varlen inputs of each item (`sizes` rows each) from the block's segment starts
    (flat input positions, sorted, the block's total last): `cu_seqlens` (int32, [segments + 1],
    0 first and the item's tokens last) and `max_seqlen` (int). A few numpy calls per block and
    one torch split, nothing per item."""
    bounds = np.concatenate([[0], np.cumsum(sizes)]) * seq_len
    at = np.searchsorted(starts, bounds)
    counts = np.diff(at) + 1  # each item's segments, plus its end
    item = np.repeat(np.arange(len(sizes)), counts)
    values = (starts[np.arange(len(item)) - item] - bounds[item]).astype(np.int32)
    longest = np.maximum.reduceat(np.diff(starts), at[:-1]).tolist()
    return {"cu_seqlens": torch.from_numpy(values).split(counts.tolist()), "max_seqlen": longest}


def pinned(value: Any) -> Any:
    return value.pin_memory() if isinstance(value, torch.Tensor) else value
