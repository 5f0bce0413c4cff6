"""Per-document statistics computed beside the tokens, vectorised per batch over UTF-8 bytes: bytes,
chars, words, continued words and per-token byte end offsets.

Words: maximal runs of word characters, where word characters are ASCII letters, digits and '_'
and every non-ASCII code point outside whitespace, punctuation, symbol, variation-selector and tag
blocks; each CJK ideograph and each kana counts as one word on its own (as Unicode's default word
segmentation, UAX #29, separates ideographs without a dictionary). An apostrophe or a right single
quote between word characters ("it's", "it’s", "Привет’s") and a '.' or ',' between digits
("3.14", "1,000") stay inside the word. Thai, Lao, Khmer and Myanmar runs count as one word each
(no dictionary segmentation); reports state this rule.
A word is continued when at least one token boundary falls strictly inside it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenizers_impl.texts import utf8_of

# byte classes: 0 = not a word byte, 1 = word byte, 2 = single-character word (CJK)
_ASCII_CLASS = np.zeros(256, dtype=np.uint8)
for _c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_":
    _ASCII_CLASS[_c] = 1

# Non-ASCII ranges that are NOT word characters (whitespace, punctuation, symbols, emoji, controls).
_NON_WORD_RANGES = np.array(
    [
        (0x80, 0xBF),
        (0xD7, 0xD7),
        (0xF7, 0xF7),
        (0x1680, 0x1680),
        (0x2000, 0x2BFF),
        (0x2E00, 0x2E7F),
        (0x3000, 0x303F),
        (0xFE00, 0xFE1F),  # variation selectors (an emoji's U+FE0F), vertical forms
        (0xFE30, 0xFE6F),
        (0xFEFF, 0xFEFF),
        (0xFF00, 0xFF0F),
        (0xFF1A, 0xFF20),
        (0xFF3B, 0xFF40),
        (0xFF5B, 0xFF65),
        (0x1F000, 0x1FAFF),
        (0xE0000, 0xE007F),  # tags (flag emoji sequences)
        (0xE0100, 0xE01EF),  # variation selectors supplement
    ],
    dtype=np.int64,
)
# Ranges whose characters are one word each (ideographs, kana, CJK radicals).
_SINGLE_RANGES = np.array(
    [
        (0x2E80, 0x2FDF),
        (0x3040, 0x30FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0x20000, 0x3FFFF),
    ],
    dtype=np.int64,
)
_RIGHT_QUOTE = 0x2019
_CLASSES = (_ASCII_CLASS, _SINGLE_RANGES, _NON_WORD_RANGES, _RIGHT_QUOTE)  # for textkernels


def _in_ranges(cps: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(ranges[:, 0], cps, side="right") - 1
    ok = idx >= 0
    idx = np.maximum(idx, 0)
    return ok & (cps <= ranges[idx, 1])


@dataclass
class BatchStats:
    n_bytes: np.ndarray  # int64 per document
    n_chars: np.ndarray  # int64
    n_words: np.ndarray  # int32
    n_continued_words: np.ndarray | None  # int32, -1 where token bytes do not match the text
    token_ends: np.ndarray | None  # uint32 per token: byte end offset within its document


def _classify(b: np.ndarray) -> np.ndarray:
    """Class of every byte of valid UTF-8 (continuation bytes take their character's class)."""
    cls = _ASCII_CLASS[b]
    high = b >= 0x80
    if not high.any():
        return cls
    lead_pos = np.flatnonzero(b >= 0xC0)
    padded = np.concatenate((b, np.zeros(3, dtype=np.uint8))).astype(np.int64)
    lead = padded[lead_pos]
    c1, c2, c3 = (padded[lead_pos + k] & 0x3F for k in (1, 2, 3))
    cp = np.where(
        lead < 0xE0,
        ((lead & 0x1F) << 6) | c1,
        np.where(
            lead < 0xF0,
            ((lead & 0x0F) << 12) | (c1 << 6) | c2,
            ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3,
        ),
    )
    lead_cls = np.where(
        _in_ranges(cp, _SINGLE_RANGES), 2, np.where(_in_ranges(cp, _NON_WORD_RANGES), 0, 1)
    ).astype(np.uint8)
    cls = _spread(cls.copy(), lead_pos, lead, lead_cls)
    # a right single quote between word characters (their own classes) joins them ("it’s")
    quote = cp == _RIGHT_QUOTE
    if quote.any():
        qpos = lead_pos[quote]
        before = np.where(qpos > 0, cls[np.maximum(qpos - 1, 0)], 0)
        after = np.where(qpos + 3 < len(b), cls[np.minimum(qpos + 3, len(b) - 1)], 0)
        lead_cls[quote] = ((before == 1) & (after == 1)).astype(np.uint8)
        cls = _spread(cls, lead_pos[quote], lead[quote], lead_cls[quote])
    return cls


def _spread(
    cls: np.ndarray, lead_pos: np.ndarray, lead: np.ndarray, lead_cls: np.ndarray
) -> np.ndarray:
    """cls with each character's bytes (lead byte and continuation bytes) set to its class."""
    cls[lead_pos] = lead_cls
    n = len(cls)
    for k, min_lead in ((1, 0xC0), (2, 0xE0), (3, 0xF0)):
        sel = (lead >= min_lead) & (lead_pos + k < n)
        cls[lead_pos[sel] + k] = lead_cls[sel]
    return cls


def word_spans_bytes(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of every word in a UTF-8 byte array."""
    cls = _classify(b)
    word = cls == 1
    if len(b) > 2:  # ASCII apostrophe between word chars, '.' or ',' between digits
        digit = (b >= 48) & (b <= 57)
        mid = np.zeros(len(b), dtype=bool)
        mid[1:-1] = ((b[1:-1] == 0x27) & word[:-2] & word[2:]) | (
            ((b[1:-1] == 0x2C) | (b[1:-1] == 0x2E)) & digit[:-2] & digit[2:]
        )
        word |= mid
    single_lead = (cls == 2) & (b >= 0xC0)
    prev = np.concatenate(([False], word[:-1]))
    nxt = np.concatenate((word[1:], [False]))
    starts = np.flatnonzero((word & ~prev) | single_lead)
    run_ends = np.flatnonzero(word & ~nxt) + 1
    single_pos = np.flatnonzero(single_lead)
    single_end = single_pos + np.where(
        b[single_pos] >= 0xF0, 4, np.where(b[single_pos] >= 0xE0, 3, 2)
    )
    # starts are sorted; merge run ends and single ends in start order
    is_single = single_lead[starts]
    ends = np.empty(len(starts), dtype=np.int64)
    ends[~is_single] = run_ends
    ends[is_single] = single_end
    return starts, ends


# batches with at least this many text bytes use the compiled kernels (textkernels.py), and so do
# all batches once they are loaded; a job of a few small documents uses the numpy code below and
# never imports numba (about a second)
KERNEL_MIN_BYTES = 1 << 16


def kernels_wanted(size: int, threshold: int) -> bool:
    """Whether to use the compiled kernels for a batch of this size."""
    return size >= threshold or "pipeline.tokenize.textkernels" in sys.modules


def batch_stats(
    texts: Sequence[str],
    flat: np.ndarray,
    offsets: np.ndarray,
    token_byte_lengths: np.ndarray,
    *,
    words: bool = True,
    want_ends: bool = False,
    n_bytes: np.ndarray | None = None,
    kernel: bool | None = None,
) -> BatchStats:
    """Statistics for one batch; token ends come from the tokens' raw byte lengths. `kernel`:
    use the compiled kernels (None: when the batch has KERNEL_MIN_BYTES of text)."""
    n_docs = len(texts)
    utf8 = utf8_of(texts)
    if utf8 is not None:  # (texts as bytes: characters counted in one compiled pass)
        from pipeline.tokenize.inputs.jsonscan import char_counts

        n_chars = char_counts(*utf8)
    else:
        n_chars = np.fromiter(map(len, texts), dtype=np.int64, count=n_docs)
    if n_bytes is None:
        n_bytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=n_docs)
    n_bytes = np.asarray(n_bytes, dtype=np.int64)
    if not (want_ends or words):
        return BatchStats(n_bytes, n_chars, np.zeros(n_docs, dtype=np.int32), None, None)
    if kernel is None:
        kernel = words and kernels_wanted(int(n_bytes.sum()), KERNEL_MIN_BYTES)
    doc_start = np.zeros(n_docs, dtype=np.int64)
    if n_docs > 1:  # documents joined with a one-byte non-word separator
        np.cumsum(n_bytes[:-1] + 1, out=doc_start[1:])
    if kernel and words:
        from pipeline.tokenize.textkernels import batch_word_stats

        lengths = np.asarray(token_byte_lengths)

        def count(joined: np.ndarray, starts: np.ndarray, contiguous: bool = False) -> Any:
            return batch_word_stats(
                joined, starts, flat, offsets, lengths, n_bytes, _CLASSES, want_ends, contiguous
            )

        found = None
        if utf8 is not None:  # read in place: the batch's bytes from an 8-aligned start
            data, text_offsets = utf8
            base = int(text_offsets[0]) & ~7
            found = count(
                data[base : int(text_offsets[-1])], text_offsets[:-1] - base, contiguous=True
            )
        if found is None:
            joined = np.frombuffer(b"\x00".join([t.encode("utf-8") for t in texts]), np.uint8)
            found = count(joined, doc_start)
        n_words, continued, token_ends = found
        return BatchStats(n_bytes, n_chars, n_words, continued, token_ends)
    return _numpy_stats(
        texts, flat, offsets, token_byte_lengths, words, want_ends, n_bytes, n_chars, doc_start
    )


def _numpy_stats(
    texts: Sequence[str],
    flat: np.ndarray,
    offsets: np.ndarray,
    token_byte_lengths: np.ndarray,
    words: bool,
    want_ends: bool,
    n_bytes: np.ndarray,
    n_chars: np.ndarray,
    doc_start: np.ndarray,
) -> BatchStats:
    """The reference implementation (numpy, per batch); textkernels computes the same."""
    n_docs = len(texts)
    token_ends = continued = None
    n_words = np.zeros(n_docs, dtype=np.int32)
    doc_of_token = np.repeat(np.arange(n_docs), np.diff(offsets))
    cum = np.cumsum(token_byte_lengths[flat], dtype=np.int64)
    before = np.concatenate(([0], cum))[offsets[:-1]]  # token bytes before each document
    local_ends = cum - before[doc_of_token]
    if want_ends:
        token_ends = local_ends.astype(np.uint32)
    if words:
        joined = np.frombuffer("\x00".join(texts).encode("utf-8"), dtype=np.uint8)
        starts, ends = word_spans_bytes(joined)
        doc_of_word = np.searchsorted(doc_start, starts, side="right") - 1
        n_words = np.bincount(doc_of_word, minlength=n_docs).astype(np.int32)
        cum0 = np.concatenate(([0], cum))
        exact = (cum0[offsets[1:]] - cum0[offsets[:-1]]) == n_bytes
        # token boundaries as a cumulative count over bytes: a word is continued when a token ends
        # strictly inside it
        boundary = np.zeros(len(joined) + 1, dtype=np.int32)
        global_ends = local_ends + doc_start[doc_of_token]
        boundary[np.minimum(global_ends, len(joined))] = 1
        counts = np.cumsum(boundary, dtype=np.int32)
        inside = counts[ends - 1] - counts[starts]
        continued = np.bincount(doc_of_word, weights=inside > 0, minlength=n_docs).astype(np.int32)
        continued = np.where(exact, continued, -1).astype(np.int32)
    return BatchStats(n_bytes, n_chars, n_words, continued, token_ends)


def count_words(text: str) -> int:
    """Words in one text under the rule above."""
    return len(word_spans_bytes(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))[0])
