"""Chat documents to tokens and a loss mask. Every document of a batch is cut into pieces: a
template segment is split on the tokenizer's added tokens (each becomes its id), everything else
(message contents, and the template's text between its special tokens) is encoded as plain text
in one batched call of the fast encoder. A token's mask is its segment's `train` flag; plain
text documents of the same job get a null mask, which means train on every token (so a job
over plain text pays nothing for the column)."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.output.shards import list_array, numeric_array
from pipeline.tokenize.inputs import DocBatch
from tokenizers_impl import EncodedBatch, TokenizerBase

Splitter = tuple[re.Pattern[str] | None, dict[str, int]]


@dataclass
class ChatEncoded:
    """A batch's documents (ids, offsets), their loss masks, and the plain pieces that were
    encoded (with their encoding), which sampled verification checks against the reference."""

    encoded: EncodedBatch
    loss_mask: pa.Array
    pieces: DocBatch
    pieces_encoded: EncodedBatch
    piece_doc: np.ndarray  # the batch index of each piece's document


_SPLITTERS: weakref.WeakKeyDictionary[TokenizerBase, Splitter] = weakref.WeakKeyDictionary()


def _splitter(tokenizer: TokenizerBase) -> Splitter:
    """A regex matching the tokenizer's added tokens (longest first), and their ids."""
    found = _SPLITTERS.get(tokenizer)
    if found is None:
        added = dict(tokenizer.added_tokens)
        texts = sorted(added, key=len, reverse=True)  # the longest match wins
        pattern = re.compile("|".join(map(re.escape, texts))) if texts else None
        found = _SPLITTERS[tokenizer] = (pattern, added)
    return found


def encode_chat(tokenizer: TokenizerBase, batch: DocBatch) -> ChatEncoded:
    """Tokens and loss masks of one batch of a chat job (`batch.segments` is set)."""
    pattern, added = _splitter(tokenizer)
    pieces = DocBatch()
    # per document: a list of (special id or -1 for the next piece, train flag)
    plans: list[list[tuple[int, bool]]] = []
    piece_doc: list[int] = []
    for k, segments in enumerate(batch.segments or ()):
        plan: list[tuple[int, bool]] = []
        for text, template, train in segments or [(batch.texts[k], False, True)]:
            parts = pattern.split(text) if template and pattern is not None else [text]
            specials = pattern.findall(text) if template and pattern is not None else []
            for j, part in enumerate(parts):
                if part:
                    pieces.doc_ids.append(f"{batch.doc_ids[k]}#piece{len(pieces.texts)}")
                    pieces.texts.append(part)
                    pieces.byte_lengths.append(len(part.encode("utf-8")))
                    piece_doc.append(k)
                    plan.append((-1, train))
                if j < len(specials):
                    plan.append((added[specials[j]], train))
        plans.append(plan)
    flat_p, off_p = tokenizer.encode_batch_flat(pieces.texts)
    ids: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    lengths = np.zeros(len(plans), dtype=np.int64)
    piece = 0
    plain = np.array([s is None for s in batch.segments or ()], dtype=bool)
    for k, plan in enumerate(plans):
        for token, train in plan:
            if token < 0:
                chunk = flat_p[off_p[piece] : off_p[piece + 1]]
                piece += 1
            else:
                chunk = np.array([token], dtype=np.uint32)
            ids.append(chunk)
            if not plain[k]:
                masks.append(np.full(len(chunk), train, dtype=np.uint8))
            lengths[k] += len(chunk)
    offsets = np.zeros(len(plans) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(ids).astype(np.uint32, copy=False) if ids else np.zeros(0, np.uint32)
    mask = np.concatenate(masks) if masks else np.zeros(0, np.uint8)
    mask_offsets = np.zeros(len(plans) + 1, dtype=np.int32)
    np.cumsum(np.where(plain, 0, lengths), out=mask_offsets[1:])
    mask_column = list_array(
        mask,
        mask_offsets,
        pa.uint8(),
        mask=numeric_array(np.asarray(plain, dtype=bool), pa.bool_()),
    )
    return ChatEncoded(
        EncodedBatch(flat, offsets),
        mask_column,
        pieces,
        EncodedBatch(flat_p, off_p),
        np.asarray(piece_doc, dtype=np.int64),
    )
