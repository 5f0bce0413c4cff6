"""Recycled arrays: a dataset's chunk blocks (with their target masks) and the copies of chunks'
last batches are refilled once nothing references them any more, instead of allocated anew."""

from __future__ import annotations

import sys

import numpy as np

KEPT = 4  # arrays a pool remembers (the oldest forgotten first), plus `extra`


class ArrayPool:
    """Pairs (block, target mask or None) a process may refill. Refilling warm memory avoids the
    page faults of fresh allocations of a chunk's size (about 0.45 ns a token here, as much as
    the copy itself), and a pair refilled while it is in the cache costs less again. (A
    prefetch thread takes from the chunk pool under the dataset's lock.)"""

    def __init__(self, extra: int = 0) -> None:
        self.kept = KEPT + extra  # (extra: the chunks a prefetch thread fills ahead)
        self.entries: list[tuple[np.ndarray, np.ndarray | None]] = []

    def take(
        self, shape: tuple[int, ...], dtype: type, mask_shape: tuple[int, ...] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A pair of these shapes that nothing references any more (no batch tensor or view of
        it is alive: they all hold a reference to their array; CPython reference counts), else
        a new one (a bool mask when `mask_shape`)."""
        for entry in self.entries:  # references: the entry, `block`, getrefcount's argument
            block, mask = entry
            if (
                sys.getrefcount(block) == 3
                and block.shape == shape
                and block.dtype == dtype
                and (None if mask is None else mask.shape) == mask_shape
                and (mask is None or sys.getrefcount(mask) == 3)
            ):
                return block, mask
        block = np.empty(shape, dtype=dtype)
        mask = None if mask_shape is None else np.empty(mask_shape, dtype=np.bool_)
        if len(self.entries) >= self.kept:
            del self.entries[0]
        self.entries.append((block, mask))
        return block, mask
