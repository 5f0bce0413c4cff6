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


def file_checksum(path: str) -> str:
    """The file's SHA-256 (read into one reused buffer: a new 4 MiB bytes object a block, its
    pages faulted in each time, made the read back cost as much as the hash, 0.9 against 1.37
    GB/s for a run's shards)."""
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _numpy_type(value_type: pa.DataType) -> np.dtype:
    """The numpy dtype of a fixed-width Arrow type (not `to_pandas_dtype`, which imports pandas)."""
    if pa.types.is_integer(value_type):
        return np.dtype(str(value_type))  # "uint16", "int32", ...: numpy's names too
    return np.dtype(value_type.to_pandas_dtype())


# Arrays are built from their buffers, never with `pa.array` (nor read with `to_numpy`): the first
# call of either imports pandas, 0.2 s of every run's and every actor's start-up.


def _validity(missing: np.ndarray | None) -> pa.Buffer | None:
    """The validity bitmap (bit set: a value) of a boolean `missing` array; None when none is."""
    if missing is None or not missing.any():
        return None
    return pa.py_buffer(np.packbits(~missing, bitorder="little"))


def numeric_array(
    values: np.ndarray, arrow_type: pa.DataType, missing: np.ndarray | None = None
) -> pa.Array:
    """A fixed-width column of `values` (cast to the type; zero-copy when they have it; booleans
    packed to bits), null where `missing` is True."""
    if arrow_type == pa.bool_():
        n, data = len(values), np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    else:
        data = np.ascontiguousarray(values, dtype=_numpy_type(arrow_type))
        n = len(data)
    return pa.Array.from_buffers(arrow_type, n, [_validity(missing), pa.py_buffer(data)])


def values_view(array: pa.Array) -> np.ndarray:
    """Zero-copy numpy view of a fixed-width (not boolean) column without nulls."""
    if array.type == pa.bool_():
        raise TypeError("a boolean column is packed to bits: read it with bits()")
    if array.null_count:
        raise ValueError(f"{array.type} column with {array.null_count} nulls")
    dtype = _numpy_type(array.type)
    if not len(array):
        return np.zeros(0, dtype=dtype)
    data = array.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def bits(array: pa.BooleanArray) -> np.ndarray:
    """A boolean column without nulls as a numpy bool array."""
    if not len(array):
        return np.zeros(0, dtype=bool)
    packed = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    start = array.offset
    return np.unpackbits(packed, count=start + len(array), bitorder="little")[start:].astype(bool)


def optional_ints(values: Sequence[int | None], arrow_type: pa.DataType) -> pa.Array:
    """An integer column of Python ints, null where a value is None."""
    n = len(values)
    missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
    data = np.fromiter((0 if v is None else v for v in values), _numpy_type(arrow_type), n)
    return numeric_array(data, arrow_type, missing)


def string_array(values: Sequence[Any], binary: bool = False) -> pa.Array:
    """A string (or, `binary`, binary) column of str (bytes) values, null where None."""
    n = len(values)
    arrow_type = pa.binary() if binary else pa.string()
    missing = None
    if None in values:
        missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
        values = [b"" if v is None else v for v in values] if binary else [v or "" for v in values]
    joined = b"".join(values) if binary else "".join(values)
    if binary or joined.isascii():  # one byte a character: the lengths are the str lengths
        data, parts = joined if binary else joined.encode("ascii"), values
    else:
        parts = [v.encode("utf-8") for v in values]
        data = b"".join(parts)
    if len(data) > np.iinfo(np.int32).max:
        raise ValueError(f"{len(data)} bytes of strings in one batch: over 2 GiB")
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=n), out=offsets[1:])
    buffers = [_validity(missing), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(arrow_type, n, buffers)


def repeated_string(value: str | None, n: int) -> pa.Array:
    """A string column of `n` copies of one value (None: all null)."""
    if value is None:
        return pa.nulls(n, pa.string())
    data = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]
    )


def list_type(value_type: pa.DataType) -> pa.DataType:
    """The type of the shards' list columns: lists of non-null `value_type` items."""
    return pa.list_(pa.field("item", value_type, nullable=False))


def list_array(
    flat: np.ndarray, offsets: np.ndarray, value_type: pa.DataType, mask: pa.Array | None = None
) -> pa.ListArray:
    """A list column from flat values and offsets without touching Python objects: the values'
    buffer is handed to Arrow as it is when it already has the column's type, and the column has
    the schema's exact type (a record batch would otherwise cast it: 0.4 ms a batch); null lists
    where `mask` is True."""
    values = numeric_array(flat, value_type)
    offsets = numeric_array(offsets, pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=list_type(value_type), mask=mask)


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
                    string_array([r.source for r in rejects]),
                    optional_ints([r.offset for r in rejects], pa.int64()),
                    optional_ints([r.line for r in rejects], pa.int64()),
                    optional_ints([r.row for r in rejects], pa.int64()),
                    string_array([r.reason for r in rejects]),
                    string_array([r.raw for r in rejects], binary=True),
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
