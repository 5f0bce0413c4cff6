"""Canonical encoding of byte strings: a byte trie over token bytes and a cached encoder.

docs/algorithms.md section 4 ("Byte-token conversion"): the trie finds the tokens that start with
a byte string (a subtree, not a vocabulary scan); `ByteCodec` computes enc(x) for byte strings x,
and the encodings of x that more text can follow (`heads`); `cover_encodings` lists x's covers.

Byte strings that are not valid UTF-8 (a prefix cut inside a character) are encoded with the
tokenizer's `encode_bytes` when it declares that capability (`supports_encode_bytes`); for any
other tokenizer such a byte string has no encoding, so no split point and no canonical encoding
ends there (see docs/byte_token.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from tokenizers_impl.base import TokenizerBase

NO_BYTE = -1  # "the token ends here" in the byte-at-depth arrays
# Continuations tried after a string to find the encodings of it that can be followed by more text
# (pre-tokenizers look ahead: GPT-2's regex splits "\n\n" as one token at the end of a text but as
# "\n", "\n" before a letter). One per character class a pre-tokenizer tells apart.
PROBES = ("a", "0", ".", "中", "\u4dc0")


class TokenTrie:
    """Byte trie over token bytes stored as the tokens sorted by their bytes.

    The subtree of a byte string is a contiguous range of the sorted order, narrowed one byte at a
    time by binary search on a padded [tokens, max_len] byte matrix. Special tokens and tokens with
    no bytes are left out: they never occur inside a document's encoding.
    """

    def __init__(self, tokenizer: TokenizerBase):
        vocab = tokenizer.vocab_size
        table = [tokenizer.token_bytes(i) for i in range(vocab)]
        excluded = set(tokenizer.special_ids)
        excluded.update(i for i in (tokenizer.eos_id, tokenizer.bos_id) if i is not None)
        usable = [i for i in range(vocab) if table[i] and i not in excluded]
        usable.sort(key=lambda i: table[i])
        self.table = table
        self.usable = np.zeros(vocab, dtype=bool)
        self.usable[usable] = True
        self.ids = np.array(usable, dtype=np.int64)
        self.max_len = max((len(table[i]) for i in usable), default=0)
        self.matrix = np.full((len(usable), self.max_len + 1), NO_BYTE, dtype=np.int16)
        for row, i in enumerate(usable):
            self.matrix[row, : len(table[i])] = np.frombuffer(table[i], dtype=np.uint8)
        self._ranges: dict[bytes, tuple[int, int]] = {}
        self.lengths = np.array([len(b) for b in table], dtype=np.int64)
        self.first_byte = np.full(vocab, NO_BYTE, dtype=np.int16)
        self.first_byte[self.ids] = self.matrix[:, 0]

    def range(self, prefix: bytes) -> tuple[int, int]:
        """[lo, hi) of the sorted tokens whose bytes start with `prefix` (the prefix's subtree)."""
        hit = self._ranges.get(prefix)
        if hit is None:
            if len(self._ranges) > 1 << 16:
                self._ranges.clear()
            hit = self._ranges[prefix] = self._walk(prefix)
        return hit

    def _walk(self, prefix: bytes) -> tuple[int, int]:
        lo, hi = 0, len(self.ids)
        for depth, byte in enumerate(prefix[: self.max_len + 1]):
            column = self.matrix[lo:hi, depth]
            lo, hi = (
                lo + int(np.searchsorted(column, byte, "left")),
                lo + int(np.searchsorted(column, byte, "right")),
            )
            if lo == hi:
                break
        return (lo, hi) if len(prefix) <= self.max_len else (0, 0)

    def lookup(self, rest: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the tokens starting with `rest`, and each one's byte after `rest` (NO_BYTE: none)."""
        lo, hi = self.range(rest)
        return self.ids[lo:hi], self.matrix[lo:hi, min(len(rest), self.max_len)]


class VocabScan:
    """The same lookups as `TokenTrie` by scanning the whole vocabulary (benchmark baseline).

    Scans in the trie's sorted order so that both return identical arrays.
    """

    def __init__(self, trie: TokenTrie):
        self.table = trie.table
        self.order = trie.ids.tolist()

    def lookup(self, rest: bytes) -> tuple[np.ndarray, np.ndarray]:
        depth = len(rest)
        ids, after = [], []
        for i in self.order:
            token = self.table[i]
            if token.startswith(rest):
                ids.append(i)
                after.append(token[depth] if len(token) > depth else NO_BYTE)
        return np.array(ids, dtype=np.int64), np.array(after, dtype=np.int16)


class ByteCodec:
    """Canonical encoding of byte strings for one tokenizer, with a cache (built once, see `codec`)."""

    def __init__(self, tokenizer: TokenizerBase, cache_size: int = 1 << 16):
        self.tokenizer = tokenizer
        self.trie = TokenTrie(tokenizer)
        self.scan = VocabScan(self.trie)
        self._cache: OrderedDict[bytes, tuple[int, ...] | None] = OrderedDict()
        self._cache_size = cache_size
        self._raw = tokenizer.supports_encode_bytes  # encode every byte string with encode_bytes
        self._heads: dict[bytes, tuple[tuple[int, ...], ...]] = {}

    def encode(self, data: bytes) -> tuple[int, ...] | None:
        """enc(data), or None when this tokenizer cannot encode these bytes (not UTF-8)."""
        hit = self._cache.get(data, False)
        if hit is not False:
            self._cache.move_to_end(data)
            return hit
        result = self._encode_many([data])[0]
        self._remember(data, result)
        return result

    def encode_many(self, items: Sequence[bytes]) -> list[tuple[int, ...] | None]:
        """enc of many byte strings with one batched tokenizer call (results not cached)."""
        return self._encode_many(items)

    def heads(self, data: bytes) -> tuple[tuple[int, ...], ...]:
        """The prefix-canonical encodings of `data`: enc(data) and every token prefix of
        enc(data + probe) that decodes to exactly `data` (enc(data) first)."""
        hit = self._heads.get(data)
        if hit is None:
            hit = self.heads_many([data])[0]
            self._heads[data] = hit
            if len(self._heads) > self._cache_size:
                self._heads.pop(next(iter(self._heads)))
        return hit

    def heads_many(self, items: Sequence[bytes]) -> list[tuple[tuple[int, ...], ...]]:
        """`heads` of each item (with batched tokenizer calls; not cached)."""
        probes = [p.encode("utf-8") for p in PROBES]
        texts, owner = [], []
        for k, data in enumerate(items):
            texts.append(data)
            owner.append(k)
            for completed in _completions(data):
                texts += [completed] + [completed + p for p in probes]
                owner += [k] * (len(probes) + 1)
        found: list[dict[tuple[int, ...], None]] = [{} for _ in items]
        lengths = self.trie.lengths
        for k, ids in zip(owner, self._encode_many(texts), strict=True):
            if ids is None:
                continue
            ends = np.cumsum(lengths[list(ids)]) if ids else np.zeros(0, dtype=np.int64)
            cut = int(np.searchsorted(ends, len(items[k])))
            if len(items[k]) == 0:
                found[k][()] = None
            elif cut < len(ids) and ends[cut] == len(items[k]):
                found[k][ids[: cut + 1]] = None
        return [tuple(f) for f in found]

    def allowed_next(self, context: tuple[int, ...], ids: list[int]) -> np.ndarray:
        """For each token u of `ids`: is context + [u] a prefix-canonical encoding?"""
        head = self.decode(context)
        table = self.trie.table
        items = [head + table[u] for u in ids]
        keep = np.array(
            [e == (*context, u) for e, u in zip(self._encode_many(items), ids, strict=True)],
            dtype=bool,
        )
        rest = np.flatnonzero(~keep)
        if len(rest):
            heads = self.heads_many([items[r] for r in rest])
            for r, options in zip(rest.tolist(), heads, strict=True):
                keep[r] = (*context, ids[r]) in options
        return keep

    def _encode_many(self, items: Sequence[bytes]) -> list[tuple[int, ...] | None]:
        if self._raw:
            return [self._encode_raw(data) for data in items]
        out: list[tuple[int, ...] | None] = [None] * len(items)
        texts, where = [], []
        for k, data in enumerate(items):
            try:
                texts.append(data.decode("utf-8"))
                where.append(k)
            except UnicodeDecodeError:
                pass  # not UTF-8: no encoding without the encode_bytes capability
        if texts:
            for k, ids in zip(where, self.tokenizer.encode_batch(texts), strict=True):
                out[k] = tuple(ids.tolist())
        return out

    def _encode_raw(self, data: bytes) -> tuple[int, ...] | None:
        try:
            return tuple(int(i) for i in self.tokenizer.encode_bytes(data))
        except ValueError:  # bytes with no encoding (e.g. outside the tokenizer's alphabet)
            return None

    def _remember(self, data: bytes, result: tuple[int, ...] | None) -> None:
        self._cache[data] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def decode(self, ids: Sequence[int]) -> bytes:
        table = self.trie.table
        return b"".join(table[i] for i in ids)

    def split_points(self, x: bytes) -> list[int]:
        """Positions i whose suffix x[i:] can still start a token (|x| - i <= longest token)."""
        return list(range(max(0, len(x) - self.trie.max_len), len(x)))


def _completions(data: bytes) -> list[bytes]:
    """`data` itself when it is UTF-8; when it ends inside a character, that character completed
    with the lowest and the highest continuation bytes; else nothing."""
    try:
        data.decode("utf-8")
        return [data]
    except UnicodeDecodeError as exc:
        if exc.end != len(data) or exc.reason != "unexpected end of data":
            return []
        lead = data[exc.start]
        need = (2 if lead < 0xE0 else 3 if lead < 0xF0 else 4) - (len(data) - exc.start)
        return [c for c in (data + b"\x80" * need, data + b"\xbf" * need) if _is_utf8(c)]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CODECS: dict[int, tuple[TokenizerBase, ByteCodec]] = {}


def codec(tokenizer: TokenizerBase) -> ByteCodec:
    """The cached `ByteCodec` (trie, first-byte index, encode cache) of a tokenizer object."""
    entry = _CODECS.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, ByteCodec(tokenizer))
        _CODECS[id(tokenizer)] = entry
    return entry[1]


def is_canonical(tokenizer: TokenizerBase, ids: Sequence[int]) -> bool:
    """enc(dec(ids)) == ids."""
    c = codec(tokenizer)
    ids = tuple(int(i) for i in ids)
    return c.encode(c.decode(ids)) == ids


def cover_encodings(
    tokenizer: TokenizerBase, x: bytes, index: str = "trie"
) -> list[tuple[int, ...]]:
    """All cover encodings of `x`: h + [t] with h an encoding of x[:i] that more text can follow
    (see `ByteCodec.heads`), t a token starting with x[i:], and h + [t] prefix-canonical: the
    encoding of its own bytes, or (as `ByteCodec.allowed_next` decides for the model) a token
    prefix of the encoding of longer text. The lemma sums over exactly these: with a lookahead
    pre-tokenizer (GPT-2's `\\s+(?!\\S)`), "a\\n\\n" encodes as [a, "\\n\\n"] but starts
    "a\\n\\n中" as [a, "\\n", "\\n"], and both are covers.

    Split points range over the last `max token length` bytes (a cover's last token holds x[i:]);
    this contains the split points of x's last pre-token for every plugin, with no pre-tokenizer
    knowledge needed.
    """
    if not x:
        return [()]
    c = codec(tokenizer)
    lookup = (c.trie if index == "trie" else c.scan).lookup
    candidates: list[tuple[int, ...]] = []
    for i in c.split_points(x):
        ids, _ = lookup(x[i:])
        for head in c.heads(x[:i]):
            candidates.extend(head + (int(u),) for u in ids)
    decoded = [c.decode(t) for t in candidates]
    keep = [e == t for t, e in zip(candidates, c.encode_many(decoded), strict=True)]
    rest = [k for k, ok in enumerate(keep) if not ok]
    for k, options in zip(rest, c.heads_many([decoded[k] for k in rest]), strict=True):
        keep[k] = candidates[k] in options
    return sorted(t for t, ok in zip(candidates, keep, strict=True) if ok)
