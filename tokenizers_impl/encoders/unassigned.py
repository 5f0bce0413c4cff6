"""Texts a backend with newer Unicode tables than the reference's may split differently.

gigatoken knows Unicode 17: it takes characters added since (U+088F, the digits U+11DE0-11DE9, the
marks U+1ACF-1ADD, ...) for letters, digits and marks, where `tokenizers` and tiktoken (the
references) take them for unassigned code points. Its pre-tokens then differ around them
(`"\\u088f's"`: `X` + `'s` against `X'` + `s`), and so do the ids, with no error: the load-time gate
passed and the run's sampled verification rarely meets such a text. `Guarded` encodes every text
holding a code point unassigned in Python's own Unicode database (an older version than either
library's, so a superset of where the two can differ) with the reference, and the rest with the
fast backend: exact, at the cost of a scan of the non-ASCII texts (a table lookup per character)."""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenizers_impl.encoders.base import Encoder
from tokenizers_impl.texts import Utf8Texts, as_str_list, utf8_of

_BMP: np.ndarray | None = None
_BUILT = threading.Lock()
_ASTRAL: dict[int, bool] = {}  # code point above U+FFFF -> unassigned (asked once each)
UNASSIGNED, SURROGATE = 1, 2  # a UTF-16 code unit's mark in the BMP table


def bmp_marks() -> np.ndarray:
    """uint8 per UTF-16 code unit: UNASSIGNED where Python's Unicode database has no character
    (category Cn), SURROGATE for the units of a pair (a code point above U+FFFF: looked up on
    its own), else 0. Built once per process (65,536 lookups)."""
    global _BMP
    with _BUILT:
        if _BMP is None:
            category = unicodedata.category
            marks = np.array([category(chr(cp)) == "Cn" for cp in range(0x10000)], dtype=np.uint8)
            marks[0xD800:0xE000] = SURROGATE
            _BMP = marks
    return _BMP


_BMP_UNASSIGNED: np.ndarray | None = None


def _bmp_unassigned() -> np.ndarray:
    """bool per code point up to U+FFFF, and False at index 0x10000 (what the code points above
    are clipped to): True where `bmp_marks` says UNASSIGNED."""
    global _BMP_UNASSIGNED
    if _BMP_UNASSIGNED is None:
        _BMP_UNASSIGNED = np.append(bmp_marks() == UNASSIGNED, False)
    return _BMP_UNASSIGNED


def _astral_unassigned(cp: int) -> bool:
    found = _ASTRAL.get(cp)
    if found is None:
        found = _ASTRAL[cp] = unicodedata.category(chr(cp)) == "Cn"
    return found


def _latin1(text: str) -> bool:
    """Whether every character is below U+0100 (all assigned): ASCII at once, others by a Latin-1
    encoding (a copy of a one-byte string; a wider one fails at its first wide character)."""
    if text.isascii():
        return True
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


KERNEL_UNITS = 1 << 16  # from this many characters of non-ASCII texts, the compiled pass


def risky_texts(texts: Sequence[str]) -> list[int]:
    """Indices of the texts holding a code point Python's Unicode database does not assign.
    ASCII texts are skipped. Big batches are scanned in one compiled pass over the other texts'
    UTF-8 bytes (plain ASCII runs 8 bytes a step, a table lookup per other character); small ones
    with numpy: Latin-1 texts skipped, the rest first as UTF-16 code units against a 64 KB table
    (stopping at the first mark), and only when that finds one (an unassigned character, or one
    above U+FFFF such as an emoji) as code points. Either way the distinct code points above
    U+FFFF are then looked up one by one. Texts held as UTF-8 (Utf8Texts) are scanned in place,
    ASCII texts and all, when they are big enough for the compiled pass."""
    utf8 = utf8_of(texts)
    if utf8 is not None:
        if utf8[1][0] or int(utf8[1][-1]) < KERNEL_UNITS:  # (a view, or small: as str)
            return risky_texts(list(texts))
        from tokenizers_impl.encoders.scankernel import scan_utf8

        data, offsets = utf8
        found = scan_utf8(data, data.view(np.uint64), offsets[1:], _bmp_unassigned())
        return _risky(list(range(len(texts))), *found)
    wide = [i for i, text in enumerate(texts) if not text.isascii()]
    if not wide:
        return []
    if sum(len(texts[i]) for i in wide) >= KERNEL_UNITS:
        risky, astral, owner = _scan_utf8([texts[i] for i in wide])
    else:
        wide = [i for i in wide if not _latin1(texts[i])]
        if not wide:
            return []
        found = _scan_small([texts[i] for i in wide])
        if found is None:  # the usual answer, from the cheapest pass
            return []
        risky, astral, owner = found
    return _risky(wide, risky, astral, owner)


def _risky(wide: list[int], risky: np.ndarray, astral: np.ndarray, owner: np.ndarray) -> list[int]:
    """The indices (`wide[k]`) of the scanned texts with an unassigned code point: those the scan
    marked, and those holding an astral code point that is unassigned."""
    if len(astral):
        unknown = [int(cp) for cp in np.unique(astral) if _astral_unassigned(int(cp))]
        if unknown:
            risky[owner[np.isin(astral, unknown)]] = True
    return [wide[k] for k in np.flatnonzero(risky).tolist()]


def _scan_utf8(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per text: a BMP code point unassigned; the code points above U+FFFF; the text of each)
    from one compiled pass: over the texts' UTF-8 bytes (cached in them once a fast backend has
    encoded them: copies, not encodes) when most characters are ASCII, which goes 8 bytes a
    step; over their UTF-16 code units (one table lookup each) when other characters are
    frequent, where UTF-8's branch per character costs more."""
    from tokenizers_impl.encoders.scankernel import scan_utf8, scan_utf16

    parts = [text.encode("utf-8", "surrogatepass") for text in texts]
    ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))
    # (a lone surrogate: in UTF-16 a high one and a low one after it spell a character above
    # U+FFFF, which they are not; UTF-8 keeps them apart)
    if ends[-1] > DENSE * sum(map(len, texts)) and not any(map(_has_surrogate, parts)):
        parts = [text.encode("utf-16-le", "surrogatepass") for text in texts]
        ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)) // 2)
        return scan_utf16(np.frombuffer(b"".join(parts), np.uint16), ends, bmp_marks())
    pad = b"\x00" * (-int(ends[-1]) % 8)  # (NUL: ASCII, past every text's end)
    array = np.frombuffer(b"".join([*parts, pad]), np.uint8)
    return scan_utf8(array, array.view(np.uint64), ends, _bmp_unassigned())


_SURROGATE = re.compile(b"\xed[\xa0-\xbf]")  # a surrogate's UTF-8 (surrogatepass) lead bytes


def _has_surrogate(data: bytes) -> bool:
    return data.find(b"\xed") >= 0 and _SURROGATE.search(data) is not None  # (find: memchr)


DENSE = 1.25  # UTF-8 bytes per character from which the UTF-16 scan is the faster


def _scan_small(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`_scan_utf8`'s answer with numpy, or None when no text has a mark at all."""
    joined = "\x00".join(texts)  # (NUL is assigned: never marked)
    units = np.frombuffer(joined.encode("utf-16-le", "surrogatepass"), np.uint16)
    if not bmp_marks()[units].any():
        return None
    # a mark: an unassigned character, or one above U+FFFF (an emoji, say). In code points
    # (UTF-32) each text's span is its length: a hit maps to its text at once
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
    ends = np.cumsum(np.fromiter((len(text) + 1 for text in texts), np.int64, len(texts)))
    position = np.flatnonzero(_bmp_unassigned()[np.minimum(points, 0x10000)])
    risky = np.zeros(len(texts), dtype=bool)
    risky[np.searchsorted(ends, position, side="right")] = True
    above = np.flatnonzero(points > 0xFFFF)
    return risky, points[above], np.searchsorted(ends, above, side="right")


class Guarded(Encoder):
    """`fast` for texts without an unassigned code point, `reference` for the others (same flat
    output as the reference's on every text where `fast` is exact on assigned characters). Named
    and versioned as `fast`; pickles as its two encoders."""

    def __init__(self, fast: Encoder, reference: Encoder):
        self.fast, self.reference = fast, reference
        self.name, self.version = fast.name, fast.version
        self.takes_utf8 = fast.takes_utf8
        self.routed = 0  # texts the reference encoded

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text through `fast` first, then the scan (its UTF-8 encodes are copies then: the
        fast backends' bindings leave each text's UTF-8 cached in it); the tokens of the texts
        the scan marks are replaced by the reference's."""
        if not (self.takes_utf8 and isinstance(texts, Utf8Texts)):
            texts = as_str_list(texts)
        fast_flat, fast_offsets = self.fast.encode_flat(texts)
        risky = risky_texts(texts)
        if not risky:
            return fast_flat, fast_offsets
        self.routed += len(risky)
        marked = np.zeros(len(texts), dtype=bool)
        marked[risky] = True
        ref_flat, ref_offsets = self.reference.encode_flat([texts[i] for i in risky])
        fast_lengths = np.diff(fast_offsets).astype(np.int64)
        lengths = fast_lengths.copy()
        lengths[marked] = np.diff(ref_offsets)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # both parts keep their texts' order: each fills its texts' token positions in turn
        from_reference = np.repeat(marked, lengths)
        kept = fast_flat[fast_offsets[0] : fast_offsets[-1]][np.repeat(~marked, fast_lengths)]
        flat = np.empty(int(offsets[-1]), dtype=np.uint32)
        flat[~from_reference] = kept
        flat[from_reference] = ref_flat[ref_offsets[0] : ref_offsets[-1]]
        return flat, offsets

    def __getattr__(self, name: str) -> Any:  # the fast backend's own attributes (e.g. resets)
        if name in ("fast", "reference"):
            raise AttributeError(name)
        return getattr(self.fast, name)
