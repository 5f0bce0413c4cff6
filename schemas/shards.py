"""Versioned Arrow schemas of everything tokenmill writes: token shards, rejects, and their metadata."""

from __future__ import annotations

import pyarrow as pa

# 2: shards gained `input_offset` (and chat jobs `loss_mask`); part of the config hash, so an
# output written by another schema version is refused rather than mixed.
SCHEMA_VERSION = 2
TOKENMILL_VERSION = "0.1.0"


def token_type(vocab_size: int) -> pa.DataType:
    """uint16 ids when the vocabulary fits, else uint32."""
    return pa.uint16() if vocab_size <= 65536 else pa.uint32()


LOSS_MASK = "loss_mask"  # list<uint8> column of chat jobs: 1 where the model trains on the token


def shard_schema(
    vocab_size: int,
    *,
    with_offsets: bool = False,
    with_loss_mask: bool = False,
    with_input_file: bool = False,
    extra_fields: dict[str, pa.DataType] | None = None,
    metadata: dict[str, str] | None = None,
) -> pa.Schema:
    """Schema v2 of a token shard: one row per document."""
    fields = [
        pa.field("doc_id", pa.string(), nullable=False),
        # Plain strings, not dictionaries: an Arrow IPC *file* cannot replace a dictionary between
        # record batches, and buffering a whole unit to build one would break bounded memory.
        pa.field("source", pa.string()),
        pa.field("lang", pa.string()),
        pa.field(
            "tokens",
            pa.list_(pa.field("item", token_type(vocab_size), nullable=False)),
            nullable=False,
        ),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("n_bytes", pa.int64(), nullable=False),
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("n_words", pa.int32(), nullable=False),
        pa.field("n_continued_words", pa.int32()),
        # the record's first byte in its (decompressed) input file, as a reject's `offset`; null
        # for row-based inputs (Parquet, Arrow) and re-tokenized shards
        pa.field("input_offset", pa.int64()),
    ]
    if with_input_file:  # a pack of files: the record's file, an index into the unit's members
        fields.append(pa.field("input_file", pa.int32(), nullable=False))
    if with_offsets:
        fields.append(
            pa.field("token_offsets", pa.list_(pa.field("item", pa.uint32(), nullable=False)))
        )
    if with_loss_mask:  # chat jobs: 1 where the model trains on the token; null = every token
        fields.append(pa.field(LOSS_MASK, pa.list_(pa.field("item", pa.uint8(), nullable=False))))
    for name, dtype in (
        extra_fields or {}
    ).items():  # plugin columns, e.g. dynamic merge's batch_id
        fields.append(pa.field(name, dtype))
    meta = {"tokenmill.schema_version": str(SCHEMA_VERSION), "tokenmill.version": TOKENMILL_VERSION}
    meta.update(metadata or {})
    return pa.schema(fields, metadata=meta)


REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # the input file's URL
        pa.field("offset", pa.int64()),  # byte offset of the record in the (decompressed) file
        pa.field("line", pa.int64()),  # 1-based line number when known, else null
        pa.field("row", pa.int64()),  # row index for Parquet inputs
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),  # first bytes of the raw record
    ],
    metadata={"tokenmill.schema_version": str(SCHEMA_VERSION)},
)

REJECT_RAW_BYTES = 256
