"""The compiled loop of `unassigned.risky_texts` (numba, cached on disk; imported only for big
scans: importing numba costs about a second)."""

from __future__ import annotations

import numpy as np
from numba import njit

_HIGH = np.uint64(0x8080808080808080)


@njit(cache=True, nogil=True)
def scan_utf8(data, words, ends, unassigned):  # noqa: ANN001, ANN201
    """One pass over the texts' UTF-8 bytes (valid UTF-8, surrogates passed through as
    3-byte sequences), joined without separators, text k ending before byte ends[k]; `words` is
    `data` viewed as uint64 (its length a multiple of 8) for skipping plain ASCII 8 bytes a
    step. Same answer as the numpy scan of `unassigned._scan_small`. (Hot loop.)"""
    n = data.shape[0]
    risky = np.zeros(ends.shape[0], dtype=np.bool_)
    astral = np.empty(n // 4 + 1, dtype=np.uint32)
    where = np.empty(n // 4 + 1, dtype=np.int64)
    found = 0
    k = 0
    i = 0
    while i < n:
        if i & 7 == 0 and i + 8 <= n and words[i >> 3] & _HIGH == 0:
            i += 8
            continue
        lead = np.int64(data[i])
        if lead < 0x80:
            i += 1
            continue
        while i >= ends[k]:
            k += 1
        if lead < 0xE0:
            cp = ((lead & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
            i += 2
        elif lead < 0xF0:
            cp = ((lead & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6)
            cp |= np.int64(data[i + 2]) & 0x3F
            i += 3
        else:
            cp = ((lead & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
            cp |= ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F)
            i += 4
        if cp > 0xFFFF:
            astral[found] = cp
            where[found] = k
            found += 1
        elif unassigned[cp]:
            risky[k] = True
    return risky, astral[:found], where[:found]
