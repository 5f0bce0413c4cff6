"""Parquet: one unit per row group; each row is a record with the job's text/id/source/lang columns."""

from __future__ import annotations

from collections.abc import Iterator

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
            n = parquet.metadata.num_row_groups
            names = parquet.schema_arrow.names
        for name in dict.fromkeys(_fields(opts)):
            if names.count(name) > 1:
                raise InputError(
                    f"{file.url}: column {name!r} appears {names.count(name)} times in its schema"
                )
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
            wanted = [c for c in dict.fromkeys(_fields(opts)) if c in names]
            row = sum(pf.metadata.row_group(i).num_rows for i in range(unit.start))
            for rb in pf.iter_batches(
                batch_size=opts.batch_docs, row_groups=[unit.start], columns=wanted
            ):
                cols = {name: column_values(rb.column(name)) for name in wanted}
                for i in range(rb.num_rows):
                    out.row(row, {k: v[i] for k, v in cols.items()})
                    row += 1
                    if out.full():
                        yield out.take()
        yield out.finish()


def _fields(opts: ReadOptions) -> tuple[str, ...]:
    """The columns a job reads (text, id, source, lang, messages)."""
    return (opts.text_field, opts.id_field, opts.source_field, opts.lang_field, opts.messages_field)


register_format(ParquetFormat())
