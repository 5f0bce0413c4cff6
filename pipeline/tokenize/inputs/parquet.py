"""Parquet: each row is a record with the job's text/id/source/lang columns. A unit is a run of
consecutive row groups [start, end) of up to `unit_bytes` stored bytes (a row group bigger than
that is a unit alone, so files of big row groups keep one unit per row group, with the ids they
always had); small row groups are packed: one unit each made a file of thousands of them cost a
footer parse, a shard and a ledger entry per row group (quadratic in their number)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.errors import InputError
from pipeline.output.storage import url_to_fs
from pipeline.tokenize.inputs.batching import BatchBuilder, column_values
from pipeline.tokenize.inputs.registry import InputFormat, register_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit


class ParquetFormat(InputFormat):
    name = "parquet"
    suffixes = (".parquet", ".pq")

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        import pyarrow.parquet as pq

        with file.fs.open(file.path, "rb") as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except (ValueError, OSError) as exc:  # (ArrowInvalid: no magic bytes, size 0)
                raise InputError(f"{file.url}: not a readable Parquet file ({exc})") from None
            sizes = _stored_bytes(parquet.metadata)
            names = parquet.schema_arrow.names
        for name in dict.fromkeys(_fields(opts)):
            if names.count(name) > 1:
                raise InputError(
                    f"{file.url}: column {name!r} appears {names.count(name)} times in its schema"
                )
        units = []
        for start, end in _runs(sizes, opts.unit_bytes):
            # (size: the file's, as ever, so that a unit's id stays what it was)
            unit = WorkUnit(file.url, self.name, None, start, end, file.size, file.etag)
            _UNIT_BYTES[_key(unit)] = sum(sizes[start:end])
            units.append(unit)
        return units

    def read(
        self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None
    ) -> Iterator[DocBatch]:
        import pyarrow.parquet as pq

        out = BatchBuilder(unit, opts)
        fs, path = url_to_fs(unit.url, storage_options)
        with fs.open(path, "rb") as handle:
            pf = pq.ParquetFile(handle)
            names = pf.schema_arrow.names
            wanted = [c for c in dict.fromkeys(_fields(opts)) if c in names]
            row = sum(pf.metadata.row_group(i).num_rows for i in range(unit.start))
            groups = list(range(unit.start, unit.end))
            for rb in pf.iter_batches(
                batch_size=opts.batch_docs, row_groups=groups, columns=wanted
            ):
                cols = {name: column_values(rb.column(name)) for name in wanted}
                for i in range(rb.num_rows):
                    out.row(row, {k: v[i] for k, v in cols.items()})
                    row += 1
                    if out.full():
                        yield out.take()
        yield out.finish()


_UNIT_BYTES: dict[tuple, int] = {}  # a planned unit's stored bytes (its `size` is the file's)


def _key(unit: WorkUnit) -> tuple:
    return (unit.url, unit.start, unit.end, unit.size, unit.etag)


def unit_bytes(unit: WorkUnit) -> int:
    """The stored bytes of a Parquet unit's row groups as planned in this process (the file's
    size for a unit planned elsewhere)."""
    return _UNIT_BYTES.get(_key(unit), unit.size)


def _stored_bytes(metadata: Any) -> list[int]:
    """Each row group's stored (compressed) bytes."""
    return [
        sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        for group in map(metadata.row_group, range(metadata.num_row_groups))
    ]


def _runs(sizes: list[int], most: int) -> list[tuple[int, int]]:
    """Consecutive row groups [start, end) of at most `most` bytes together (one alone may be
    more)."""
    runs, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > most:
            runs.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        runs.append((start, len(sizes)))
    return runs


def _fields(opts: ReadOptions) -> tuple[str, ...]:
    """The columns a job reads (text, id, source, lang, messages)."""
    return (opts.text_field, opts.id_field, opts.source_field, opts.lang_field, opts.messages_field)


register_format(ParquetFormat())
