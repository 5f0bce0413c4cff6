"""Token models for byte-token conversion: the protocol, an LRU-cached wrapper, the canonical
wrapper the lemma assumes, and the memoised scorer of token prefixes (docs/byte_token.md,
"Token model protocol")."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from tokenizers_impl.base import TokenizerBase
from tokenizers_impl.byte_token.codec import codec


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
    (`ByteCodec.heads`); end-of-text only when the context is the encoding of its own bytes (a
    tokenizer that cannot encode raw bytes keeps it always); the row is renormalised. (Before
    session 12 end-of-text was always kept, so a context such as [' ', ' '] that more text can
    follow but that is not how "  " is encoded put mass on a complete non-canonical sequence:
    byte_prob(x, end=True) of a text ending in whitespace was the sum over several encodings.)

    The byte-token lemma assumes the model puts no mass on non-canonical encodings; wrapped this way
    any model satisfies it exactly, so next-byte distributions chain exactly (P(xb) = P(x) P(b|x)).
    Costs one batched encode of `vocab_size` candidate strings per new context, plus the probes for
    the candidates that are not canonical as they stand (cached per context).
    """

    def __init__(self, model: Callable, tokenizer: TokenizerBase, maxsize: int = 4096):
        super().__init__(model, maxsize)
        self.codec = codec(tokenizer)
        self.tokenizer = tokenizer

    def _complete(self, context: tuple[int, ...]) -> bool:
        """Whether the context is the encoding of its own bytes (end-of-text may follow it): for
        every tokenizer, through the codec (bytes that are not UTF-8 have no encoding without
        `encode_bytes`; an end-of-text after them, or after any other context that is not
        enc(dec(context)), gave a non-canonical sequence mass)."""
        if not context:
            return True
        return self.codec.encode(self.codec.decode(context)) == context

    def compute(self, contexts: list[tuple[int, ...]]) -> np.ndarray:
        rows = super().compute(contexts)
        ids = self.codec.trie.ids.tolist()
        for row, context in zip(rows, contexts, strict=True):
            keep = np.zeros(len(row), dtype=bool)
            keep[ids] = self.codec.allowed_next(context, ids)
            keep[-1] = self._complete(context) or not keep.any()
            row[~keep] = -np.inf
            row -= logsumexp(row)
        return rows


def logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    if top == -np.inf:
        return top
    return top + math.log(float(np.sum(np.exp(values - top))))


class Scorer:
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
            self.rebase(common_prefix([self.anchor, t]))
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


def common_prefix(seqs: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    first = min(seqs, key=len)
    for k, token in enumerate(first):
        if any(s[k] != token for s in seqs):
            return first[:k]
    return first
