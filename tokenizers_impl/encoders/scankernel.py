"""The compiled loop of `unassigned.risky_texts` (numba, cached on disk; imported only for big
scans: importing numba costs about a second)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def any_marked(units, marks):  # noqa: ANN001, ANN201
    """Whether marks[u] is non-zero for any code unit u (stops at the first). (Hot loop.)"""
    for i in range(units.shape[0]):  # noqa: SIM110 (numba: no generator in any())
        if marks[units[i]]:
            return True
    return False


@njit(cache=True, nogil=True)
def scan_points(points, ends, unassigned):  # noqa: ANN001, ANN201
    """One pass over the code points of texts joined with one separator each (text k ends
    before ends[k]): (per text, whether it holds a BMP code point `unassigned` marks; the code
    points above U+FFFF and the text of each, to be looked up by the caller). (Hot loop.)"""
    risky = np.zeros(ends.shape[0], dtype=np.bool_)
    astral = np.empty(points.shape[0], dtype=np.uint32)
    where = np.empty(points.shape[0], dtype=np.int64)
    found = 0
    k = 0
    for i in range(points.shape[0]):
        while i >= ends[k]:
            k += 1
        cp = points[i]
        if cp > 0xFFFF:
            astral[found] = cp
            where[found] = k
            found += 1
        elif unassigned[cp]:
            risky[k] = True
    return risky, astral[:found], where[:found]
