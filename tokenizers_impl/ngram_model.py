"""A weight-free token model: interpolated Kneser-Ney n-grams counted from token shards.

Implements the token-model protocol of `tokenizers_impl.byte_token`: `model(contexts)` returns
next-token log-probabilities of shape [len(contexts), vocab_size + 1], the last column being
end-of-text (each document's end is counted as an event). Counts are sparse numpy arrays keyed by
mixed-radix n-gram codes; the model is saved as a plain `.npz` (loads with allow_pickle=False).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tokenizers_impl.errors import TokenmillError
from tokenizers_impl.files import url_to_fs

MAX_ORDER = 6
FORMAT = "tokenmill.ngram.v1"


class NgramModelError(TokenmillError, ValueError):
    """A model file or training input is malformed."""


@dataclass
class _Order:
    """Sparse counts of one order k: successors of each context of k - 1 tokens."""

    contexts: np.ndarray  # int64, sorted unique context codes
    starts: (
        np.ndarray
    )  # int64, len(contexts) + 1: successors of context c are words[starts[c]:starts[c+1]]
    words: np.ndarray  # int64 next symbols (0..vocab_size, vocab_size = end-of-text)
    counts: np.ndarray  # float64 counts (continuation counts below the top order)
    totals: np.ndarray  # float64 per context
    discount: float

    @classmethod
    def from_grams(cls, keys: np.ndarray, counts: np.ndarray, base: int) -> _Order:
        contexts, starts = np.unique(keys // base, return_index=True)
        starts = np.append(starts, len(keys)).astype(np.int64)
        totals = np.add.reduceat(counts, starts[:-1]) if len(keys) else np.zeros(0)
        n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
        discount = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
        return cls(
            contexts, starts, keys % base, counts, totals, float(np.clip(discount, 0.1, 0.9))
        )


class NgramModel:
    """Interpolated Kneser-Ney token model of a given order (2 = bigram) over vocab_size + 1 outputs."""

    def __init__(self, vocab_size: int, order: int, orders: list[_Order], tokenizer: str = ""):
        self.vocab_size = vocab_size
        self.order = order
        self.orders = orders  # orders[k - 1] holds order k
        self.tokenizer = tokenizer
        self.eot = vocab_size
        self.bos = vocab_size + 1
        self.base = vocab_size + 2

    # -- estimation ------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        documents: Iterable[np.ndarray | Sequence[int]],
        vocab_size: int,
        order: int = 2,
        tokenizer: str = "",
    ) -> NgramModel:
        """Count n-grams of token documents (each one array of ids) and smooth them."""
        base = vocab_size + 2
        if not 1 <= order <= MAX_ORDER or base**order >= 2**62:
            most = max((k for k in range(1, MAX_ORDER + 1) if base**k < 2**62), default=0)
            raise NgramModelError(
                f"order {order} with vocab_size {vocab_size} is not supported: contexts are coded "
                f"in 62 bits, so at most order {most} for this vocabulary (and 1-{MAX_ORDER})"
            )
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        batch: list[np.ndarray] = []
        for doc in documents:
            batch.append(np.asarray(doc, dtype=np.int64))
            if len(batch) >= 4096:
                chunks.append(_count(batch, vocab_size, order))
                batch = []
        if batch:
            chunks.append(_count(batch, vocab_size, order))
        if not chunks:
            raise NgramModelError("no documents to count")
        keys, counts = _merge(chunks)
        orders = [_Order.from_grams(keys, counts.astype(np.float64), base)]
        for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
            keys, counts = np.unique(keys % base**k, return_counts=True)
            orders.append(_Order.from_grams(keys, counts.astype(np.float64), base))
        return cls(vocab_size, order, orders[::-1], tokenizer)

    @classmethod
    def train_from_shards(
        cls,
        urls: Sequence[str],
        vocab_size: int,
        order: int = 2,
        tokenizer: str = "",
        storage_options: dict | None = None,
    ) -> NgramModel:
        """Count the `tokens` column of committed Arrow IPC shard files (paths or fsspec URLs)."""
        return cls.train(shard_documents(urls, storage_options), vocab_size, order, tokenizer)

    # -- the model protocol ------------------------------------------------------------------------
    def __call__(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.empty((len(contexts), self.vocab_size + 1), dtype=np.float64)
        for row, context in enumerate(contexts):
            with np.errstate(divide="ignore"):
                out[row] = np.log(self.probabilities(context))
        return out

    def probabilities(self, context: Sequence[int]) -> np.ndarray:
        """P(next symbol | context) over the vocabulary plus end-of-text (sums to 1)."""
        history = [self.bos] * (self.order - 1) + [int(i) for i in context]
        probs = np.full(self.vocab_size + 1, 1.0 / (self.vocab_size + 1))
        for k, counts in enumerate(self.orders, start=1):
            code = 0
            for token in history[len(history) - (k - 1) :] if k > 1 else []:
                code = code * self.base + token
            at = int(np.searchsorted(counts.contexts, code))
            if at == len(counts.contexts) or counts.contexts[at] != code:
                continue
            lo, hi = counts.starts[at], counts.starts[at + 1]
            total, d = counts.totals[at], counts.discount
            probs *= d * (hi - lo) / total
            np.add.at(probs, counts.words[lo:hi], np.maximum(counts.counts[lo:hi] - d, 0) / total)
        return probs

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write a plain .npz (no pickled objects)."""
        meta = {
            "format": FORMAT,
            "vocab_size": self.vocab_size,
            "order": self.order,
            "tokenizer": self.tokenizer,
            "discounts": [o.discount for o in self.orders],
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for k, o in enumerate(self.orders, start=1):
            arrays.update(
                {
                    f"o{k}_contexts": o.contexts,
                    f"o{k}_starts": o.starts,
                    f"o{k}_words": o.words,
                    f"o{k}_counts": o.counts,
                }
            )
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str) -> NgramModel:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT:
                    raise NgramModelError(f"{path!r} is not a {FORMAT} file")
                orders = []
                for k in range(1, meta["order"] + 1):
                    starts, counts = data[f"o{k}_starts"], data[f"o{k}_counts"]
                    totals = np.add.reduceat(counts, starts[:-1]) if len(counts) else np.zeros(0)
                    orders.append(
                        _Order(
                            data[f"o{k}_contexts"],
                            starts,
                            data[f"o{k}_words"],
                            counts,
                            totals,
                            float(meta["discounts"][k - 1]),
                        )
                    )
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, NgramModelError):
                raise
            raise NgramModelError(f"cannot read n-gram model {path!r}: {exc}") from exc
        return cls(meta["vocab_size"], meta["order"], orders, meta.get("tokenizer", ""))


def _count(docs: list[np.ndarray], vocab_size: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique n-gram codes and counts of a batch of documents padded with BOS and ended with EOT."""
    bos, eot, base = vocab_size + 1, vocab_size, vocab_size + 2
    pieces = []
    for doc in docs:
        if len(doc) and (doc.min() < 0 or doc.max() >= vocab_size):
            raise NgramModelError(f"token id outside [0, {vocab_size}) in a document")
        pieces += [np.full(order - 1, bos, dtype=np.int64), doc, np.array([eot], dtype=np.int64)]
    stream = np.concatenate(pieces)
    targets = np.flatnonzero(stream != bos)
    keys = np.zeros(len(targets), dtype=np.int64)
    for back in range(order - 1, -1, -1):
        keys = keys * base + stream[targets - back]
    return np.unique(keys, return_counts=True)


def _merge(chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _ in chunks])
    counts = np.concatenate([c for _, c in chunks])
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts).astype(np.int64)


BATCH_LOCAL_KINDS = ("dynamic_merge",)  # tokenizers whose ids need their batch's sidecar


def shard_documents(
    urls: Sequence[str], storage_options: dict | None = None
) -> Iterable[np.ndarray]:
    """Token arrays of every document of Arrow IPC shard files, in file order."""
    for url in urls:
        fs, path = url_to_fs(url, storage_options)
        with fs.open(path, "rb") as handle:
            table = pa.ipc.open_file(pa.BufferReader(handle.read())).read_all()
        if "tokens" not in table.column_names:
            raise NgramModelError(f"shard {url!r} has no tokens column")
        kind = (table.schema.metadata or {}).get(b"tokenmill.tokenizer.kind", b"").decode()
        if kind in BATCH_LOCAL_KINDS:
            raise NgramModelError(
                f"shard {url!r} was written by a {kind} tokenizer: its merged ids are local to "
                "their batch (they mean nothing outside it), so they cannot be counted as one "
                "vocabulary; count the shards of its base tokenizer instead"
            )
        for chunk in table.column("tokens").chunks:
            offsets = chunk.offsets.to_numpy()
            values = chunk.values.to_numpy().astype(np.int64)
            for i in range(len(chunk)):
                yield values[offsets[i] : offsets[i + 1]]
