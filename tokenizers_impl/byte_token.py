"""Byte-token conversion: byte offsets of tokens, cover encodings, and exact next-byte probabilities.

Implements ALGORITHMS.md section 4 (Phan et al. 2024) for any tokenizer that follows the plugin
protocol of `tokenizers_impl.base`, and any token-level model following `TokenModel` below.

Conventions
- A token model is a callable `model(contexts) -> np.ndarray` of next-token log-probabilities with
  shape [len(contexts), vocab_size + 1]; the last column is end-of-text. A context is the list of
  token ids of the document so far (no BOS: the empty list is the start of a document).
- Next-byte distributions are dicts with the 256 int keys 0..255 plus the key `EOT` ("<eot>").
- Byte strings that are not valid UTF-8 (a prefix cut inside a character) are encoded with the
  tokenizer's own `encode_bytes(data)` when it has one, else tiktoken's byte encoder for the `bpe`
  plugin's fast path; for any other tokenizer such a byte string has no encoding, so no split point
  and no canonical encoding ends there (see docs/byte_token.md).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from tokenizers_impl.base import TokenizerBase, fingerprint_of

EOT = "<eot>"  # end-of-text key of every next-byte distribution
NO_BYTE = -1  # "the token ends here" in the byte-at-depth arrays
# Continuations tried after a string to find the encodings of it that can be followed by more text
# (pre-tokenizers look ahead: GPT-2's regex splits "\n\n" as one token at the end of a text but as
# "\n", "\n" before a letter). One per character class a pre-tokenizer tells apart.
PROBES = ("a", "0", ".", "中", "\u4dc0")


class ZeroProbabilityPrefix(ValueError):
    """The model gives probability zero to every cover of the prefix."""

    def __init__(self, prefix: bytes):
        super().__init__(f"prefix {prefix[-40:]!r} (length {len(prefix)}) has probability zero")
        self.prefix = prefix


# -- byte alignment ----------------------------------------------------------------------------


def token_end_offsets(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Byte END offset of every token in the decoded bytes (uint32; exact for lossless tokenizers)."""
    lengths = tokenizer.token_byte_lengths()[np.asarray(ids, dtype=np.int64)]
    return np.cumsum(lengths, dtype=np.uint64).astype(np.uint32)


def byte_span_to_tokens(offsets: np.ndarray, a: int, b: int) -> tuple[int, int]:
    """Smallest token span [i, j) whose bytes cover the byte span [a, b) (empty span: i == j)."""
    total = int(offsets[-1]) if len(offsets) else 0
    if not 0 <= a <= b <= total:
        raise ValueError(f"byte span [{a}, {b}) outside the document's {total} bytes")
    i = int(np.searchsorted(offsets, a, side="right"))
    if a == b:
        return i, i
    return i, int(np.searchsorted(offsets, b, side="left")) + 1


def tokens_to_byte_span(offsets: np.ndarray, i: int, j: int) -> tuple[int, int]:
    """Byte span [a, b) of the tokens [i, j)."""
    if not 0 <= i <= j <= len(offsets):
        raise ValueError(f"token span [{i}, {j}) outside the document's {len(offsets)} tokens")
    a = int(offsets[i - 1]) if i > 0 else 0
    b = int(offsets[j - 1]) if j > 0 else 0
    return a, max(a, b)


# -- token byte index (trie) and canonical encoding ----------------------------------------------


class TokenTrie:
    """Byte trie over token bytes stored as the tokens sorted by their bytes.

    The subtree of a byte string is a contiguous range of the sorted order, narrowed one byte at a
    time by binary search on a padded [tokens, max_len] byte matrix. Special tokens and tokens with
    no bytes are left out: they never occur inside a document's encoding.
    """

    def __init__(self, tokenizer: Any):
        vocab = tokenizer.vocab_size
        table = [tokenizer.token_bytes(i) for i in range(vocab)]
        excluded = set(getattr(tokenizer, "special_ids", ()) or ())
        if getattr(tokenizer, "eos_id", None) is not None:
            excluded.add(tokenizer.eos_id)
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

    def __init__(self, tokenizer: Any, cache_size: int = 1 << 16):
        self.tokenizer = tokenizer
        self.trie = TokenTrie(tokenizer)
        self.scan = VocabScan(self.trie)
        self._cache: OrderedDict[bytes, tuple[int, ...] | None] = OrderedDict()
        self._cache_size = cache_size
        self._own = getattr(tokenizer, "encode_bytes", None)
        self._tiktoken = getattr(tokenizer, "_tiktoken", None)
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
            hit = self._heads_many([data])[0]
            self._heads[data] = hit
            if len(self._heads) > self._cache_size:
                self._heads.pop(next(iter(self._heads)))
        return hit

    def _heads_many(self, items: Sequence[bytes]) -> list[tuple[tuple[int, ...], ...]]:
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
            heads = self._heads_many([items[r] for r in rest])
            for r, options in zip(rest.tolist(), heads, strict=True):
                keep[r] = (*context, ids[r]) in options
        return keep

    def _encode_many(self, items: Sequence[bytes]) -> list[tuple[int, ...] | None]:
        if self._own is not None:
            return [self._own_encode(data) for data in items]
        out: list[tuple[int, ...] | None] = [None] * len(items)
        texts, where = [], []
        for k, data in enumerate(items):
            try:
                texts.append(data.decode("utf-8"))
                where.append(k)
            except UnicodeDecodeError:
                if self._tiktoken is not None:
                    out[k] = tuple(self._tiktoken._encode_bytes(data))
        if texts:
            for k, ids in zip(where, self.tokenizer.encode_batch(texts), strict=True):
                out[k] = tuple(ids.tolist())
        return out

    def _own_encode(self, data: bytes) -> tuple[int, ...] | None:
        try:
            return tuple(int(i) for i in self._own(data))
        except ValueError:  # bytes outside the tokenizer's alphabet
            return None

    def _remember(self, data: bytes, result: tuple[int, ...] | None) -> None:
        self._cache[data] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def decode(self, ids: Sequence[int]) -> bytes:
        table = self.trie.table
        return b"".join(table[i] for i in ids)


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


_CODECS: dict[int, tuple[Any, ByteCodec]] = {}


def codec(tokenizer: Any) -> ByteCodec:
    """The cached `ByteCodec` (trie, first-byte index, encode cache) of a tokenizer object."""
    entry = _CODECS.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, ByteCodec(tokenizer))
        _CODECS[id(tokenizer)] = entry
    return entry[1]


def is_canonical(tokenizer: Any, ids: Sequence[int]) -> bool:
    """enc(dec(ids)) == ids."""
    c = codec(tokenizer)
    ids = tuple(int(i) for i in ids)
    return c.encode(c.decode(ids)) == ids


def _split_points(c: ByteCodec, x: bytes) -> list[int]:
    """Positions i whose suffix x[i:] can still start a token (|x| - i <= longest token)."""
    return list(range(max(0, len(x) - c.trie.max_len), len(x)))


def cover_encodings(tokenizer: Any, x: bytes, index: str = "trie") -> list[tuple[int, ...]]:
    """All canonical cover encodings of `x`: h + [t] with h an encoding of x[:i] that more text
    can follow (see `ByteCodec.heads`), t a token starting with x[i:], and enc(dec(h + [t])) equal
    to h + [t].

    Split points range over the last `max token length` bytes (a cover's last token holds x[i:]);
    this contains the split points of x's last pre-token for every plugin, with no pre-tokenizer
    knowledge needed.
    """
    if not x:
        return [()]
    c = codec(tokenizer)
    lookup = (c.trie if index == "trie" else c.scan).lookup
    candidates: list[tuple[int, ...]] = []
    for i in _split_points(c, x):
        ids, _ = lookup(x[i:])
        for head in c.heads(x[:i]):
            candidates.extend(head + (int(u),) for u in ids)
    encoded = c.encode_many([c.decode(t) for t in candidates])
    return sorted(t for t, e in zip(candidates, encoded, strict=True) if e == t)


# -- token models ---------------------------------------------------------------------------------


class TokenModel(Protocol):
    """Next-token log-probabilities [len(contexts), vocab_size + 1]; last column = end-of-text."""

    def __call__(self, contexts: Sequence[Sequence[int]]) -> np.ndarray: ...


class CachedModel:
    """A token model with an LRU cache of rows keyed by context (one model call per new context)."""

    def __init__(self, model: Callable[[Sequence[Sequence[int]]], np.ndarray], maxsize: int = 4096):
        self.model = model
        self.maxsize = maxsize
        self.calls = 0
        self._rows: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    def __call__(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        keys = [tuple(int(i) for i in c) for c in contexts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            self.calls += 1
            rows = self.compute(missing)
            for k, row in zip(missing, rows, strict=True):
                self._rows[k] = row
        out = np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, 0))
        for k in keys:
            self._rows.move_to_end(k)
        while len(self._rows) > self.maxsize:
            self._rows.popitem(last=False)
        return out

    def compute(self, contexts: list[tuple[int, ...]]) -> np.ndarray:
        return np.asarray(self.model([list(c) for c in contexts]), dtype=np.float64)


class CanonicalModel(CachedModel):
    """`model` conditioned on prefix-canonical token sequences: the next token t is kept only when
    context + [t] is one of the encodings of its bytes that more text can follow
    (`ByteCodec.heads`); end-of-text is always kept; the row is renormalised.

    The byte-token lemma assumes the model puts no mass on non-canonical encodings; wrapped this way
    any model satisfies it exactly, so next-byte distributions chain exactly (P(xb) = P(x) P(b|x)).
    Costs one batched encode of `vocab_size` candidate strings per new context, plus the probes for
    the candidates that are not canonical as they stand (cached per context).
    """

    def __init__(self, model: Callable, tokenizer: Any, maxsize: int = 4096):
        super().__init__(model, maxsize)
        self.codec = codec(tokenizer)

    def compute(self, contexts: list[tuple[int, ...]]) -> np.ndarray:
        rows = super().compute(contexts)
        ids = self.codec.trie.ids.tolist()
        for row, context in zip(rows, contexts, strict=True):
            keep = np.zeros(len(row), dtype=bool)
            keep[-1] = True
            keep[ids] = self.codec.allowed_next(context, ids)
            row[~keep] = -np.inf
            row -= _logsumexp(row)
        return rows


def _logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    if top == -np.inf:
        return top
    return top + math.log(float(np.sum(np.exp(values - top))))


class _Scorer:
    """log P(token stream starts with t) relative to a fixed anchor prefix, memoised."""

    def __init__(self, model: Callable, anchor: tuple[int, ...] = ()):
        self.model = model if isinstance(model, CachedModel) else CachedModel(model)
        self.anchor = anchor
        self._logq: dict[tuple[int, ...], float] = {anchor: 0.0}

    def row(self, context: tuple[int, ...]) -> np.ndarray:
        return self.model([context])[0]

    def logq(self, t: tuple[int, ...]) -> float:
        """log P(t | anchor); moves the anchor back first when t does not extend it."""
        if t in self._logq:
            return self._logq[t]
        if t[: len(self.anchor)] != self.anchor:
            self.rebase(_common_prefix([self.anchor, t]))
        k = len(t)
        while t[:k] not in self._logq:
            k -= 1
        rows = self.model([t[:j] for j in range(k, len(t))])
        total = self._logq[t[:k]]
        for j, row in zip(range(k, len(t)), rows, strict=True):
            total += float(row[t[j]])
            self._logq[t[: j + 1]] = total
        return total

    def rebase(self, anchor: tuple[int, ...]) -> None:
        """Move the anchor back to a prefix of itself, shifting every memoised value."""
        old_anchor, old = self.anchor, self._logq
        self.anchor, self._logq = anchor, {anchor: 0.0}
        delta = self.logq(old_anchor)
        for t, value in old.items():
            self._logq.setdefault(t, value + delta)


def _common_prefix(seqs: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    first = min(seqs, key=len)
    for k, token in enumerate(first):
        if any(s[k] != token for s in seqs):
            return first[:k]
    return first


# -- the lemma: byte-level state, distributions, probabilities -----------------------------------


class ByteState:
    """Next-byte distribution after a byte prefix x, updated byte by byte.

    Holds the cover groups (split point i, an encoding h of x[:i] that text can follow) whose
    tokens can still contain x[i:], and the encodings of x itself (`ByteCodec.heads`).
    `advance(b)` keeps the groups whose tokens continue with b and adds (|x|, h) for every encoding
    h of x; the result equals building the state from scratch for x + b.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: Callable,
        prefix: bytes = b"",
        index: str = "trie",
        scorer: _Scorer | None = None,
    ):
        self.codec = codec(tokenizer)
        self.index = self.codec.trie if index == "trie" else self.codec.scan
        self.prefix = bytes(prefix)
        self.groups: list[tuple[int, tuple[int, ...]]] = []
        for i in _split_points(self.codec, self.prefix):
            if len(self.index.lookup(self.prefix[i:])[0]):
                self.groups += [(i, h) for h in self.codec.heads(self.prefix[:i])]
        self.exact = self.codec.heads(self.prefix)
        anchor = _common_prefix([h for _, h in self.groups] + list(self.exact) or [()])
        self.scorer = scorer or _Scorer(model, anchor)
        self._masses: tuple[np.ndarray, float] | None = None

    def advance(self, byte: int) -> None:
        """Append one byte (0-255) to the prefix."""
        x = self.prefix + bytes([byte])
        groups = [(i, h) for i, h in self.groups if len(self.index.lookup(x[i:])[0])]
        if len(self.index.lookup(bytes([byte]))[0]):
            groups += [(len(self.prefix), h) for h in self.exact]
        self.prefix, self.groups, self.exact = x, groups, self.codec.heads(x)
        self._masses = None

    def _compute(self) -> tuple[np.ndarray, float]:
        """(masses of the 257 outcomes scaled by exp(-shift), log P(prefix) from the covers)."""
        logs, bins, cover_logs = [], [], []
        x, trie, exact = self.prefix, self.codec.trie, set(self.exact)
        for i, head in self.groups:
            ids, after = self.index.lookup(x[i:])
            row = self.scorer.row(head)
            base = self.scorer.logq(head)
            longer = after != NO_BYTE
            values = base + row[ids[longer]]
            logs.append(values)
            bins.append(after[longer].astype(np.int64))
            cover_logs.append(values)
            ending = [u for u in ids[~longer].tolist() if head + (u,) in exact]
            cover_logs.append(base + row[ending])  # covers ending exactly at |x|
        for head in self.exact:  # each continues with any token, or ends the text
            base = self.scorer.logq(head)
            row = self.scorer.row(head)
            logs += [base + row[trie.ids], np.array([base + row[-1]])]
            bins += [trie.first_byte[trie.ids].astype(np.int64), np.array([256])]
        if not x:
            cover_logs.append(np.zeros(1))
        values = np.concatenate(logs) if logs else np.zeros(0)
        shift = float(np.max(values)) if len(values) else -np.inf
        if shift == -np.inf:
            raise ZeroProbabilityPrefix(x)
        masses = np.bincount(np.concatenate(bins), weights=np.exp(values - shift), minlength=257)
        return masses, _logsumexp(np.concatenate(cover_logs))

    def probabilities(self) -> np.ndarray:
        """P(next byte | prefix) as 257 floats: bytes 0..255, then end-of-text; sums to 1."""
        if self._masses is None:
            self._masses = self._compute()
        masses = self._masses[0]
        return masses / masses.sum()

    def distribution(self) -> dict[int | str, float]:
        """P(next byte | prefix) for bytes 0..255 and `EOT`; sums to 1."""
        return _as_dict(self.probabilities())

    def log_prefix_probability(self) -> float:
        """log P(prefix) by the lemma, relative to the scorer's anchor (absolute when anchor = ())."""
        if self._masses is None:
            self._masses = self._compute()
        return self._masses[1]


def next_byte_distribution(
    tokenizer: Any, model: Callable, prefix: bytes, index: str = "trie"
) -> dict[int | str, float]:
    """Exact P(next byte | prefix) by the Byte-Token Representation Lemma: keys 0..255 and `EOT`.

    Exact when the model is canonical (`CanonicalModel(model, tokenizer)` makes any model so); with a
    raw model the masses of the covers are normalised to sum to 1.
    """
    return ByteState(tokenizer, model, prefix, index=index).distribution()


def byte_prob(tokenizer: Any, model: Callable, x: bytes, end: bool = False) -> float:
    """P(a document starts with x) = sum over cover encodings t of P(t) (the lemma).

    With end=True: P(the document is exactly x), i.e. P(x) * P(EOT | x).
    """
    return math.exp(log_byte_prob(tokenizer, model, x, end=end))


def log_byte_prob(tokenizer: Any, model: Callable, x: bytes, end: bool = False) -> float:
    """log of `byte_prob` (-inf for probability zero)."""
    state = ByteState(tokenizer, model, x, scorer=_Scorer(model, ()))
    if end:
        scorer = state.scorer
        ends = [scorer.logq(h) + float(scorer.row(h)[-1]) for h in state.exact]
        return _logsumexp(np.array(ends)) if ends else -math.inf
    try:
        return state.log_prefix_probability()
    except ZeroProbabilityPrefix:
        return -math.inf


# -- baselines -----------------------------------------------------------------------------------


def naive_next_byte_distribution(
    tokenizer: Any, model: Callable, prompt: bytes
) -> dict[int | str, float]:
    """Naive prompting: encode the prompt, read the next token's first byte (tokenization bias)."""
    c = codec(tokenizer)
    context = c.encode(prompt)
    if context is None:
        raise ValueError(f"the tokenizer cannot encode the prompt {prompt[-20:]!r}")
    row = np.asarray(model([list(context)])[0], dtype=np.float64)
    return _group_by_first_byte(c.trie, row)


def token_healing_distribution(
    tokenizer: Any, model: Callable, prompt: bytes
) -> dict[int | str, float]:
    """Token healing: back up the prompt's last token, constrain the next one to start with its bytes.

    When the chosen token is exactly the removed bytes, the byte after it comes from the next token
    (one further model call), so the result is a full next-byte distribution.
    """
    c = codec(tokenizer)
    encoded = c.encode(prompt)
    if encoded is None:
        raise ValueError(f"the tokenizer cannot encode the prompt {prompt[-20:]!r}")
    if not encoded:
        return naive_next_byte_distribution(tokenizer, model, prompt)
    context, removed = encoded[:-1], c.trie.table[encoded[-1]]
    row = np.asarray(model([list(context)])[0], dtype=np.float64)
    ids, after = c.trie.lookup(removed)
    weights = np.exp(row[ids] - np.max(row[ids]))
    masses = np.bincount(
        after[after != NO_BYTE].astype(np.int64), weights=weights[after != NO_BYTE], minlength=257
    )
    exact_weight = float(weights[after == NO_BYTE].sum())
    if exact_weight > 0:
        healed = [*context, int(encoded[-1])]
        nxt = _group_by_first_byte(c.trie, np.asarray(model([healed])[0], dtype=np.float64))
        masses = masses + exact_weight * np.array([nxt[b] for b in range(256)] + [nxt[EOT]])
    total = masses.sum()
    if total <= 0:
        raise ZeroProbabilityPrefix(prompt)
    return {**{b: float(masses[b] / total) for b in range(256)}, EOT: float(masses[256] / total)}


def _as_dict(probs: np.ndarray) -> dict[int | str, float]:
    out: dict[int | str, float] = dict(enumerate(probs[:256].tolist()))
    out[EOT] = float(probs[256])
    return out


def _group_by_first_byte(trie: TokenTrie, row: np.ndarray) -> dict[int | str, float]:
    shift = float(np.max(row))
    weights = np.exp(row - shift)
    masses = np.bincount(
        trie.first_byte[trie.ids].astype(np.int64), weights=weights[trie.ids], minlength=256
    )
    total = masses.sum() + weights[-1]
    out: dict[int | str, float] = {b: float(masses[b] / total) for b in range(256)}
    out[EOT] = float(weights[-1] / total)
    return out


# -- ensembles and generation --------------------------------------------------------------------


def ensemble_next_byte_distribution(
    pairs: Sequence[tuple[Any, Callable]], prefix: bytes, weights: Sequence[float] | None = None
) -> dict[int | str, float]:
    """Weighted average in byte space of several (tokenizer, model) pairs' next-byte distributions."""
    return _mix([ByteState(t, m, prefix).distribution() for t, m in pairs], weights)


def _mix(
    dists: Sequence[dict[int | str, float]], weights: Sequence[float] | None
) -> dict[int | str, float]:
    w = np.ones(len(dists)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return {k: float(sum(wi * d[k] for wi, d in zip(w, dists, strict=True))) for k in dists[0]}


def generate_bytes(
    states: ByteState | Sequence[ByteState],
    max_bytes: int,
    *,
    greedy: bool = True,
    rng: np.random.Generator | None = None,
    weights: Sequence[float] | None = None,
) -> bytes:
    """Generate up to `max_bytes` bytes after the states' common prefix, stopping at end-of-text.

    Several states (different tokenizers and models) generate as a byte-space ensemble. Greedy
    takes the most likely byte; otherwise bytes are sampled with `rng`.
    """
    states = [states] if isinstance(states, ByteState) else list(states)
    rng = rng or np.random.default_rng(0)
    w = np.ones(len(states)) if weights is None else np.asarray(weights, dtype=np.float64)
    out = bytearray()
    for _ in range(max_bytes):
        probs = sum(wi * s.probabilities() for wi, s in zip(w / w.sum(), states, strict=True))
        choice = int(np.argmax(probs)) if greedy else int(rng.choice(257, p=probs / probs.sum()))
        if choice == 256:
            break
        out.append(choice)
        for s in states:
            s.advance(choice)
    return bytes(out)


# -- reference tokenizer ---------------------------------------------------------------------------


class LongestPrefixTokenizer(TokenizerBase):
    """Reference tokenizer over raw bytes: repeatedly take the longest vocabulary token that
    prefixes the rest (every single byte of the input must be in the vocabulary)."""

    kind: ClassVar[str] = "longest-prefix"

    def __init__(self, vocab: Sequence[bytes], name: str = "longest-prefix"):
        self.vocab = [bytes(v) for v in vocab]
        self.name = name
        self.vocab_size = len(self.vocab)
        self.ids = {v: i for i, v in enumerate(self.vocab)}
        self.max_len = max(len(v) for v in self.vocab)
        self.fingerprint = fingerprint_of(self.kind, b"\0".join(self.vocab))

    def encode_bytes(self, data: bytes) -> list[int]:
        ids, pos = [], 0
        while pos < len(data):
            for n in range(min(self.max_len, len(data) - pos), 0, -1):
                token = self.ids.get(data[pos : pos + n])
                if token is not None:
                    ids.append(token)
                    pos += n
                    break
            else:
                raise ValueError(f"byte {data[pos]!r} at offset {pos} is not in the vocabulary")
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array(self.encode_bytes(t.encode("utf-8")), dtype=np.uint32) for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id]

    def save(self, url: str, storage_options: dict | None = None) -> None:
        """A plain JSON file: the vocabulary as hex strings, in id order."""
        import json

        from tokenizers_impl.files import write_file

        payload = {"kind": self.kind, "version": 1, "vocab": [v.hex() for v in self.vocab]}
        write_file(url, json.dumps(payload).encode(), storage_options)

    @classmethod
    def load(cls, path: str, storage_options: dict | None = None, **options: Any):
        from tokenizers_impl.base import TokenizerError
        from tokenizers_impl.files import read_json

        data = read_json(path, storage_options)
        vocab = data.get("vocab") if isinstance(data, dict) else None
        if data.get("kind") != cls.kind or not isinstance(vocab, list) or not vocab:
            raise TokenizerError(f"{path!r} is not a {cls.kind} vocabulary file")
        try:
            return cls([bytes.fromhex(v) for v in vocab], name=options.get("name", cls.kind))
        except (TypeError, ValueError) as exc:
            raise TokenizerError(f"{path!r}: bad vocabulary entry: {exc}") from exc
