"""Next-byte distributions and byte-string probabilities by the Byte-Token Representation Lemma,
the naive-prompting and token-healing baselines, byte-space ensembles and generation
(docs/algorithms.md section 4, "Byte-token conversion")."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from tokenizers_impl.base import TokenizerBase
from tokenizers_impl.byte_token.codec import NO_BYTE, TokenTrie, codec
from tokenizers_impl.byte_token.models import Scorer, common_prefix, logsumexp
from tokenizers_impl.errors import TokenmillError

EOT = "<eot>"  # end-of-text key of every next-byte distribution


class ZeroProbabilityPrefix(TokenmillError, ValueError):
    """The model gives probability zero to every cover of the prefix."""

    def __init__(self, prefix: bytes):
        super().__init__(f"prefix {prefix[-40:]!r} (length {len(prefix)}) has probability zero")
        self.prefix = prefix


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
        tokenizer: TokenizerBase,
        model: Callable,
        prefix: bytes = b"",
        index: str = "trie",
        scorer: Scorer | None = None,
    ):
        self.codec = codec(tokenizer)
        self.index = self.codec.trie if index == "trie" else self.codec.scan
        self.prefix = bytes(prefix)
        self.groups: list[tuple[int, tuple[int, ...]]] = []
        for i in self.codec.split_points(self.prefix):
            if len(self.index.lookup(self.prefix[i:])[0]):
                self.groups += [(i, h) for h in self.codec.heads(self.prefix[:i])]
        self.exact = self.codec.heads(self.prefix)
        anchor = common_prefix([h for _, h in self.groups] + list(self.exact) or [()])
        self.scorer = scorer or Scorer(model, anchor)
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
        return masses, logsumexp(np.concatenate(cover_logs))

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
    tokenizer: TokenizerBase, model: Callable, prefix: bytes, index: str = "trie"
) -> dict[int | str, float]:
    """Exact P(next byte | prefix) by the Byte-Token Representation Lemma: keys 0..255 and `EOT`.

    Exact when the model is canonical (`CanonicalModel(model, tokenizer)` makes any model so); with a
    raw model the masses of the covers are normalised to sum to 1.
    """
    _check_bytes(prefix, "prefix")
    return ByteState(tokenizer, model, prefix, index=index).distribution()


def _check_bytes(value: object, what: str) -> None:
    """Byte strings in (a str failed deep inside the tokenizer with an AttributeError)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}: pass text.encode()")


def byte_prob(tokenizer: TokenizerBase, model: Callable, x: bytes, end: bool = False) -> float:
    """P(a document starts with x) = sum over cover encodings t of P(t) (the lemma).

    With end=True: P(the document is exactly x), i.e. P(x) * P(EOT | x).
    """
    return math.exp(log_byte_prob(tokenizer, model, x, end=end))


def log_byte_prob(tokenizer: TokenizerBase, model: Callable, x: bytes, end: bool = False) -> float:
    """log of `byte_prob` (-inf for probability zero)."""
    _check_bytes(x, "x")
    state = ByteState(tokenizer, model, x, scorer=Scorer(model, ()))
    if end:
        scorer = state.scorer
        ends = [scorer.logq(h) + float(scorer.row(h)[-1]) for h in state.exact]
        return logsumexp(np.array(ends)) if ends else -math.inf
    try:
        return state.log_prefix_probability()
    except ZeroProbabilityPrefix:
        return -math.inf


# -- baselines -----------------------------------------------------------------------------------


def naive_next_byte_distribution(
    tokenizer: TokenizerBase, model: Callable, prompt: bytes
) -> dict[int | str, float]:
    """Naive prompting: encode the prompt, read the next token's first byte (tokenization bias)."""
    _check_bytes(prompt, "prompt")
    c = codec(tokenizer)
    context = c.encode(prompt)
    if context is None:
        raise ValueError(f"the tokenizer cannot encode the prompt {prompt[-20:]!r}")
    row = np.asarray(model([list(context)])[0], dtype=np.float64)
    return _group_by_first_byte(c.trie, row)


def token_healing_distribution(
    tokenizer: TokenizerBase, model: Callable, prompt: bytes
) -> dict[int | str, float]:
    """Token healing: back up the prompt's last token, constrain the next one to start with its bytes.

    When the chosen token is exactly the removed bytes, the byte after it comes from the next token
    (one further model call), so the result is a full next-byte distribution.
    """
    _check_bytes(prompt, "prompt")
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
    pairs: Sequence[tuple[TokenizerBase, Callable]],
    prefix: bytes,
    weights: Sequence[float] | None = None,
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
