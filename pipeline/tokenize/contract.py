"""What the engine checks of a tokenizer's output before it writes any of it, and how a
tokenizer's failure on a batch is narrowed to the document that makes it fail.

A plugin's encoding is checked in every unit: one id array per text (the base
`encode_batch_flat`), offsets that start at 0, never decrease and end at the ids' length, and
integer ids within the vocabulary (or the batch's own vocabulary, when ids are batch-local). A
broken rule fails the unit naming the tokenizer, the rule and the document; so does an exception
raised by the tokenizer, after the batch's documents are encoded one at a time to find the first
that raises. Nothing of the unit is committed (exit 3, as any unit failure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from pipeline.errors import TokenmillError, VerificationFailed, unit_failed
from pipeline.tokenize.inputs import DocBatch
from tokenizers_impl import EncodedBatch, TokenizerBase
from tokenizers_impl.base import out_of_vocabulary

T = TypeVar("T")


def where(batches: list[DocBatch], i: int) -> str:
    """Document i of the batches (in order) as a message names it: its id and its record's byte
    offset."""
    for batch in batches:
        if i < len(batch.texts):
            offset = batch.input_offsets[i] if i < len(batch.input_offsets) else None
            at = "" if offset is None else f" (byte offset {offset})"
            return f"document {batch.doc_ids[i]!r}{at}"
        i -= len(batch.texts)
    return f"document {i}"


def check_encoded(
    unit: Any, batches: list[DocBatch], encoded: EncodedBatch, tok: TokenizerBase
) -> None:
    """Refuse an encoding of the batches' texts that breaks the contract (module docstring)."""
    flat, offsets, n = encoded.flat, encoded.offsets, sum(len(b.texts) for b in batches)

    def broken(rule: str) -> None:
        raise unit_failed(
            unit, TokenizerContractError(f"tokenizer {tok.kind} ({tok.name}): {rule}")
        )

    if not isinstance(flat, np.ndarray) or flat.ndim != 1 or flat.dtype.kind not in "iu":
        broken(
            f"ids must be a 1-d integer array, not {type(flat).__name__} {getattr(flat, 'dtype', '')}"
        )
    if (
        not isinstance(offsets, np.ndarray)
        or offsets.dtype.kind not in "iu"
        or offsets.shape != (n + 1,)
    ):
        broken(
            f"offsets must be {n + 1} integers for {n} documents, not {getattr(offsets, 'shape', offsets)}"
        )
    if offsets[0] != 0 or offsets[-1] != len(flat) or np.any(offsets[1:] < offsets[:-1]):
        broken(
            f"offsets must rise from 0 to the {len(flat)} ids, not {offsets[0]} .. {offsets[-1]}"
        )
    vocab = len(encoded.byte_lengths) if encoded.byte_lengths is not None else tok.vocab_size
    bad = out_of_vocabulary(flat, offsets, vocab)
    if bad is not None:
        at, doc = bad
        broken(
            f"id {int(flat[at])} of {where(batches, doc)} is out of its vocabulary (0..{vocab - 1})"
        )


class TokenizerContractError(TokenmillError, ValueError):
    """A tokenizer's output breaks the engine's contract (the message names the rule)."""


def encoding(unit: Any, batches: list[DocBatch], tok: TokenizerBase, call: Callable[[], T]) -> T:
    """`call()` (an encode of the batches' texts), or UnitFailed naming the first document that
    makes the tokenizer raise (each encoded alone), the tokenizer and its error."""
    try:
        return call()
    except (VerificationFailed, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 (a plugin's error, whatever its type)
        for i, text in enumerate(t for b in batches for t in b.texts):
            try:
                tok.encode_batch_flat([text])
            except Exception as alone:  # noqa: BLE001
                said = f"tokenizer {tok.kind} raised {type(alone).__name__}: {alone}"
                cause = TokenizerContractError(f"{where(batches, i)}: {said}")
                raise unit_failed(unit, cause) from alone
        raise unit_failed(unit, exc) from exc
