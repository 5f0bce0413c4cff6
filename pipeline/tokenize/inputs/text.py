"""Plain text: one document per line (`text_mode: line`), or one per file (`text_mode: file`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.lines import (
    BOM,
    READ_ERRORS,
    LineFormat,
    error_name,
    open_unit,
)
from pipeline.tokenize.inputs.registry import register_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit


class TextFormat(LineFormat):
    name = "text"
    suffixes = (".txt", ".text")

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        if opts.text_mode == "file":
            return [
                WorkUnit(file.url, self.name, file.compression, 0, -1, file.size, file.etag, True)
            ]
        return super().plan_file(file, opts)

    def read(
        self,
        unit: WorkUnit,
        opts: ReadOptions,
        storage_options: dict | None,
        data: bytes | None = None,
    ) -> Iterator[DocBatch]:
        """`data`: a range of a big compressed file (line mode), handed over by its reader."""
        if unit.whole_file_text:
            yield self._whole_file(BatchBuilder(unit, opts), storage_options)
        else:
            yield from super().read(unit, opts, storage_options, data)

    def parse_line(
        self, out: BatchBuilder, offset: int, line_no: int | None, text: str, raw: bytes
    ) -> None:
        reason, nbytes = out.check_text(text, "text")
        if reason:
            out.reject(offset, line_no, None, reason, raw)
        else:
            out.accept(out.fallback_id(offset), text, nbytes, None, None, offset)

    def _whole_file(self, out: BatchBuilder, storage_options: dict | None) -> DocBatch:
        unit, limit = out.unit, out.opts.max_doc_bytes
        try:
            with open_unit(unit, storage_options) as stream:  # to its end, or past the limit
                parts, got = [], 0  # (a read may return less; a cut file's error comes after)
                while got <= limit:
                    part = stream.read(limit + 1 - got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                data = b"".join(parts)
        except READ_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            out.reject(0, None, None, f"unreadable input: {error_name(exc)}: {exc}", b"")
            return out.take()
        if len(data) > limit:
            out.reject(
                0, 1, None, f"document too large: more than max_doc_bytes {limit} bytes", data
            )
            return out.take()
        skip = len(BOM) if data.startswith(BOM) else 0  # (a BOM is no text; positions count it)
        try:
            text = data[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            where = exc.start + skip
            out.reject(0, None, None, f"invalid UTF-8 at byte {where} of the file", data)
            return out.take()
        reason, nbytes = out.check_text(text, "text")
        if reason:
            out.reject(0, 1, None, reason, data)
        else:
            doc_id = hashlib.sha256(unit.url.encode()).hexdigest()[:24]
            out.accept(doc_id, text, nbytes, None, None, 0)
        return out.take()


register_format(TextFormat())
