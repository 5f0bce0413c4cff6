"""Shard I/O: build Arrow IPC token shards and rejects files batch by batch on local scratch (they
are committed atomically by the unit processor), and read committed files back (memory-mapped
where local)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.output.storage import Output
from schemas.records import Reject
from schemas.shards import REJECTS_SCHEMA, token_type

CHECKSUM_BLOCK = 4 << 20


def file_checksum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHECKSUM_BLOCK):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def bytes_checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _numpy_type(value_type: pa.DataType) -> np.dtype:
    """The numpy dtype of a fixed-width Arrow type (not `to_pandas_dtype`, which imports pandas)."""
    if pa.types.is_integer(value_type):
        return np.dtype(str(value_type))  # "uint16", "int32", ...: numpy's names too
    return np.dtype(value_type.to_pandas_dtype())


def list_array(flat: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """A list column from flat values and offsets without touching Python objects: the values'
    buffer is handed to Arrow as it is when it already has the column's type."""
    values = pa.array(flat.astype(_numpy_type(value_type), copy=False), type=value_type)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32, copy=False)), values)


class ShardWriter:
    """Writes one unit's shard as an Arrow IPC file, one record batch per engine batch."""

    def __init__(self, path: str, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self._sink = pa.OSFile(path, "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)
        self.rows = 0

    def write(self, columns: dict[str, pa.Array]) -> None:
        """One record batch; a nullable column the caller does not give is all null."""
        rows = len(columns["doc_id"])
        batch = pa.RecordBatch.from_arrays(
            [
                columns[f.name] if f.name in columns or not f.nullable else pa.nulls(rows, f.type)
                for f in self.schema
            ],
            schema=self.schema,
        )
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def token_column(flat: np.ndarray, offsets: np.ndarray, vocab_size: int) -> pa.ListArray:
    return list_array(flat, offsets, token_type(vocab_size))


class RejectsWriter:
    """Streams rejects into an Arrow IPC file, so a unit full of garbage stays in bounded memory;
    the file is created at the first reject only."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._sink = None
        self._writer = None

    def write(self, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        if self._writer is None:
            self._sink = pa.OSFile(self.path, "wb")
            self._writer = pa.ipc.new_file(self._sink, REJECTS_SCHEMA)
        self._writer.write_batch(
            pa.record_batch(
                [
                    pa.array([r.source for r in rejects], pa.string()),
                    pa.array([r.offset for r in rejects], pa.int64()),
                    pa.array([r.line for r in rejects], pa.int64()),
                    pa.array([r.row for r in rejects], pa.int64()),
                    pa.array([r.reason for r in rejects], pa.string()),
                    pa.array([r.raw for r in rejects], pa.binary()),
                ],
                schema=REJECTS_SCHEMA,
            )
        )
        self.count += len(rejects)

    def close(self) -> bool:
        """Finish the file; False when there was nothing to write (no file exists)."""
        if self._writer is None:
            return False
        self._writer.close()
        self._sink.close()
        return True


def read_ipc(output: Output, rel: str) -> pa.Table:
    """A whole committed Arrow IPC file (memory-mapped when the output is local)."""
    if output.local:
        with pa.memory_map(output.path(rel), "r") as source:
            return pa.ipc.open_file(source).read_all()
    return pa.ipc.open_file(pa.BufferReader(output.read_bytes(rel))).read_all()


def shard_metadata(table_or_schema: Any) -> dict[str, str]:
    schema = table_or_schema.schema if hasattr(table_or_schema, "schema") else table_or_schema
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
