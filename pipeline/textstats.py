"""Per-document statistics computed beside the tokens, vectorised per batch: bytes, chars, words,
continued words and per-token byte end offsets.

Words: maximal runs of word characters, where word characters are ASCII letters, digits and '_' and
every non-ASCII code point outside whitespace, punctuation and symbol blocks; each CJK ideograph
and each kana counts as one word on its own (as Unicode's default word segmentation, UAX #29,
separates ideographs without a dictionary). Thai, Lao, Khmer and Myanmar runs count as one word each
(no dictionary segmentation); this is stated in reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ASCII_WORD = np.zeros(128, dtype=bool)
for _c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_":
    _ASCII_WORD[_c] = True

# Non-ASCII ranges that are NOT word characters (whitespace, punctuation, symbols, emoji, controls).
_NON_WORD_RANGES = np.array([
    (0x80, 0xBF), (0xD7, 0xD7), (0xF7, 0xF7), (0x1680, 0x1680), (0x2000, 0x2BFF), (0x2E00, 0x2E7F),
    (0x3000, 0x303F), (0xFE10, 0xFE1F), (0xFE30, 0xFE6F), (0xFEFF, 0xFEFF), (0xFF00, 0xFF0F),
    (0xFF1A, 0xFF20), (0xFF3B, 0xFF40), (0xFF5B, 0xFF65), (0x1F000, 0x1FAFF),
], dtype=np.int64)
# Ranges whose characters are one word each (ideographs, kana, CJK radicals).
_SINGLE_RANGES = np.array([
    (0x2E80, 0x2FDF), (0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
], dtype=np.int64)


def _in_ranges(cps: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(ranges[:, 0], cps, side="right") - 1
    ok = idx >= 0
    idx = np.maximum(idx, 0)
    return ok & (cps <= ranges[idx, 1])


def _utf8_len(cps: np.ndarray) -> np.ndarray:
    return 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)


@dataclass
class BatchStats:
    n_bytes: np.ndarray  # int64 per document
    n_chars: np.ndarray  # int64
    n_words: np.ndarray  # int32
    n_continued_words: np.ndarray | None  # int32, -1 where token bytes do not match the text
    token_ends: np.ndarray | None  # uint32 per token: byte end offset within its document


def word_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word (start, end) byte offsets in the joined text, each word's document, and doc byte starts."""
    joined = "\x00".join(texts)
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    nbytes = _utf8_len(cps)
    byte_start = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(nbytes, out=byte_start[1:])
    ascii_mask = cps < 128
    word = np.where(ascii_mask, _ASCII_WORD[np.where(ascii_mask, cps, 0)], True)
    non_ascii = ~ascii_mask
    if non_ascii.any():
        na = cps[non_ascii]
        word[non_ascii] = ~_in_ranges(na, _NON_WORD_RANGES)
        single = np.zeros(len(cps), dtype=bool)
        single[non_ascii] = _in_ranges(na, _SINGLE_RANGES)
    else:
        single = np.zeros(len(cps), dtype=bool)
    # UAX #29 MidLetter / MidNum: "it's", "3.14" and "1,000" stay one word.
    word_prev = np.concatenate(([False], word[:-1] & ~single[:-1]))
    word_next = np.concatenate((word[1:] & ~single[1:], [False]))
    digit = (cps >= 48) & (cps <= 57)
    digit_prev = np.concatenate(([False], digit[:-1]))
    digit_next = np.concatenate((digit[1:], [False]))
    apostrophe = (cps == 0x27) | (cps == 0x2019)
    numeric_sep = (cps == 0x2C) | (cps == 0x2E)
    word |= (apostrophe & word_prev & word_next) | (numeric_sep & digit_prev & digit_next)
    run = word & ~single
    prev = np.concatenate(([False], run[:-1]))
    nxt = np.concatenate((run[1:], [False]))
    starts_cp = np.flatnonzero((run & ~prev) | single)
    ends_cp = np.flatnonzero((run & ~nxt) | single) + 1
    starts = byte_start[starts_cp]
    ends = byte_start[ends_cp]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    doc_char_start = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        np.cumsum(lengths[:-1] + 1, out=doc_char_start[1:])
    doc_byte_start = byte_start[doc_char_start]
    doc_of_word = np.searchsorted(doc_char_start, starts_cp, side="right") - 1
    return starts, ends, doc_of_word, doc_byte_start


def batch_stats(
    texts: Sequence[str],
    flat: np.ndarray,
    offsets: np.ndarray,
    token_byte_lengths: np.ndarray,
    *,
    words: bool = True,
    want_ends: bool = False,
    n_bytes: np.ndarray | None = None,
) -> BatchStats:
    """Statistics for one batch; token ends come from the tokens' raw byte lengths."""
    n_docs = len(texts)
    n_chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n_docs)
    if n_bytes is None:
        n_bytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=n_docs)
    need_ends = want_ends or words
    token_ends = continued = None
    n_words = np.zeros(n_docs, dtype=np.int32)
    if need_ends:
        tok_len = token_byte_lengths[flat].astype(np.int64)
        cum = np.cumsum(tok_len)
        before = np.concatenate(([0], cum))[offsets[:-1]]  # cumulative bytes before each document
        doc_of_token = np.repeat(np.arange(n_docs), np.diff(offsets))
        local_ends = cum - before[doc_of_token]
        last = offsets[1:] - 1
        tok_total = np.where(offsets[1:] > offsets[:-1], local_ends[np.maximum(last, 0)], 0)
        exact = tok_total == n_bytes
        if want_ends:
            token_ends = local_ends.astype(np.uint32)
    if words:
        starts, ends, doc_of_word, doc_byte_start = word_spans(texts)
        n_words = np.bincount(doc_of_word, minlength=n_docs).astype(np.int32)
        # global token ends in the joined text (documents separated by one byte)
        global_ends = local_ends + doc_byte_start[doc_of_token]
        first = np.searchsorted(global_ends, starts, side="right")
        last_tok = np.searchsorted(global_ends, ends - 1, side="right")
        is_cont = (last_tok > first).astype(np.int32)
        continued = np.bincount(doc_of_word, weights=is_cont, minlength=n_docs).astype(np.int32)
        continued = np.where(exact, continued, -1).astype(np.int32)
    return BatchStats(n_bytes, n_chars, n_words, continued, token_ends)


def count_words(text: str) -> int:
    """Words in one text under the rule above."""
    starts, _, _, _ = word_spans([text])
    return len(starts)
