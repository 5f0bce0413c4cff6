"""Parquet: one unit per row group; each row is a record with the job's text/id/source/lang columns."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.output.storage import url_to_fs
from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.registry import InputFormat, register_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit


class ParquetFormat(InputFormat):
    name = "parquet"
    suffixes = (".parquet", ".pq")

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        import pyarrow.parquet as pq

        with file.fs.open(file.path, "rb") as handle:
            n = pq.ParquetFile(handle).metadata.num_row_groups
        return [
            WorkUnit(file.url, self.name, None, i, i + 1, file.size, file.etag) for i in range(n)
        ]

    def read(
        self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None
    ) -> Iterator[DocBatch]:
        import pyarrow.parquet as pq

        out = BatchBuilder(unit, opts)
        fs, path = url_to_fs(unit.url, storage_options)
        with fs.open(path, "rb") as handle:
            pf = pq.ParquetFile(handle)
            names = pf.schema_arrow.names
            fields = (opts.text_field, opts.id_field, opts.source_field, opts.lang_field)
            wanted = [c for c in dict.fromkeys((*fields, opts.messages_field)) if c in names]
            row = sum(pf.metadata.row_group(i).num_rows for i in range(unit.start))
            for rb in pf.iter_batches(
                batch_size=opts.batch_docs, row_groups=[unit.start], columns=wanted
            ):
                cols = {name: rb.column(name).to_pylist() for name in wanted}
                for i in range(rb.num_rows):
                    out.row(row, {k: v[i] for k, v in cols.items()})
                    row += 1
                    if out.full():
                        yield out.take()
        yield out.finish()


register_format(ParquetFormat())
