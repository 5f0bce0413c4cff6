"""Compiled kernels of the unit's hot path (numba, cached on disk once per machine): word
statistics over UTF-8 bytes and per-group unigram counts.

Imported lazily by `textstats` and `unigrams` (importing numba costs about a second), and used for
batches big enough to pay for it; the numpy code there stays the reference and small batches use
it. Each kernel computes exactly what its numpy counterpart does, step by step: the same byte
classes, the same word rule, the same token boundaries over the same joined buffer
(tests/test_hotpath.py compares them on hostile and multilingual text).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def classify(b, ascii_cls, single, non_word, quote_cp):  # noqa: ANN001, ANN201
    """`textstats._classify` byte for byte on valid UTF-8: 0 not a word byte, 1 word byte, 2
    single-character word (continuation bytes take their character's class). (Hot loop.)"""
    n = b.shape[0]
    cls = np.empty(n, dtype=np.uint8)
    i = 0
    while i < n:
        lead = np.int64(b[i])
        if lead < 0x80:
            cls[i] = ascii_cls[lead]
            i += 1
            continue
        if lead < 0xC0:  # a continuation byte without its lead (not in valid UTF-8)
            cls[i] = 0
            i += 1
            continue
        c1 = np.int64(b[i + 1]) & 0x3F if i + 1 < n else 0
        c2 = np.int64(b[i + 2]) & 0x3F if i + 2 < n else 0
        c3 = np.int64(b[i + 3]) & 0x3F if i + 3 < n else 0
        if lead < 0xE0:
            cp, width = ((lead & 0x1F) << 6) | c1, 2
        elif lead < 0xF0:
            cp, width = ((lead & 0x0F) << 12) | (c1 << 6) | c2, 3
        else:
            cp, width = ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4
        c = 1
        for k in range(single.shape[0]):
            if single[k, 0] <= cp <= single[k, 1]:
                c = 2
        if c == 1:
            for k in range(non_word.shape[0]):
                if non_word[k, 0] <= cp <= non_word[k, 1]:
                    c = 0
        if cp == quote_cp:  # a right single quote between word characters joins them
            before = ascii_cls[b[i - 1]] if i > 0 else 0
            after = 0
            if i + 3 < n:
                nb = b[i + 3]
                after = 1 if (ascii_cls[nb] != 0 or nb >= 0xC0) else 0
            c = 1 if (before == 1 and after > 0) else 0
        cls[i] = c
        for k in range(1, width):
            if i + k < n:
                cls[i + k] = c
        i += width if i + width <= n else 1
    return cls


@njit(cache=True, nogil=True)
def word_stats(b, cls, doc_start, flat, offsets, tok_len, n_bytes):  # noqa: ANN001, ANN201
    """Words, continued words and token ends of a batch joined with one 0 byte between
    documents (`textstats.batch_stats` byte for byte). Returns (n_words int32, continued int32,
    -1 where the tokens' bytes do not add up to the text, token_ends int64 local to each
    document). (Hot loop.)"""
    n = b.shape[0]
    n_docs = doc_start.shape[0]
    local_ends = np.empty(flat.shape[0], dtype=np.int64)
    boundary = np.zeros(n + 1, dtype=np.uint8)
    exact = np.zeros(n_docs, dtype=np.bool_)
    for d in range(n_docs):
        run = np.int64(0)
        for t in range(offsets[d], offsets[d + 1]):
            run += tok_len[flat[t]]
            local_ends[t] = run
            g = run + doc_start[d]
            boundary[g if g < n else n] = 1
        exact[d] = run == n_bytes[d]
    wd = _word_bytes(b, cls)
    n_words = np.zeros(n_docs, dtype=np.int32)
    continued = np.zeros(n_docs, dtype=np.int32)
    for d in range(n_docs):
        words = np.int64(0)
        cont = np.int64(0)
        prev = np.int64(0)  # the byte before is in a run of word bytes
        has = np.int64(0)  # a token ends strictly inside the current run
        for i in range(doc_start[d], doc_start[d] + n_bytes[d]):
            w = np.int64(wd[i])
            if w == 2:  # one CJK character is one word
                words += 1
                x = b[i]
                width = 4 if x >= 0xF0 else (3 if x >= 0xE0 else 2)
                for k in range(i + 1, min(i + width, n)):
                    if boundary[k]:
                        cont += 1
                        break
                w = 0
            cont += prev & (1 - w) & has  # a run ends before this byte
            has = (has | np.int64(boundary[i])) & w & prev
            words += w & (1 - prev)
            prev = w
        cont += prev & has
        n_words[d] = words
        continued[d] = cont if exact[d] else -1
    return n_words, continued, local_ends


@njit(cache=True, nogil=True)
def _word_bytes(b, cls):  # noqa: ANN001, ANN202
    """1 for a byte inside a run of word bytes (a word byte, an apostrophe between word bytes, a
    '.' or ',' between ASCII digits; never at either end of the buffer), 2 for the first byte of a
    single-character word, else 0. (Hot loop.)"""
    n = b.shape[0]
    wd = np.empty(n, dtype=np.uint8)
    for i in range(n):
        wd[i] = 1 if cls[i] == 1 else (2 if (cls[i] == 2 and b[i] >= 0xC0) else 0)
    for i in range(1, n - 1):
        x = b[i]
        if x == 0x27:
            if cls[i - 1] == 1 and cls[i + 1] == 1:
                wd[i] = 1
        elif (x == 0x2C or x == 0x2E) and 48 <= b[i - 1] <= 57 and 48 <= b[i + 1] <= 57:
            wd[i] = 1
    return wd


@njit(cache=True, nogil=True)
def group_counts(flat, offsets, doc_group, counts):  # noqa: ANN001, ANN201
    """counts[doc_group[d], id] += 1 for every token of every document d. (Hot loop.)"""
    for d in range(doc_group.shape[0]):
        g = doc_group[d]
        for t in range(offsets[d], offsets[d + 1]):
            counts[g, flat[t]] += 1


def batch_word_stats(
    joined: np.ndarray,
    doc_start: np.ndarray,
    flat: np.ndarray,
    offsets: np.ndarray,
    token_byte_lengths: np.ndarray,
    n_bytes: np.ndarray,
    classes: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_words, continued, token ends) of a batch; `classes`: textstats' byte class table, single
    and non-word code point ranges, and the right single quote."""
    cls = classify(joined, *classes)
    return word_stats(
        joined,
        cls,
        doc_start,
        flat,
        np.ascontiguousarray(offsets, dtype=np.int64),
        token_byte_lengths,
        n_bytes,
    )
