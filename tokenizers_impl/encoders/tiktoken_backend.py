"""The `tiktoken` backend: OpenAI's BPE over mergeable ranks (token bytes -> id) and one split
regex. Exact for a byte-level BPE whose ids follow merge order, whose pre-tokenizer is one regex
split (`patterns.split_pattern`) and whose every byte is a token."""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.encoders.base import (
    Encoder,
    EncoderSource,
    EncoderUnavailable,
    empty_flat,
    flat_from_lists,
    package_version,
)


def mergeable_ranks(token_bytes: Sequence[bytes], special_ids: Set[int]) -> dict[bytes, int] | None:
    """tiktoken's mergeable ranks of a byte-level vocabulary (the bytes of every id that is not a
    special token, first id wins), or None when some single byte has no token."""
    ranks: dict[bytes, int] = {}
    for i, data in enumerate(token_bytes):
        if i not in special_ids and data and data not in ranks:
            ranks[data] = i
    if any(bytes([b]) not in ranks for b in range(256)):
        return None
    return ranks


class TiktokenEncoder(Encoder):
    name: ClassVar[str] = "tiktoken"

    def __init__(self, encoding: Any):
        self.encoding = encoding
        self.version = package_version("tiktoken")

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return empty_flat(0)
        encode = self.encoding.encode_ordinary
        return flat_from_lists([encode(t) for t in texts])

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = self.encoding.encode_ordinary
        return [np.array(encode(t), dtype=np.uint32) for t in texts]

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes that need not be UTF-8: BPE runs on the bytes of the unfinished last
        piece (tiktoken's own, private, byte encoder)."""
        return self.encoding._encode_bytes(data)


def build(source: EncoderSource) -> TiktokenEncoder:
    import tiktoken

    if source.pattern is None:
        raise EncoderUnavailable("not applicable", "not a byte-level BPE split by one regex")
    added = (source.config or {}).get("added_tokens") or []
    plain = [t.get("content") for t in added if not t.get("special")]
    if plain:  # (encode_ordinary never matches them; the reference splits them out first)
        raise EncoderUnavailable(
            "not applicable",
            f"{len(plain)} non-special added token(s) ({plain[0]!r}...), which tiktoken cannot match",
        )
    ranks = source.ranks()
    if ranks is None:
        raise EncoderUnavailable("not applicable", "its vocabulary lacks a token for some byte")
    encoding = tiktoken.Encoding(
        name=f"tokenmill-{source.label}",
        pat_str=source.pattern,
        mergeable_ranks=ranks,
        special_tokens=dict(source.special_tokens),
    )
    return TiktokenEncoder(encoding)
