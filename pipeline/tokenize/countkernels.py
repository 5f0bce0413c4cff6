"""Compiled per-group unigram counts of the unit's hot path (numba, cached on disk once per
machine): dense rows, and sparse keys. Imported lazily by `unigrams` (see `textstats.load_kernels`);
the numpy code there is the reference (tests/test_hotpath.py compares them byte for byte)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def group_counts(flat, offsets, doc_group, counts):  # noqa: ANN001, ANN201
    """counts[doc_group[d], id] += 1 for every token of every document d; returns -1, or the
    position in flat of the first id outside counts' columns (nothing counted from its
    document on). (Hot loop.)"""
    vocab = counts.shape[1]
    for d in range(doc_group.shape[0]):
        g = doc_group[d]
        for t in range(offsets[d], offsets[d + 1]):
            token = np.int64(flat[t])
            if token < 0 or token >= vocab:
                return np.int64(t)
            counts[g, token] += 1
    return np.int64(-1)


@njit(cache=True, nogil=True)
def sparse_counts(flat, offsets, doc_row, vocab, scratch, touched):  # noqa: ANN001, ANN201
    """(keys row * vocab + token id, counts) of the tokens of the documents whose doc_row is >= 0:
    one entry per distinct token of each run of consecutive documents of one row (the same key
    may come again from a later run; not sorted). `scratch` (int64, vocab zeros) counts a run's
    tokens and `touched` (int64, vocab) lists the ids it met; scratch is left zeroed. (Hot loop.)"""
    n = doc_row.shape[0]
    total = 0
    for d in range(n):
        if doc_row[d] >= 0:
            total += offsets[d + 1] - offsets[d]
    keys = np.empty(total, dtype=np.int64)
    counts = np.empty(total, dtype=np.int64)
    k = 0
    m = 0
    for d in range(n):
        row = doc_row[d]
        if row < 0:
            continue
        for t in range(offsets[d], offsets[d + 1]):
            token = np.int64(flat[t])
            if scratch[token] == 0:
                touched[m] = token
                m += 1
            scratch[token] += 1
        if d + 1 < n and doc_row[d + 1] == row:
            continue  # the run goes on
        for j in range(m):
            token = touched[j]
            keys[k] = row * vocab + token
            counts[k] = scratch[token]
            scratch[token] = 0
            k += 1
        m = 0
    return keys[:k], counts[:k]
