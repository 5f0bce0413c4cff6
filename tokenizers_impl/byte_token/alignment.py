"""Byte alignment of token sequences: byte end offsets of tokens, byte span <-> token span.

Exact for lossless tokenizers (docs/byte_token.md, "Byte alignment"); the shard column
`token_offsets` stores what `token_end_offsets` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tokenizers_impl.base import TokenizerBase


def token_end_offsets(tokenizer: TokenizerBase, ids: Sequence[int] | np.ndarray) -> np.ndarray:
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
