"""The tokenizer plugin contract: one protocol, a registry of kinds, and `load_tokenizer("KIND:PATH")`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


class TokenizerError(ValueError):
    """A tokenizer file or spec is missing, malformed or untrusted-looking."""


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer plugin provides.

    `encode_batch` returns one uint32 numpy array per text. `token_bytes(id)` is the raw UTF-8 (or
    arbitrary) bytes of a token, never a visible-unicode rendering, so that concatenating the bytes of
    an encoding gives back the encoded text for lossless tokenizers.
    """

    kind: ClassVar[str]
    name: str
    vocab_size: int
    fingerprint: str
    lossless: bool

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def save(self, url: str, storage_options: dict | None = None) -> None: ...


@dataclass
class EncodedBatch:
    """What the engine writes for one batch of documents."""

    flat: np.ndarray  # uint32 ids of all documents, concatenated
    offsets: np.ndarray  # int64, len(texts) + 1: document i is flat[offsets[i]:offsets[i + 1]]
    columns: dict[str, pa.Array] = field(default_factory=dict)  # extra per-document shard columns
    # rows appended to the shard's sidecar table (schema: sidecar_schema)
    sidecar: pa.Table | None = None
    # byte length of every id for this batch, when batch-local ids exist (else token_byte_lengths())
    byte_lengths: np.ndarray | None = None


class TokenizerBase:
    """Shared behaviour: flat encoding, byte tables and EOS lookup built on the protocol methods."""

    kind: ClassVar[str] = ""
    lossless: bool = True
    eos_id: int | None = None
    _byte_lengths: np.ndarray | None = None
    # Extra per-document shard columns this tokenizer adds (name -> Arrow type), and the schema of its
    # per-shard sidecar table, if any (written under <output>/sidecar/ and listed in the ledger).
    shard_columns: ClassVar[dict[str, pa.DataType]] = {}
    sidecar_schema: ClassVar[pa.Schema | None] = None
    # Documents per engine batch this tokenizer needs (None: the job's batch_docs decides).
    preferred_batch_docs: int | None = None

    def encode_for_shard(self, texts: Sequence[str], batch_index: int) -> EncodedBatch:
        """Encode one engine batch (batch_index counts batches within a work unit, from 0)."""
        flat, offsets = self.encode_batch_flat(texts)
        return EncodedBatch(flat, offsets)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts into one flat uint32 id buffer plus int64 offsets (len(texts) + 1)."""
        arrays = self.encode_batch(texts)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = (
            np.concatenate(arrays).astype(np.uint32, copy=False)
            if arrays
            else np.zeros(0, np.uint32)
        )
        return flat, offsets

    def token_byte_lengths(self) -> np.ndarray:
        """Length in bytes of every token id, as an int32 array indexed by id (cached)."""
        if self._byte_lengths is None:
            self._byte_lengths = np.array(
                [len(self.token_bytes(i)) for i in range(self.vocab_size)], dtype=np.int32
            )
        return self._byte_lengths

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """Concatenated raw bytes of the tokens (exactly the input's UTF-8 for lossless tokenizers)."""
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def describe(self) -> dict[str, Any]:
        """Metadata written into shards and run summaries."""
        return {
            "kind": self.kind,
            "name": getattr(self, "name", self.kind),
            "fingerprint": self.fingerprint,
            "vocab_size": self.vocab_size,
            "lossless": self.lossless,
            "eos_id": self.eos_id,
        }


def fingerprint_of(kind: str, payload: bytes | str, config: dict[str, Any] | None = None) -> str:
    """Stable hash of a tokenizer's kind, vocabulary/model bytes and encoding config."""
    digest = hashlib.sha256()
    digest.update(kind.encode())
    digest.update(payload.encode() if isinstance(payload, str) else payload)
    digest.update(json.dumps(config or {}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


_REGISTRY: dict[str, Callable[..., Tokenizer]] = {}


def register(kind: str, cls: Any) -> None:
    """Register a tokenizer class under `kind`; `cls.load(path, storage_options=..., **options)` loads one."""
    if not kind or ":" in kind:
        raise TokenizerError(f"invalid tokenizer kind {kind!r}")
    _REGISTRY[kind] = cls


def registered_kinds() -> list[str]:
    for kind in _BUILTIN_KINDS:
        _import_builtin(kind)
    return sorted(_REGISTRY)


def tokenizer_class(kind: str) -> Any:
    _import_builtin(kind)
    if kind not in _REGISTRY:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[kind]


def parse_spec(spec: str) -> tuple[str, str]:
    """Split "KIND:PATH" (PATH may itself be a URL such as s3://b/k)."""
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise TokenizerError(f"tokenizer spec {spec!r} must look like KIND:PATH, e.g. bpe:tok.json")
    return kind, path


def load_tokenizer(spec: str, storage_options: dict | None = None, **options: Any) -> Tokenizer:
    """Load a tokenizer from "KIND:PATH" (local path or fsspec URL)."""
    kind, path = parse_spec(spec)
    return tokenizer_class(kind).load(path, storage_options=storage_options, **options)


def _import_builtin(kind: str) -> None:
    """Import the module of a built-in kind on first use (a plugin never loads the others)."""
    if kind not in _REGISTRY and kind in _BUILTIN_KINDS:
        import importlib

        importlib.import_module(_BUILTIN_KINDS[kind])


# Built-in kinds and the module whose import registers each; add a new built-in plugin here.
_BUILTIN_KINDS = {
    "bpe": "tokenizers_impl.bpe",
    "sentencepiece": "tokenizers_impl.sentencepiece_impl",
    "lib": "tokenizers_impl.lib",
    "dynamic_merge": "tokenizers_impl.dynamic_merge",
}
