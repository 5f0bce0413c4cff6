"""A compiled pass over a run of JSON lines (numba, cached on disk once per machine): each line
that is a flat JSON object of the usual shape is validated and its text, id, source and lang
strings are unescaped into two byte buffers, so the reader builds no Python object per document
text.

The pass is conservative: it takes a line only where the standard library's json and orjson
both read it as an object and give the same strings, and sends every other line back to the
per-line reader (`SLOW`), which reads it exactly as it always has (the reject, its reason, an
integer id, a BOM...). A line is taken when it is, in full:
- a JSON object (whitespace around it and its tokens as JSON defines it: space, tab, CR, LF) whose
  keys are plain strings (no escape) and whose values are strings, numbers (at most 32
  characters: json and orjson differ on huge ones), true, false or null: no array or object;
- every string valid UTF-8 without control characters, with only JSON's escapes, each \\u escape
  a character (a surrogate only as a high and low pair);
- the text field present once, a non-empty string of at most `max_text` UTF-8 bytes; the id field
  absent, null or a string; none of the four fields twice. A source or lang that is not a string
  reads as absent (the reader gives such a record the default source and no lang).

The caller guarantees that `buf[last]` is a newline: every loop that walks a string stops at a
byte below 0x20, and the newline is one, so no loop needs a bounds check of its own. The pass
releases the GIL (two threads of a driver read at once). Plain ASCII is tested and copied 8 bytes
a step on little-endian machines (one unaligned load and store, SWAR tests for the bytes a string
treats apart), a character past ASCII is validated and copied in one 4-byte store; the pass
runs at 1.1-2 GB/s on the English and code of the bench corpus and 0.4-0.6 GB/s on its Russian
and Chinese (a byte and a table lookup a byte before: 0.3-0.6 GB/s), against orjson's 450-650
MB/s for the same lines with their Python objects. `char_counts` counts the characters of such
texts for the statistics.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

# columns of the result, one row per line
START, END, STATUS, TEXT, TEXT_END, ID, ID_END, SOURCE, SOURCE_END, LANG, LANG_END = range(11)
COLUMNS = 11
SLOW = 1  # STATUS: the per-line reader reads it
MAX_LINES = 1 << 14  # lines a call at most (its table: 88 bytes a line)
MAX_TEXT = 1 << 62  # (the compiled pass's integers: a bigger max_doc_bytes is this)
MAX_NUMBER = 32  # longer number tokens send the line to the per-line reader

_WS = np.zeros(256, dtype=np.bool_)
_WS[[0x20, 0x09, 0x0D]] = True  # (and LF, which a line does not hold: the walk stops at its end)
_SPECIAL = np.zeros(256, dtype=np.uint8)  # bytes a string does not copy as they are
_SPECIAL[:0x20] = _SPECIAL[0x22] = _SPECIAL[0x5C] = _SPECIAL[0x80:] = 1
_ESCAPES = np.zeros(256, dtype=np.uint8)  # the byte an escape stands for (0: not an escape)
for _key, _value in zip(b'"\\/bfnrt', b'"\\/\b\f\n\r\t', strict=True):
    _ESCAPES[_key] = _value
_HEX = np.full(256, -1, dtype=np.int8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def field_keys(*names: str) -> tuple[np.ndarray, np.ndarray]:
    """The field names as one UTF-8 buffer and its offsets (the kernel's `keys`, `key_ends`)."""
    parts = [name.encode("utf-8") for name in names]
    ends = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=ends[1:])
    return np.frombuffer(b"".join(parts) or b"\0", dtype=np.uint8), ends


@njit(cache=True, nogil=True, inline="always")
def _skip_ws(buf, i, ws):  # noqa: ANN001, ANN202
    while ws[buf[i]]:
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _utf8_width(buf, i):  # noqa: ANN001, ANN202
    """The width of the valid UTF-8 character whose lead byte (>= 0x80) is buf[i], 0 if invalid
    (overlong forms, surrogates, past U+10FFFF, a missing continuation byte: the line's newline
    is not one, so this never reads past it)."""
    c = buf[i]
    if c < 0xC2:
        return 0
    if c < 0xE0:
        return 2 if buf[i + 1] & 0xC0 == 0x80 else 0
    c1 = buf[i + 1]
    if c < 0xF0:
        lo, hi = (0xA0 if c == 0xE0 else 0x80), (0x9F if c == 0xED else 0xBF)
        if c1 < lo or c1 > hi or buf[i + 2] & 0xC0 != 0x80:
            return 0
        return 3
    if c > 0xF4:
        return 0
    lo, hi = (0x90 if c == 0xF0 else 0x80), (0x8F if c == 0xF4 else 0xBF)
    if c1 < lo or c1 > hi or buf[i + 2] & 0xC0 != 0x80 or buf[i + 3] & 0xC0 != 0x80:
        return 0
    return 4


@njit(cache=True, nogil=True, inline="always")
def _hex4(buf, i, hexes):  # noqa: ANN001, ANN202
    """The value of 4 hex digits at buf[i:i + 4], -1 if any is not one (the newline is not)."""
    v = 0
    for k in range(4):
        h = hexes[buf[i + k]]
        if h < 0:
            return -1
        v = (v << 4) | h
    return v


_U1, _U2, _U3, _U4, _U6, _U8 = (np.uint64(k) for k in (1, 2, 3, 4, 6, 8))
# SWAR: a byte of a word is below 0x20, a quote, a backslash or not ASCII (only the presence,
# and the lowest such byte, are exact: a borrow can flag bytes above it)
_LOW, _HIGH = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
_SPACES, _QUOTES = np.uint64(0x2020202020202020), np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)


def _unaligned(bits: int, store: bool):  # noqa: ANN202
    """An intrinsic that loads (or stores) `bits` bits at byte `at` of a uint8 array, aligned or
    not (one instruction on x86-64 and arm64; the caller checks the bounds)."""
    kind = ir.IntType(bits)
    value_type = types.uint64 if bits == 64 else types.uint32

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        where = builder.bitcast(builder.gep(data, [args[1]]), kind.as_pointer())
        if store:
            builder.store(context.cast(builder, args[2], sig.args[2], value_type), where, align=1)
            return context.get_dummy_value()
        return builder.load(where, align=1)

    if store:
        return intrinsic(lambda _ctx, arr, at, value: (types.void(arr, at, value), codegen))
    return intrinsic(lambda _ctx, arr, at: (value_type(arr, at), codegen))


_load64, _store64 = _unaligned(64, False), _unaligned(64, True)
_load32, _store32 = _unaligned(32, False), _unaligned(32, True)


_LITTLE = sys.byteorder == "little"  # (a word's first byte in memory is its lowest)


@njit(cache=True, nogil=True, inline="always")
def _plain_word(w):  # noqa: ANN001, ANN202
    """The bytes of a little-endian word before its first byte that a string does not copy as it
    is (8 when it has none); 0 on a big-endian machine (every byte through the byte loop)."""
    if not _LITTLE:
        return np.uint64(0)
    q, b = w ^ _QUOTES, w ^ _BACKSLASHES
    flags = (w | ((w - _SPACES) & ~w) | ((q - _LOW) & ~q) | ((b - _LOW) & ~b)) & _HIGH
    if flags == 0:
        return _U8
    return np.uint64(trailing_zeros(flags)) >> _U3


@njit(cache=True, nogil=True, inline="always")
def _string(buf, at, out, start, write, special, escapes, hexes):  # noqa: ANN001, ANN202
    """Read the JSON string whose opening quote is at buf[at - 1]: (index after its closing quote,
    output position after its bytes), its unescaped UTF-8 copied to out[start:] when `write`;
    index -1 for a string to leave to the per-line reader. (Hot loop: 8 plain bytes a step, the
    word stored whole (bytes past the first special one are overwritten by what follows: `out`
    is only ever written forward), then the special byte; unsigned indices (a signed one costs
    a check for negative indices at every access); an escape, the usual special byte of
    English, is a newline every line.)"""
    i, o = np.uint64(at), np.uint64(start)
    n_in, n_out = np.uint64(len(buf)), np.uint64(len(out))  # (bounds of the word loads and stores)
    while True:
        while i + _U8 <= n_in and o + _U8 <= n_out:  # 8 plain bytes a step, stored as they are
            w = _load64(buf, i)
            k = _plain_word(w)
            if write:
                _store64(out, o, w)  # (the bytes from the first special one are overwritten)
            i += k
            if write:
                o += k
            if k < _U8:
                break
        c = buf[i]
        if special[c] == 0:  # printable ASCII, not a quote or backslash (the last 7 bytes)
            if write:
                out[o] = c
                o += _U1
            i += _U1
            continue
        if c == 0x22:
            return np.int64(i + _U1), np.int64(o)
        if c >= 0x80:
            while c >= 0x80:  # a run of characters past ASCII
                w = np.uint64(_utf8_width(buf, np.int64(i)))
                if w == 0:
                    return np.int64(-1), np.int64(o)
                if write:
                    if i + _U4 <= n_in and o + _U4 <= n_out:
                        _store32(out, o, _load32(buf, i))
                    else:
                        for k in range(w):
                            out[o + k] = buf[i + k]
                    o += w
                i += w
                c = buf[i]
            continue
        if c != 0x5C:  # a control character (the line's end among them)
            return np.int64(-1), np.int64(o)
        e = buf[i + _U1]
        if e != 0x75:  # not \u
            v = escapes[e]
            if v == 0:
                return np.int64(-1), np.int64(o)
            if write:
                out[o] = v
                o += _U1
            i += _U2
            continue
        cp = _hex4(buf, np.int64(i) + 2, hexes)
        i += _U6
        if cp < 0 or 0xDC00 <= cp <= 0xDFFF:
            return np.int64(-1), np.int64(o)
        if 0xD800 <= cp <= 0xDBFF:  # a high surrogate: its low one must follow
            if buf[i] != 0x5C or buf[i + _U1] != 0x75:
                return np.int64(-1), np.int64(o)
            low = _hex4(buf, np.int64(i) + 2, hexes)
            if low < 0xDC00 or low > 0xDFFF:
                return np.int64(-1), np.int64(o)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            i += _U6
        if write:
            o = np.uint64(_put_utf8(out, np.int64(o), cp))


@njit(cache=True, nogil=True, inline="always")
def _put_utf8(out, o, cp):  # noqa: ANN001, ANN202
    if cp < 0x80:
        out[o] = cp
        return o + 1
    if cp < 0x800:
        out[o] = 0xC0 | (cp >> 6)
        out[o + 1] = 0x80 | (cp & 0x3F)
        return o + 2
    if cp < 0x10000:
        out[o] = 0xE0 | (cp >> 12)
        out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
        out[o + 2] = 0x80 | (cp & 0x3F)
        return o + 3
    out[o] = 0xF0 | (cp >> 18)
    out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
    out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
    out[o + 3] = 0x80 | (cp & 0x3F)
    return o + 4


@njit(cache=True, nogil=True, inline="always")
def _digits(buf, i):  # noqa: ANN001, ANN202
    j = i
    while 0x30 <= buf[j] <= 0x39:
        j += 1
    return j


@njit(cache=True, nogil=True)
def _number(buf, i):  # noqa: ANN001, ANN202
    """The index after the JSON number at buf[i], -1 if it is not one (or too long)."""
    s = i
    if buf[i] == 0x2D:  # -
        i += 1
    if buf[i] == 0x30:
        i += 1
    elif 0x31 <= buf[i] <= 0x39:
        i = _digits(buf, i)
    else:
        return -1
    if buf[i] == 0x2E:  # .
        j = _digits(buf, i + 1)
        if j == i + 1:
            return -1
        i = j
    if buf[i] == 0x65 or buf[i] == 0x45:  # e E
        i += 1
        if buf[i] == 0x2B or buf[i] == 0x2D:
            i += 1
        j = _digits(buf, i)
        if j == i:
            return -1
        i = j
    return i if i - s <= MAX_NUMBER else -1


@njit(cache=True, nogil=True, inline="always")
def _literal(buf, i, word):  # noqa: ANN001, ANN202
    for k in range(len(word)):
        if buf[i + k] != word[k]:
            return -1
    return i + len(word)


@njit(cache=True, nogil=True)
def _which_key(buf, s, e, keys, key_ends):  # noqa: ANN001, ANN202
    """The index of the field named buf[s:e] among the keys, -1 for another key."""
    for k in range(len(key_ends) - 1):
        ks, ke = key_ends[k], key_ends[k + 1]
        if ke - ks == e - s:
            same = True
            for j in range(e - s):
                if buf[s + j] != keys[ks + j]:
                    same = False
                    break
            if same:
                return k
    return -1


_TRUE, _FALSE, _NULL = (
    np.frombuffer(w, dtype=np.uint8).copy() for w in (b"true", b"false", b"null")
)


@njit(cache=True, nogil=True)
def _line(buf, i, keys, key_ends, max_text, texts, t, misc, m, row, tables):  # noqa: ANN001, ANN202, PLR0911, PLR0912
    """Parse the line from buf[i] into `row` (spans of its four fields: -1 absent); returns the
    output positions after it (texts, misc) and the index of its newline, or (-1, -1, -1) for a
    line to leave to the per-line reader. (Hot loop.)"""
    ws, special, escapes, hexes, true, false, null = tables
    i = _skip_ws(buf, i, ws)
    if buf[i] != 0x7B:  # {
        return -1, -1, -1
    i = _skip_ws(buf, i + 1, ws)
    if buf[i] == 0x7D:  # {} (no text)
        return -1, -1, -1
    for k in range(3, 11):
        row[k] = -1
    while True:
        if buf[i] != 0x22:
            return -1, -1, -1
        ks = i + 1
        i, _ = _string(buf, ks, misc, m, False, special, escapes, hexes)
        if i < 0:
            return -1, -1, -1
        which = -1
        for j in range(ks, i - 1):
            if buf[j] == 0x5C:  # an escaped key: the per-line reader compares it
                return -1, -1, -1
        which = _which_key(buf, ks, i - 1, keys, key_ends)
        if which >= 0 and row[TEXT + 2 * which] != -1:  # a field twice
            return -1, -1, -1
        i = _skip_ws(buf, i, ws)
        if buf[i] != 0x3A:  # :
            return -1, -1, -1
        i = _skip_ws(buf, i + 1, ws)
        c = buf[i]
        if c == 0x22:
            if which == 0:
                s = t
                i, t = _string(buf, i + 1, texts, t, True, special, escapes, hexes)
            elif which > 0:
                s = m
                i, m = _string(buf, i + 1, misc, m, True, special, escapes, hexes)
            else:
                s = m
                i, _ = _string(buf, i + 1, misc, m, False, special, escapes, hexes)
            if i < 0:
                return -1, -1, -1
            if which >= 0:
                row[TEXT + 2 * which] = s
                row[TEXT + 2 * which + 1] = t if which == 0 else m
        else:
            if which == 0:  # a text that is not a string
                return -1, -1, -1
            if c == 0x74:
                i = _literal(buf, i, true)
            elif c == 0x66:
                i = _literal(buf, i, false)
            elif c == 0x6E:
                i = _literal(buf, i, null)
            elif c == 0x2D or 0x30 <= c <= 0x39:
                i = _number(buf, i)
            else:  # an array, an object, or not JSON
                return -1, -1, -1
            if i < 0 or (which == 1 and c != 0x6E):  # an id that is not a string or null
                return -1, -1, -1
            if which >= 0:  # (absent, but seen: a second one is a duplicate)
                row[TEXT + 2 * which] = -2
        i = _skip_ws(buf, i, ws)
        if buf[i] == 0x2C:  # ,
            i = _skip_ws(buf, i + 1, ws)
            continue
        if buf[i] != 0x7D:  # }
            return -1, -1, -1
        break
    end = _skip_ws(buf, i + 1, ws)
    if buf[end] != 0x0A:
        return -1, -1, -1
    n = row[TEXT_END] - row[TEXT]
    if row[TEXT] < 0 or n == 0 or n > max_text:
        return -1, -1, -1
    for k in range(ID, 11, 2):
        if row[k] == -2:
            row[k] = -1
    return t, m, end


@njit(cache=True, nogil=True)
def scan_run(buf, at, last, keys, key_ends, max_text, tables):  # noqa: ANN001, ANN201
    """The first MAX_LINES lines (at most) of buf[at:last + 1] (buf[last] a newline): (rows,
    texts, misc), one row per line (its START and END in buf, its STATUS, and for a taken line
    its fields' spans in `texts` (the text) and `misc` (id, source, lang)); the next call starts
    after the last row's END. The texts of consecutive taken lines are contiguous in `texts`."""
    rows = np.empty((min(MAX_LINES, last + 1 - at), COLUMNS), dtype=np.int64)
    texts = np.empty(last + 1 - at, dtype=np.uint8)
    misc = np.empty(last + 1 - at, dtype=np.uint8)
    t = m = 0
    i = at
    n = 0
    while n < rows.shape[0] and i <= last:
        r = n
        n += 1
        row = rows[r]
        nt, nm, e = _line(buf, i, keys, key_ends, max_text, texts, t, misc, m, row, tables)
        if nt < 0:
            row[STATUS] = SLOW
            e = i
            while buf[e] != 0x0A:
                e += 1
        else:
            row[STATUS] = 0
            t, m = nt, nm
        row[START], row[END] = i, e
        i = e + 1
    return rows[:n], texts[:t], misc[:m]


TABLES = (_WS, _SPECIAL, _ESCAPES, _HEX, _TRUE, _FALSE, _NULL)


@njit(cache=True, nogil=True)
def char_counts(data, offsets):  # noqa: ANN001, ANN201
    """The characters of each text data[offsets[i]:offsets[i + 1]] (valid UTF-8): its bytes that
    are not continuation bytes."""
    n = offsets.shape[0] - 1
    chars = np.empty(n, dtype=np.int64)
    for d in range(n):
        c = np.uint64(0)
        for k in range(np.uint64(offsets[d]), np.uint64(offsets[d + 1])):  # (unsigned: vectorized)
            c += np.uint64((data[k] & 0xC0) != 0x80)
        chars[d] = c
    return chars
