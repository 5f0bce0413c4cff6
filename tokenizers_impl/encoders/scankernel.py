"""The compiled loop of `unassigned.risky_texts` (numba, cached on disk; imported only for big
scans: importing numba costs about a second)."""

from __future__ import annotations

import numpy as np
from numba import njit

_HIGH = np.uint64(0x8080808080808080)


@njit(cache=True, nogil=True, inline="always")
def _answers(texts, most):  # noqa: ANN001, ANN202
    """A scan's answer arrays: per text whether it is risky; room for `most` code points above
    U+FFFF and the text of each."""
    return (
        np.zeros(texts, dtype=np.bool_),
        np.empty(most, dtype=np.uint32),
        np.empty(most, dtype=np.int64),
    )


@njit(cache=True, nogil=True)
def scan_utf8(data, words, ends, unassigned):  # noqa: ANN001, ANN201
    """One pass over the texts' UTF-8 bytes (valid UTF-8, surrogates passed through as 3-byte
    sequences), joined without separators, text k ending before byte ends[k]: (per text, whether
    it holds a BMP code point `unassigned` marks; the code points above U+FFFF and the text of
    each, to be looked up by the caller). `words` is `data` viewed as uint64 (its length a
    multiple of 8): plain ASCII goes 8 bytes a step from an aligned byte on, and a character's
    text is looked up only for a hit. Same answer as the numpy scan of `unassigned._scan_small`.
    (Hot loop.)"""
    n = data.shape[0]
    risky, astral, where = _answers(ends.shape[0], n // 4 + 1)
    found = 0
    k = 0
    i = 0
    while i < n:
        at = i
        lead = np.int64(data[np.uint64(i)])
        if lead < 0x80:  # ASCII: a byte, or from an aligned one 8 at a time
            i += 1
            if i & 7 == 0:
                while i + 8 <= n and words[np.uint64(i >> 3)] & _HIGH == 0:
                    i += 8
            continue
        if lead < 0xE0:
            cp = ((lead & 0x1F) << 6) | (np.int64(data[np.uint64(i + 1)]) & 0x3F)
            i += 2
        elif lead < 0xF0:
            cp = ((lead & 0x0F) << 12) | ((np.int64(data[np.uint64(i + 1)]) & 0x3F) << 6)
            cp |= np.int64(data[np.uint64(i + 2)]) & 0x3F
            i += 3
        else:
            cp = ((lead & 0x07) << 18) | ((np.int64(data[np.uint64(i + 1)]) & 0x3F) << 12)
            cp |= (np.int64(data[np.uint64(i + 2)]) & 0x3F) << 6
            cp |= np.int64(data[np.uint64(i + 3)]) & 0x3F
            i += 4
        if cp > 0xFFFF or unassigned[np.uint64(cp)]:
            while at >= ends[k]:  # (hits come in order: the text only moves on)
                k += 1
            if cp > 0xFFFF:
                astral[found] = cp
                where[found] = k
                found += 1
            else:
                risky[k] = True
    return risky, astral[:found], where[:found]


@njit(cache=True, nogil=True)
def scan_utf16(units, ends, marks):  # noqa: ANN001, ANN201
    """`scan_utf8`'s answer from the texts' UTF-16 code units (joined without separators, text k
    ending before unit ends[k]) and `unassigned.bmp_marks`: one table lookup per unit, no branch
    on the script, so text dense in other characters (Cyrillic, CJK) scans faster this way. A
    high surrogate followed by a low one in the same text is the character above U+FFFF they
    spell: texts with a lone surrogate (two of which spell the same units) go to `scan_utf8`.
    (Hot loop.)"""
    n = units.shape[0]
    risky, astral, where = _answers(ends.shape[0], n // 2 + 1)
    found = 0
    k = 0
    i = 0
    while i < n:
        u = np.int64(units[np.uint64(i)])
        mark = marks[np.uint64(u)]
        if mark == 0:
            i += 1
            continue
        while i >= ends[k]:  # (hits come in order: the text only moves on)
            k += 1
        if mark == 1:  # unassigned
            risky[k] = True
        elif u < 0xDC00 and i + 1 < ends[k]:  # a high surrogate: a pair when a low one follows
            low = np.int64(units[np.uint64(i + 1)])
            if 0xDC00 <= low < 0xE000:
                astral[found] = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                where[found] = k
                found += 1
                i += 1
        i += 1
    return risky, astral[:found], where[:found]
