"""A reference tokenizer over raw bytes (the oracle's tokenizer in the tests and a minimal example
of the `encode_bytes` capability)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.base import TokenizerBase, TokenizerError, fingerprint_of
from tokenizers_impl.files import read_json, write_file


class LongestPrefixTokenizer(TokenizerBase):
    """Reference tokenizer over raw bytes: repeatedly take the longest vocabulary token that
    prefixes the rest (every single byte of the input must be in the vocabulary)."""

    kind: ClassVar[str] = "longest-prefix"
    supports_encode_bytes = True

    def __init__(self, vocab: Sequence[bytes], name: str = "longest-prefix"):
        self.vocab = [bytes(v) for v in vocab]
        self.name = name
        self.vocab_size = len(self.vocab)
        self.ids = {v: i for i, v in enumerate(self.vocab)}
        self.max_len = max(len(v) for v in self.vocab)
        self.fingerprint = fingerprint_of(self.kind, b"\0".join(self.vocab))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Longest-prefix ids of any bytes; ValueError when a byte is not in the vocabulary."""
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

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id]

    def save(self, url: str, storage_options: dict | None = None) -> None:
        """A plain JSON file: the vocabulary as hex strings, in id order."""
        payload = {"kind": self.kind, "version": 1, "vocab": [v.hex() for v in self.vocab]}
        write_file(url, json.dumps(payload).encode(), storage_options)

    @classmethod
    def load(
        cls, path: str, storage_options: dict | None = None, **options: Any
    ) -> LongestPrefixTokenizer:
        data = read_json(path, storage_options)
        vocab = data.get("vocab") if isinstance(data, dict) else None
        if not isinstance(vocab, list) or not vocab or data.get("kind") != cls.kind:
            raise TokenizerError(f"{path!r} is not a {cls.kind} vocabulary file")
        try:
            return cls([bytes.fromhex(v) for v in vocab], name=options.get("name", cls.kind))
        except (TypeError, ValueError) as exc:
            raise TokenizerError(f"{path!r}: bad vocabulary entry: {exc}") from exc
