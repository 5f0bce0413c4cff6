"""Documents of the committed shards, read for export: each shard is checked against its ledger
entry (checksum, documents, tokens) and yielded as batches of exported ids (in the export dtype,
with an EOD after each document when asked) and the columns the formats carry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.errors import ExportError
from pipeline.export.digest import FileDigest
from pipeline.export.plan import FilePlan, Resolved, Source
from pipeline.output import LedgerEntry, Output, with_retries
from pipeline.output.shards import bytes_checksum, file_checksum

META_COLUMNS = ("doc_id", "source", "lang")


@dataclass
class ExportBatch:
    """Documents as a format writes them: flat ids in the export dtype (EODs included) with
    offsets (int64, n+1, from 0), and the per-document columns (doc_id, source, lang, and the
    optional ones such as loss_mask, extended by a 1 under an appended EOD)."""

    ids: np.ndarray
    offsets: np.ndarray
    columns: dict[str, pa.Array] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1


def open_shard(output: Output, entry: LedgerEntry) -> pa.ipc.RecordBatchFileReader:
    """A committed shard whose bytes match its ledger entry's checksum."""
    try:
        if output.local:
            path = output.path(entry.shard)
            checksum = file_checksum(path)
            source = pa.memory_map(path, "r")
        else:
            data = output.read_bytes(entry.shard)
            checksum, source = bytes_checksum(data), pa.BufferReader(data)
    except FileNotFoundError as exc:
        raise ExportError(
            f"shard {output.url}/{entry.shard} listed by the ledger is missing "
            "(tokenmill verify names it; run --repair)"
        ) from exc
    if checksum != entry.shard_checksum:
        raise ExportError(
            f"shard {output.url}/{entry.shard} differs from its ledger entry (checksum); "
            "`tokenmill verify` names it and `tokenmill run --repair` rewrites it"
        )
    return pa.ipc.open_file(source)


def list_parts(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, int64 offsets from 0) of a list column, without copying the values."""
    dtype = np.dtype(str(column.type.value_type))
    if len(column) == 0:
        return np.zeros(0, dtype), np.zeros(1, np.int64)
    offsets = np.frombuffer(column.offsets.buffers()[1], dtype=np.int32)
    offsets = offsets[column.offset : column.offset + len(column) + 1].astype(np.int64)
    values = column.values
    if values.null_count:
        raise ExportError(f"a list column holds {values.null_count} null ids")
    flat = np.frombuffer(values.buffers()[1], dtype=dtype)[values.offset :]
    return flat[offsets[0] : offsets[-1]], offsets - offsets[0]


def with_eod(flat: np.ndarray, offsets: np.ndarray, value: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids with `value` appended to every document (a new array) and the new offsets."""
    n = len(offsets) - 1
    new_offsets = offsets + np.arange(n + 1, dtype=np.int64)
    out = np.empty(len(flat) + n, dtype=flat.dtype)
    keep = np.ones(len(out), dtype=bool)
    keep[new_offsets[1:] - 1] = False
    out[keep] = flat
    out[~keep] = value
    return out, new_offsets


def to_dtype(flat: np.ndarray, resolved: Resolved, where: str) -> np.ndarray:
    """A copy of the ids in the export dtype; ids that do not fit are an ExportError."""
    dtype = resolved.np_dtype
    if len(flat) and int(flat.max()) > np.iinfo(dtype).max:
        raise ExportError(f"{where}: id {int(flat.max())} does not fit {dtype}; use --dtype int32")
    return flat.astype(dtype, copy=True)


def dense_mask(
    column: pa.ListArray, token_offsets: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a loss_mask column with one entry per token: a null row (a plain
    text document in a chat job) means every token is trained on and becomes all ones."""
    values, offsets = list_parts(column)
    lengths = np.diff(token_offsets)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not np.array_equal(np.diff(offsets)[valid], lengths[valid]):
        raise ExportError(f"{where}: a loss_mask row differs in length from its tokens")
    if valid.all():
        return values, offsets
    dense = np.ones(int(token_offsets[-1]), dtype=np.uint8)
    kept = lengths[valid]
    before = np.concatenate(([0], np.cumsum(kept)[:-1]))
    dense[np.repeat(token_offsets[:-1][valid] - before, kept) + np.arange(kept.sum())] = values
    return dense, token_offsets


def export_batch(batch: pa.RecordBatch, resolved: Resolved, where: str) -> ExportBatch:
    tokens, offsets = list_parts(batch.column("tokens"))
    ids = to_dtype(tokens, resolved, where)
    columns = {name: batch.column(name) for name in META_COLUMNS}
    for name in resolved.columns:
        if name not in batch.schema.names:
            raise ExportError(f"{where} lacks the column {name} that other shards have")
        values, mask_offsets = dense_mask(batch.column(name), offsets, where)
        if resolved.append_eod:
            values, mask_offsets = with_eod(values, mask_offsets, 1)
        columns[name] = pa.ListArray.from_arrays(
            pa.array(mask_offsets.astype(np.int32)), pa.array(values)
        )
    if resolved.append_eod:
        ids, offsets = with_eod(ids, offsets, int(resolved.eos_id))
    return ExportBatch(ids, offsets, columns)


def file_batches(
    source: Source, plan: FilePlan, resolved: Resolved, digest: FileDigest
) -> Iterator[ExportBatch]:
    """The batches of one planned file, feeding `digest` with the shards' own documents (before
    any conversion) and with the exported stream; each shard must hold what its entry says."""
    for i in plan.entries:
        entry = source.entries[i]
        where = f"shard {source.output.url}/{entry.shard}"
        reader = with_retries(lambda e=entry: open_shard(source.output, e), f"open {entry.shard}")
        documents = tokens = 0
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            shard_tokens, shard_offsets = list_parts(batch.column("tokens"))
            digest.add_documents(shard_tokens, shard_offsets)
            documents += batch.num_rows
            tokens += int(shard_offsets[-1])
            out = export_batch(batch, resolved, where)
            digest.add_stream(out.ids)
            yield out
        if (documents, tokens) != (entry.documents, entry.tokens):
            raise ExportError(
                f"{where} holds {documents} documents / {tokens} tokens, its ledger entry says "
                f"{entry.documents} / {entry.tokens}"
            )
