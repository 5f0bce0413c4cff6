"""Compiled kernels of the unit's hot path (numba, cached on disk once per machine): word
statistics over UTF-8 bytes (the unigram counts are in countkernels.py).

Imported lazily by `textstats` (importing numba costs about a second), and used for
batches big enough to pay for it; the numpy code there stays the reference and small batches use
it. Each kernel computes exactly what its numpy counterpart does: the same byte classes, the same
word rule, the same token boundaries over the same joined buffer (tests/test_hotpath.py compares
them on hostile and multilingual text and random token boundaries).

The word statistics make one pass over each document's bytes, character by character, with the
character classes computed on the way (ASCII from a byte table, other characters from a table
indexed by code point; runs of ASCII bytes no rule applies to go through a tight loop of their
own, 64 or 8 bytes a step where it can: the word bytes and token ends of aligned 8-byte words as
8-bit masks, from bytewise arithmetic in one vectorized pass per batch and per document, combined
eight at a time into 64-bit masks) and the document's token ends marked in a small array reused for
every document: no temporary array as long as the batch (only a batch whose tokens run past the
end of a document gets one, marking every boundary as the numpy code does).
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

_CP_SPACE = 1 << 21  # every code point a 4-byte lead can spell
_tables: dict[int, tuple[tuple, tuple]] = {}  # id(classes): (classes, kernel tables)
_steps: dict[int, tuple[np.ndarray, bool]] = {}  # id(ASCII classes): (them, 8-byte steps apply)


@njit(cache=True, nogil=True, inline="always")
def _code_point(b, i, lead):  # noqa: ANN001, ANN202
    """(code point, width) of the character whose lead byte (>= 0xC0) is b[i]; bytes past the
    buffer read as 0."""
    n = b.shape[0]
    c1 = np.int64(b[np.uint64(i + 1)]) & 0x3F if i + 1 < n else 0
    if lead < 0xE0:
        return ((lead & 0x1F) << 6) | c1, 2
    c2 = np.int64(b[np.uint64(i + 2)]) & 0x3F if i + 2 < n else 0
    if lead < 0xF0:
        return ((lead & 0x0F) << 12) | (c1 << 6) | c2, 3
    c3 = np.int64(b[np.uint64(i + 3)]) & 0x3F if i + 3 < n else 0
    return ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4


@njit(cache=True, nogil=True)
def _class_at(b, j, s, e, ascii_cls, cp_cls, quote_cp):  # noqa: ANN001, ANN202
    """`textstats._classify`'s class of byte j of the document b[s:e] (valid UTF-8): the class
    of the character the byte belongs to."""
    y = np.int64(b[j])
    if y < 0x80:
        return np.int64(ascii_cls[y])
    return _char_class(b, _lead(b, j, s), s, e, ascii_cls, cp_cls, quote_cp)[0]


@njit(cache=True, nogil=True, inline="always")
def _lead(b, j, s):  # noqa: ANN001, ANN202
    """The index of the lead byte of the character byte j belongs to (s at the earliest)."""
    i = j
    while i > s and b[i] & 0xC0 == 0x80:
        i -= 1
    return i


@njit(cache=True, nogil=True)
def _char_class(b, i, s, e, ascii_cls, cp_cls, quote_cp):  # noqa: ANN001, ANN202
    """(class, width) of the character at b[i] (not ASCII) in the document b[s:e]; `_doc_words`
    spells the same out in its loop (a call there makes it several times slower)."""
    x = np.int64(b[i])
    if x < 0xC0:  # a continuation byte without its lead (not in valid UTF-8)
        return np.int64(0), 1
    cp, width = _code_point(b, i, x)
    if cp != quote_cp:
        return np.int64(cp_cls[cp]), width
    return _quote_class(b, i, s, e, ascii_cls, cp_cls), width


@njit(cache=True, nogil=True)
def _quote_class(b, i, s, e, ascii_cls, cp_cls):  # noqa: ANN001, ANN202
    """The class of the right single quote at b[i]: a word character between two word characters
    (their own classes: the quote rule is not applied to them)."""
    return np.int64(
        i > s
        and _own_class(b, i - 1, s, ascii_cls, cp_cls) == 1
        and i + 3 < e
        and _own_class(b, i + 3, s, ascii_cls, cp_cls) == 1
    )


@njit(cache=True, nogil=True)
def _own_class(b, j, s, ascii_cls, cp_cls):  # noqa: ANN001, ANN202
    """The table class of the character byte j belongs to (no neighbour rule)."""
    y = np.int64(b[j])
    if y < 0x80:
        return np.int64(ascii_cls[y])
    i = _lead(b, j, s)
    x = np.int64(b[i])
    if x < 0xC0:
        return np.int64(0)
    return np.int64(cp_cls[_code_point(b, i, x)[0]])


_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_GATHER = np.uint64(0x0102040810204080)  # (bytes of 0 or 1) * _GATHER >> 56: byte k -> bit k


@njit(cache=True, nogil=True, inline="always")
def _bytes_eq(x, c):  # noqa: ANN001, ANN202
    """High bit of each byte of x (all < 0x80) set where the byte equals c, exactly per byte."""
    t = x ^ (np.uint64(c) * _ONES)
    return ~(((t & _LOW7) + _LOW7) | t) & _HIGH


@njit(cache=True, nogil=True, inline="always")
def _bytes_in(x, lo, hi):  # noqa: ANN001, ANN202
    """High bit of each byte of x (all < 0x80) set where lo <= byte <= hi (no carry crosses a
    byte: every sum stays under 0x100)."""
    ge = x + np.uint64(0x80 - lo) * _ONES
    gt = x + np.uint64(0x7F - hi) * _ONES
    return ge & ~gt & _HIGH


@njit(cache=True, nogil=True, inline="always")
def _gather(high):  # noqa: ANN001, ANN202
    """The high bits of the 8 bytes as an 8-bit mask, byte k (k-th in memory) at bit k."""
    return ((high >> np.uint64(7)) * _GATHER) >> np.uint64(56)


@njit(cache=True, nogil=True, inline="always")
def _chunk_masks(x):  # noqa: ANN001, ANN202
    """(ok, word mask) of 8 ASCII bytes x (bit k: byte k is a word byte, apostrophes between word
    bytes included); ok is False where the chunk needs the byte loop: a byte >= 0x80, a '.' or ','
    beside a digit of the chunk, an apostrophe at either end."""
    if x & _HIGH:
        return False, np.uint64(0)
    digit = _bytes_in(x, 0x30, 0x39)
    joins = _bytes_eq(x, 0x2E) | _bytes_eq(x, 0x2C)
    if joins and digit:  # '.' or ',' between digits may be a word byte: the byte loop decides
        return False, np.uint64(0)
    alpha = _bytes_in(x | (np.uint64(0x20) * _ONES), 0x61, 0x7A)  # letters, folded to lower case
    word = _gather(digit | alpha | _bytes_eq(x, 0x5F))
    quote = _gather(_bytes_eq(x, 0x27))
    if quote & np.uint64(0x81):  # an apostrophe whose neighbour is outside the chunk
        return False, np.uint64(0)
    # an apostrophe between word bytes (their own classes) is a word byte
    word |= quote & (word << np.uint64(1)) & (word >> np.uint64(1))
    return True, word


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)


@njit(cache=True, nogil=True, inline="always")
def _popcount(x):  # noqa: ANN001, ANN202
    """Set bits of a 64-bit word (bytewise sums: LLVM makes it one instruction where it can)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _ONES) >> np.uint64(56))


_ALL_OK = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True)
def _chunk_table(b64):  # noqa: ANN001, ANN202
    """`_chunk_masks` of every 8-byte chunk: (word masks, ok flags) as uint8 per chunk, padded
    with failing chunks to a multiple of 8 (read 8 at a time as uint64: 64-byte blocks). One
    loop without dependencies between chunks, which the compiler vectorizes. (Hot loop.)"""
    n = b64.shape[0]
    padded = (n + 7) & ~7
    words = np.zeros(padded, dtype=np.uint8)
    oks = np.zeros(padded, dtype=np.uint8)
    for k in range(n):
        ok, w8 = _chunk_masks(b64[k])
        words[k] = np.uint8(w8)
        oks[k] = np.uint8(ok)
    return words, oks


@njit(cache=True, nogil=True)
def _hit_table(mark64, last, hits):  # noqa: ANN001, ANN202
    """hits[k] = the token-end bytes (0 or 1) of mark64[k] as an 8-bit mask, for k <= last (the
    chunks a document's steps read). (Hot loop: vectorized.)"""
    for k in range(last + 1):
        hits[k] = np.uint8(_gather(mark64[k] << np.uint64(7)))


@njit(cache=True, nogil=True)
def _doc_words(b, wchunks, oks, s, e, mark, hits, base, ascii_cls, kind, cp_cls, quote_cp, fast):  # noqa: ANN001, ANN202, PLR0913
    """(words, continued words) of the document b[s:e]; mark[i - base] is 1 where a token ends
    before byte i. Characters are classified on the fly exactly as `textstats._classify` and
    `word_spans_bytes` do over the joined buffer, where the byte before a document and the one
    after it are a 0 separator. Plain ASCII text goes 64 or 8 bytes a step: `wchunks` and `oks`
    are the 8-byte chunks of b as `_chunk_table` gives them, and hits[k] the token ends of bytes
    base + 8k .. + 7 as a mask (base is a multiple of 64, so that b and mark are aligned at the
    same i); a step's word and token-end bits are masks. (Hot loop.)"""
    words = np.int64(0)
    cont = np.int64(0)
    prev = np.int64(0)  # the byte before is in a run of word bytes
    has = np.int64(0)  # a token ends strictly inside the current run
    chunks = wchunks.shape[0] > 0  # empty: a class table other than textstats' (no 8-byte steps)
    ok64 = oks.view(np.uint64)
    w64 = wchunks.view(np.uint64)
    h64 = hits.view(np.uint64)
    i = s
    while i < e:
        # a run of plain ASCII bytes (word or not, no apostrophe, '.' or ','): the tight loop,
        # 64 or 8 bytes a step where it can
        while i < e:
            if (i & 63) == 0 and i + 64 <= e and chunks and ok64[np.uint64(i >> 6)] == _ALL_OK:
                # the 8-byte step below on 64 bits, where a carry past the last bit overflows
                w = w64[np.uint64(i >> 6)]
                h = h64[np.uint64((i - base) >> 6)]
                p = (w << np.uint64(1)) | np.uint64(prev)
                words += _popcount(w & ~p)
                cont += has & np.int64(~w & np.uint64(1))
                x = h & w & p
                if has and (w & np.uint64(1)):
                    x |= np.uint64(1)
                total = w + x
                cont += _popcount(total & ~w)
                has = np.int64(total < w)
                prev = np.int64(w >> np.uint64(63))
                i += 64
                continue
            if (i & 7) == 0 and i + 8 <= e and chunks and oks[np.uint64(i >> 3)]:
                w8 = np.uint64(wchunks[np.uint64(i >> 3)])
                h8 = np.uint64(hits[np.uint64((i - base) >> 3)])
                p8 = ((w8 << np.uint64(1)) | np.uint64(prev)) & np.uint64(0xFF)
                words += _popcount(w8 & ~p8)
                cont += has & np.int64(~w8 & np.uint64(1))  # a run ended before the chunk
                x8 = h8 & w8 & p8  # token ends strictly inside runs
                if has and (w8 & np.uint64(1)):
                    x8 |= np.uint64(1)  # the run going on had one already
                # adding a run's inside ends to it carries once past its last byte: that bit
                # marks the runs with an inside end (bit 8: the last run goes on)
                ends = (w8 + x8) & ~w8
                cont += _popcount(ends & np.uint64(0xFF))
                has = np.int64(ends >> np.uint64(8))
                prev = np.int64(w8 >> np.uint64(7))
                i += 8
                continue
            w = np.int64(fast[b[np.uint64(i)]])
            if w > 1:
                break
            hit = np.int64(mark[np.uint64(i - base)])
            cont += has & ~w
            has = (has | hit) & w & prev
            words += w & ~prev
            prev = w
            i += 1
        if i >= e:
            break
        x = np.int64(b[np.uint64(i)])  # unsigned indices: no check for negative ones
        if x < 0x80:
            w = np.int64(kind[x])
            if w >= 2:
                if w == 2:  # an apostrophe between word bytes
                    w = np.int64(
                        i > s
                        and _class_at(b, i - 1, s, e, ascii_cls, cp_cls, quote_cp) == 1
                        and i + 1 < e
                        and _class_at(b, i + 1, s, e, ascii_cls, cp_cls, quote_cp) == 1
                    )
                else:  # '.' or ',' between ASCII digits
                    w = np.int64(
                        i > s and i + 1 < e and 48 <= b[i - 1] <= 57 and 48 <= b[i + 1] <= 57
                    )
            hit = np.int64(mark[np.uint64(i - base)])
            cont += has & ~w  # a run ends before this byte (has implies prev)
            has = (has | hit) & w & prev
            words += w & ~prev
            prev = w
            i += 1
            continue
        width = 1
        c = np.int64(0)  # a continuation byte without its lead (not in valid UTF-8)
        if x >= 0xC0:
            cp, width = _code_point(b, i, x)
            if cp == quote_cp:  # a right single quote between word characters joins them
                c = _quote_class(b, i, s, e, ascii_cls, cp_cls)
            else:
                c = np.int64(cp_cls[cp])
        if c == 2:  # one CJK character is one word
            words += 1
            for k in range(i + 1, min(i + width, e)):
                if mark[k - base]:
                    cont += 1
                    break
            c = 0
        hit = np.int64(mark[i - base])
        cont += prev & (1 - c) & has
        has = (has | hit) & c & prev
        words += c & (1 - prev)
        prev = c
        if c == 1:
            for k in range(i + 1, min(i + width, e)):
                has |= np.int64(mark[k - base])
        i += width
    cont += prev & has
    return words, cont


@njit(cache=True, nogil=True)
def word_stats(b, b64, doc_start, flat, offsets, tok_len, n_bytes, ends, boundary, tables):  # noqa: ANN001, ANN201
    """Words, continued words and token ends of a batch joined with one 0 byte between
    documents (`textstats.batch_stats` byte for byte), into n_words and continued (int32;
    continued -1 where the tokens' bytes do not add up to the text) and, when it is not empty,
    `ends` (uint32 per token, local to its document). `boundary` empty: each document's
    boundaries are its own token ends, marked in a small array reused for every document, and the
    kernel returns False (nothing complete) as soon as a document's tokens reach past its end
    (the boundaries would land in later documents) or a token length is negative. Otherwise
    `boundary` marks every boundary of the batch (n + 1 bytes, padded to a multiple of 8). b is
    8-aligned and b64 its first len // 8 * 8 bytes as uint64 (empty: byte by byte), classified
    8 bytes at a time once per batch. (Hot loop.)"""
    wchunks, oks = _chunk_table(b64)
    n_docs = doc_start.shape[0]
    own = boundary.shape[0] == 0
    most = np.int64(0)
    for d in range(n_docs):
        most = max(most, n_bytes[d])
    # a document's marks start at its first byte's offset within 64, so that mark and b line up
    # in 64-byte blocks; hits: the marks of each 8 bytes as one byte (uint64: a block's 64)
    mark = np.zeros((most + 128) & ~63 if own else 0, dtype=np.uint8)
    marks = mark if own else boundary
    hits = np.zeros(((marks.shape[0] >> 3) + 7) & ~7, dtype=np.uint8)
    if not own:
        _hit_table(boundary.view(np.uint64), (boundary.shape[0] >> 3) - 1, hits)
    n_words = np.zeros(n_docs, dtype=np.int32)
    continued = np.zeros(n_docs, dtype=np.int32)
    keep = ends.shape[0] > 0
    for d in range(n_docs):
        s = doc_start[d]
        lead = s & 63
        run = np.int64(0)
        for t in range(offsets[d], offsets[d + 1]):
            length = np.int64(tok_len[flat[np.uint64(t)]])
            run += length
            if keep:
                ends[np.uint64(t)] = run
            if own:
                if length < 0 or run > n_bytes[d]:
                    return False, n_words, continued
                mark[np.uint64(run + lead)] = 1
        if own:
            _hit_table(mark.view(np.uint64), (lead + n_bytes[d]) >> 3, hits)
            words, cont = _doc_words(
                b, wchunks, oks, s, s + n_bytes[d], mark, hits, s - lead, *tables
            )
            mark[lead : lead + n_bytes[d] + 1] = 0  # cleared for the next document
        else:
            words, cont = _doc_words(b, wchunks, oks, s, s + n_bytes[d], boundary, hits, 0, *tables)
        n_words[d] = words
        continued[d] = cont if run == n_bytes[d] else -1
    return True, n_words, continued


def _word_tables(classes: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> tuple:
    """(ASCII byte classes, ASCII kinds, class per code point, right single quote, the tight
    loop's table) from textstats' class table and ranges; kinds are the
    byte's class, or 2 for an apostrophe and 3 for '.' and ',' that are not word bytes themselves
    (the rules between word bytes and digits)."""
    ascii_cls, single, non_word, quote_cp = classes
    key = id(classes)
    if key in _tables and _tables[key][0] is classes:
        return _tables[key][1]
    kind = (ascii_cls == 1).astype(np.uint8)
    for x, k in ((0x27, 2), (0x2C, 3), (0x2E, 3)):
        if ascii_cls[x] != 1:
            kind[x] = k
    cp_cls = np.ones(_CP_SPACE, dtype=np.uint8)
    for lo, hi in non_word:
        cp_cls[lo : hi + 1] = 0
    for lo, hi in single:  # single-character words first, as `_classify` decides
        cp_cls[lo : hi + 1] = 2
    fast = np.full(256, 2, dtype=np.uint8)  # the tight loop's table: 2 = leave it (any rule)
    fast[:0x80] = np.minimum(kind[:0x80], 2)
    ascii_cls = np.ascontiguousarray(ascii_cls, dtype=np.uint8)
    tables = (ascii_cls, kind, cp_cls, np.int64(quote_cp), fast)
    _tables[key] = (classes, tables)
    return tables


def _steps_apply(ascii_cls: np.ndarray) -> bool:
    """`_chunks_apply`, once per class table."""
    found = _steps.get(id(ascii_cls))
    if found is None or found[0] is not ascii_cls:
        found = _steps[id(ascii_cls)] = (ascii_cls, _chunks_apply(ascii_cls))
    return found[1]


def _chunks_apply(ascii_cls: np.ndarray) -> bool:
    """Whether the 8-byte steps (which spell out textstats' ASCII classes: letters, digits, '_'
    are word bytes, and the apostrophe, '.' and ',' rules) apply to this class table (and to this
    machine: their masks read the first byte in memory as the lowest)."""
    if sys.byteorder != "little":
        return False
    word = np.zeros(128, dtype=bool)
    word[[*range(48, 58), *range(65, 91), *range(97, 123), 95]] = True
    return bool(np.array_equal(ascii_cls[:128] == 1, word) and not (ascii_cls[:128] > 1).any())


def _aligned(joined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(joined, its first len // 8 * 8 bytes as uint64), copied once if it is not 8-aligned."""
    if joined.ctypes.data % 8:
        joined = joined.copy()  # numpy's own allocations are aligned
    return joined, joined[: joined.shape[0] & ~7].view(np.uint64)


def batch_word_stats(
    joined: np.ndarray,
    doc_start: np.ndarray,
    flat: np.ndarray,
    offsets: np.ndarray,
    token_byte_lengths: np.ndarray,
    n_bytes: np.ndarray,
    classes: tuple[np.ndarray, np.ndarray, np.ndarray, int],
    want_ends: bool = True,
    contiguous: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(n_words, continued, token ends as uint32 or None) of a batch; `classes`: textstats' byte
    class table, single and non-word code point ranges, and the right single quote. `contiguous`:
    the documents lie at doc_start with no separator between them (the same counts, each from
    its own bytes and tokens), or None where tokens run past a document (their boundaries would
    land in later documents, not on separators): the caller joins the texts and asks again."""
    if contiguous:
        if len(n_bytes) and int(doc_start[-1] + n_bytes[-1]) > joined.shape[0]:
            raise ValueError("the documents run past the buffer")  # the kernel would overrun
    elif joined.shape[0] != max(int(n_bytes.sum()) + len(n_bytes) - 1, 0):
        raise ValueError("n_bytes do not add up to the joined texts")  # the kernel would overrun
    tables = _word_tables(classes)
    joined, b64 = _aligned(joined)
    if not _steps_apply(tables[0]):
        b64 = b64[:0]
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    ends = np.empty(flat.shape[0] if want_ends else 0, dtype=np.uint32)
    args = (joined, b64, doc_start, flat, offsets, token_byte_lengths, n_bytes, ends)
    done, n_words, continued = word_stats(*args, np.zeros(0, dtype=np.uint8), tables)
    if not done and contiguous:
        return None
    if not done:  # boundaries of some document land in later ones: mark them all, as numpy does
        run = np.cumsum(token_byte_lengths[flat], dtype=np.int64)
        before = np.concatenate(([0], run))[offsets[:-1]]
        doc_of_token = np.repeat(np.arange(len(doc_start)), np.diff(offsets))
        boundary = np.zeros((joined.shape[0] + 8) & ~7, dtype=np.uint8)  # n + 1, padded to 8
        boundary[np.minimum(run - before[doc_of_token] + doc_start[doc_of_token], len(joined))] = 1
        _, n_words, continued = word_stats(*args, boundary, tables)
    return n_words, continued, ends if want_ends else None
