"""Hugging Face `datasets`: Parquet files `data/train-NNNNN-of-MMMMM.parquet` (the Hub's layout, so
`datasets.load_dataset(DEST)` finds the train split; `load_dataset("parquet", data_files=...)`
reads any subset), one row per document: input_ids, doc_id, source, lang, and loss_mask when the
shards have it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.export.documents import ExportBatch, list_parts
from pipeline.export.formats.base import ExportFormat, open_object
from pipeline.export.plan import Resolved
from pipeline.output import Output

READ_ROWS = 1024


def parquet_schema(resolved: Resolved) -> pa.Schema:
    ids = pa.from_numpy_dtype(resolved.np_dtype)
    fields = [
        pa.field("input_ids", pa.list_(ids)),
        pa.field("doc_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("lang", pa.string()),
    ]
    if "loss_mask" in resolved.columns:
        fields.append(pa.field("loss_mask", pa.list_(pa.uint8())))
    return pa.schema(fields)


def describe(schema: pa.Schema) -> list[tuple[str, str]]:
    """Column names and types, list item names left out (Parquet renames them)."""
    return [
        (f.name, f"list<{f.type.value_type}>" if pa.types.is_list(f.type) else str(f.type))
        for f in schema
    ]


def split_lists(column: pa.Array | pa.ChunkedArray) -> Iterator[np.ndarray]:
    """Each row of a list column as a numpy array."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        flat, offsets = list_parts(chunk)
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            yield flat[start:end]


class HFFormat(ExportFormat):
    name = "hf"
    default_max_tokens = 1 << 26
    carries = ("loss_mask",)
    library = "datasets"
    module = "datasets"

    def object_names(self, index: int, count: int) -> list[str]:
        return [f"data/train-{index:05d}-of-{count:05d}.parquet"]

    def write(
        self, resolved: Resolved, batches: Iterable[ExportBatch], paths: dict[str, str], index: int
    ) -> dict[str, Any]:
        (path,) = paths.values()
        schema = parquet_schema(resolved)
        with pq.ParquetWriter(path, schema) as writer:
            for batch in batches:
                ids = pa.ListArray.from_arrays(
                    pa.array(batch.offsets.astype(np.int32)), pa.array(batch.ids)
                )
                columns = {"input_ids": ids, **batch.columns}
                writer.write_table(
                    pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
                )
        return {}

    def read(
        self, resolved: Resolved, dest: Output, record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        (name,) = record["names"]
        with open_object(dest, name) as handle:
            parquet = pq.ParquetFile(handle)
            found, expected = describe(parquet.schema_arrow), describe(parquet_schema(resolved))
            if found != expected:
                raise ValueError(f"{name}: columns {found}, the export's are {expected}")
            for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=["input_ids"]):
                yield from split_lists(batch.column(0))

    def library_read(
        self, resolved: Resolved, paths: dict[str, str], record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        import datasets

        (path,) = paths.values()
        with tempfile.TemporaryDirectory(prefix="tokenmill-hf-cache-") as cache:  # no ~/.cache
            rows = datasets.load_dataset(
                "parquet", data_files=[path], split="train", streaming=True, cache_dir=cache
            )
            for table in rows.with_format("arrow").iter(batch_size=READ_ROWS):
                yield from split_lists(table.column("input_ids"))
