"""JSON lines: one JSON object per line, with the text, id, source and lang fields the job names."""

from __future__ import annotations

import json

from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.lines import LineFormat
from pipeline.tokenize.inputs.registry import register_format


class JsonLinesFormat(LineFormat):
    name = "jsonl"
    suffixes = (".jsonl", ".json", ".ndjson")

    def parse_line(
        self, out: BatchBuilder, offset: int, line_no: int | None, text: str, raw: bytes
    ) -> None:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            out.reject(offset, line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}", raw)
            return
        except RecursionError:
            out.reject(offset, line_no, None, "invalid JSON: nesting too deep", raw)
            return
        if not isinstance(record, dict):
            out.reject(
                offset,
                line_no,
                None,
                f"record is a JSON {type(record).__name__}, expected an object",
                raw,
            )
            return
        out.record(record, (offset, line_no, None), offset, lambda: raw)


register_format(JsonLinesFormat())
