"""The `tokenizers` backend: the Hugging Face library itself, the reference every other backend of a
`bpe` tokenizer is checked against (special-token text in documents stays plain text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.encoders.base import (
    Encoder,
    EncoderSource,
    EncoderUnavailable,
    flat_from_lists,
    package_version,
)


class TokenizersEncoder(Encoder):
    name: ClassVar[str] = "tokenizers"

    def __init__(self, hf: Any):
        self.hf = hf
        self.hf.encode_special_tokens = True  # special-token strings in documents are plain text
        self.version = package_version("tokenizers")

    def encode_lists(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return flat_from_lists(self.encode_lists(texts))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array(ids, dtype=np.uint32) for ids in self.encode_lists(texts)]


def build(source: EncoderSource) -> TokenizersEncoder:
    if source.hf is None and source.config is not None:  # (a SentencePiece model's equivalent)
        import json

        from tokenizers import Tokenizer

        return TokenizersEncoder(Tokenizer.from_str(json.dumps(source.config)))
    if source.hf is None:
        raise EncoderUnavailable("not applicable", source.config_note or "no tokenizer.json")
    return TokenizersEncoder(source.hf)
