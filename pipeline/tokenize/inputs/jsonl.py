"""JSON lines: one JSON object per line, with the text, id, source and lang fields the job names.

Lines are parsed with orjson when it is installed, and with the standard library's json whenever
orjson's answer could differ from it: a line orjson refuses (the reject reason is json's), a
top-level value that is not an object, a float in the text or id field (orjson reads integers
beyond 64 bits as floats), or nested values that could reach json's recursion limit. So the
documents, rejects and reasons are the same with or without orjson."""

from __future__ import annotations

import json

from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.lines import LineFormat
from pipeline.tokenize.inputs.registry import register_format

try:
    import orjson
except ImportError:  # pragma: no cover - a declared dependency; json alone gives the same output
    orjson = None

_CONTAINERS = (dict, list)
# a line with fewer '[' and '{' than this cannot nest deep enough to reach json's recursion limit
_SAFE_BRACKETS = 200


class JsonLinesFormat(LineFormat):
    name = "jsonl"
    suffixes = (".jsonl", ".json", ".ndjson")

    def parse_fast(self, out: BatchBuilder, offset: int, line_no: int | None, raw: bytes) -> bool:
        if orjson is None:
            return False
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if type(record) is not dict:  # json's type names differ (big integers)
            return False
        opts = out.opts
        if type(record.get(opts.text_field)) is float or type(record.get(opts.id_field)) is float:
            return False  # an integer beyond 64 bits: json reads an int
        for value in record.values():
            if type(value) in _CONTAINERS:  # nested: json may refuse what orjson reads
                if raw.count(b"[") + raw.count(b"{") >= _SAFE_BRACKETS:
                    return False
                break
        out.record(record, (offset, line_no, None), offset, raw)
        return True

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
        out.record(record, (offset, line_no, None), offset, raw)


register_format(JsonLinesFormat())
