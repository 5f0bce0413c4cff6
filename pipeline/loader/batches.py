"""Batch assembly: which sample ranges a consumer's steps cover, and the batch dicts of torch
views that one filled [rows, samples, seq_len + 1] block of windows is cut into."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

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
    valid: int,
    source: np.ndarray | None,
    *,
    seq_len: int,
    position_ids: bool,
    document_ids: bool,
    return_index: bool,
    single: bool,
    pin: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """The batch dicts (or samples, `single`) of the sample ranges held by one
    [rows, samples, seq_len + 1] block: views of it, cut by one torch split per key for the
    whole block (per batch only a dict is built), or pinned copies of them."""
    whole = torch.from_numpy(block)
    tokens = whole[0]
    parts = {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}
    row = 1
    if position_ids:
        parts["position_ids"] = whole[row, :, :-1]
        row += 1
    if document_ids:
        parts["document_ids"] = whole[row, :, :-1]
    if return_index:
        index = [np.arange(a, b) for a, b in ranges]
        parts["index"] = torch.from_numpy(index[0] if len(index) == 1 else np.concatenate(index))
        if source is not None:
            parts["source"] = torch.from_numpy(source)
    sizes = [b - a for a, b in ranges]
    if single:
        columns = {k: v.unbind(0) for k, v in parts.items()}
    elif sizes.count(sizes[0]) == len(sizes):  # equal batches: a reshaped view, unbound
        columns = {k: v.unflatten(0, (len(sizes), sizes[0])).unbind(0) for k, v in parts.items()}
    else:
        columns = {k: v.split(sizes) for k, v in parts.items()}
    if valid < seq_len + 1:  # padding is masked in labels only: the last gets a copy
        labels = list(columns["labels"])
        last = labels[-1].clone()
        (last if single else last[-1])[max(valid - 1, 0) :] = IGNORE_INDEX
        columns["labels"] = [*labels[:-1], last]
    keys = list(columns)
    for values in zip(*columns.values(), strict=True):
        if pin:  # contiguous pinned copies: what a non_blocking copy to the GPU wants
            yield {k: v.pin_memory() for k, v in zip(keys, values, strict=True)}
        else:
            yield dict(zip(keys, values, strict=True))
