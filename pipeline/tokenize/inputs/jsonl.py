"""JSON lines: one JSON object per line, with the text, id, source and lang fields the job names.

Lines are parsed with orjson when it is installed, and with the standard library's json whenever
orjson's answer could differ from it: a line orjson refuses (the reject reason is json's), a
top-level value that is not an object, a float in the text or id field (orjson reads integers
beyond 64 bits as floats), or nested values that could reach json's recursion limit. So the
documents, rejects and reasons are the same with or without orjson."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Generator, Iterable

import numpy as np

from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.lines import LineFormat, LineRun
from pipeline.tokenize.inputs.registry import register_format
from pipeline.tokenize.inputs.types import DocBatch, ReadOptions
from tokenizers_impl.texts import Utf8Texts

try:
    import orjson
except ImportError:  # pragma: no cover - a declared dependency; json alone gives the same output
    orjson = None

_CONTAINERS = (dict, list)
# a line with fewer '[' and '{' than this cannot nest deep enough to reach json's recursion limit
_SAFE_BRACKETS = 200
# deeper lines are rejected, whoever reads them: json's own limit (a RecursionError) depends on
# how deep the caller's stack is, which differs between the driver, its threads and actors
MAX_DEPTH = 512
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string (the unrolled loop: fast)
_DEEP = threading.Lock()
_SCAN = "pipeline.tokenize.inputs.jsonscan"  # loaded (by a unit big enough): runs go through it


class JsonLinesFormat(LineFormat):
    name = "jsonl"
    suffixes = (".jsonl", ".json", ".ndjson")

    def _lines(
        self, out: BatchBuilder, offset: int, line_no: int | None, lines: Iterable[bytes]
    ) -> Generator[DocBatch, None, int | None]:
        """A run of whole lines in one loop: the usual record (an object whose text is a
        non-empty string of acceptable size, whose id is a string or absent) is taken here,
        exactly as `parse_fast` and `BatchBuilder.record` take it, without their calls per line;
        any other line (blank, a BOM to strip, not JSON, anything to reject or count) goes through
        `_line` as before. Same documents, ids, rejects and batch cuts."""
        if orjson is None or out.chat is not None:
            return (yield from super()._lines(out, offset, line_no, lines))
        if type(lines) is LineRun and _SCAN in sys.modules:
            keys = _field_keys(out.opts)
            if keys is not None:
                return (yield from _scanned(self, out, offset, line_no, lines, keys))
        loads, not_json, containers = orjson.loads, orjson.JSONDecodeError, _CONTAINERS
        opts = out.opts
        text_field, id_field = opts.text_field, opts.id_field
        source_field, lang_field = opts.source_field, opts.lang_field
        max_doc, max_docs, max_bytes = opts.max_doc_bytes, opts.batch_docs, opts.batch_bytes
        most_rejects = out.max_rejects
        default_source = out.default_source
        batch = out.current
        for raw in lines:
            out.last_offset = offset
            record = None
            if offset:  # (offset 0: a BOM to strip, in _line)
                body = raw[:-1] if raw[-1:] == b"\r" else raw  # a CRLF line end, as _line strips it
                try:  # noqa: SIM105 (contextlib.suppress: a context manager per line)
                    record = loads(body)
                except not_json:
                    pass
            taken = False
            if type(record) is dict:
                text = record.get(text_field)
                doc_id = record.get(id_field)
                if type(text) is str and text and (type(doc_id) is str or doc_id is None):
                    nbytes = len(text) if text.isascii() else _utf8_length(text)
                    taken = 0 < nbytes <= max_doc and _shallow(record, body, containers)
            if taken:
                source = record.get(source_field)
                lang = record.get(lang_field)
                batch.doc_ids.append(doc_id or out.fallback_id(offset))
                batch.texts.append(text)
                batch.sources.append(source if type(source) is str else default_source)
                batch.langs.append(lang if type(lang) is str else None)
                batch.byte_lengths.append(nbytes)
                batch.input_offsets.append(offset)
                batch.nbytes += nbytes
            else:
                self._line(out, offset, line_no, raw, raw)
            offset += len(raw) + 1
            if line_no is not None:
                line_no += 1
            if (  # out.full()
                len(batch.texts) >= max_docs
                or batch.nbytes >= max_bytes
                or len(batch.rejects) >= most_rejects
            ):
                yield out.take()
                batch = out.current
        return line_no

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
        if not _shallow(record, raw, _CONTAINERS):  # nested deep: json may refuse what orjson reads
            return False
        out.record(record, (offset, line_no, None), offset, raw)
        return True

    def parse_line(
        self, out: BatchBuilder, offset: int, line_no: int | None, text: str, raw: bytes
    ) -> None:
        deep = _brackets(raw) >= _SAFE_BRACKETS
        if deep and _depth(raw) > MAX_DEPTH:
            out.reject(offset, line_no, None, f"invalid JSON: nested deeper than {MAX_DEPTH}", raw)
            return
        try:
            record = _loads_deep(text) if deep else json.loads(text)
        except json.JSONDecodeError as exc:
            # (the reasons are output bytes: json's "...starting at" then reads "at at column")
            out.reject(offset, line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}", raw)
            return
        except RecursionError:  # (not past MAX_DEPTH: a caller deep in its own stack)
            out.reject(offset, line_no, None, "invalid JSON: nesting too deep", raw)
            return
        except ValueError as exc:  # an integer of more digits than int() takes (4300)
            out.reject(offset, line_no, None, f"invalid JSON: {exc}", raw)
            return
        if not isinstance(record, dict):
            kind = type(record).__name__  # (Python's type names: reasons are output bytes)
            out.reject(offset, line_no, None, f"record is a JSON {kind}, expected an object", raw)
            return
        out.record(record, (offset, line_no, None), offset, raw)


def _utf8_length(text: str) -> int:
    """UTF-8 bytes of a non-ASCII text; 0 when it has a lone surrogate (the general path then
    rejects it with its reason; orjson never makes one)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return 0


def _brackets(raw: bytes) -> int:
    return raw.count(b"[") + raw.count(b"{")


def _loads_deep(text: str) -> object:
    """json.loads of a line nested up to MAX_DEPTH, with room for that many levels above this
    frame whatever the caller's stack (the recursion limit raised meanwhile, one thread at a
    time)."""
    frame, depth = sys._getframe(), 0
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    with _DEEP:
        limit = sys.getrecursionlimit()
        need = depth + MAX_DEPTH + 100
        if need > limit:
            sys.setrecursionlimit(need)
        try:
            return json.loads(text)
        finally:
            if need > limit:
                sys.setrecursionlimit(limit)


def _depth(raw: bytes) -> int:
    """How deep the line's arrays and objects nest (brackets inside strings left out)."""
    import numpy as np

    bare = _STRINGS.sub(b"", raw)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = (codes == 0x5B).astype(np.int32) + (codes == 0x7B)
    steps -= (codes == 0x5D).astype(np.int32) + (codes == 0x7D)
    return int(np.cumsum(steps).max(initial=0))


def _shallow(record: dict, raw: bytes, containers: tuple) -> bool:
    """What parse_fast checks before taking orjson's record: no nested value, or too few
    brackets in the line to reach json's recursion limit."""
    for value in record.values():
        if type(value) in containers:
            return raw.count(b"[") + raw.count(b"{") < _SAFE_BRACKETS
    return True


def _field_keys(opts: ReadOptions) -> tuple[np.ndarray, np.ndarray] | None:
    """The compiled pass's field names (text, id, source, lang), or None when two are the same
    field (the per-line reader gives one value to both) or one is not valid Unicode."""
    names = (opts.text_field, opts.id_field, opts.source_field, opts.lang_field)
    if len(set(names)) < len(names):
        return None
    keys = _KEYS.get(names)
    if keys is None:
        from pipeline.tokenize.inputs.jsonscan import field_keys

        try:
            keys = _KEYS[names] = field_keys(*names)
        except UnicodeEncodeError:  # (a lone surrogate: no line's key spells it in UTF-8)
            return None
    return keys


_KEYS: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}


def _scanned(
    fmt: JsonLinesFormat,
    out: BatchBuilder,
    offset: int,
    line_no: int | None,
    run: LineRun,
    keys: tuple[np.ndarray, np.ndarray],
) -> Generator[DocBatch, None, int | None]:
    """`JsonLinesFormat._lines` through the compiled pass (jsonscan), at most MAX_LINES lines a
    call (its table and the list of the lines it leaves stay small: a block of blank lines is a
    million lines): the lines it takes join the batch in bulk, their texts as UTF-8 bytes
    (Utf8Texts), cut into batches where the per-line loop would cut them; every other line goes
    through `_line`, in its place. Same documents, ids, rejects and batch cuts as the per-line
    reader."""
    from pipeline.tokenize.inputs import jsonscan as js

    buf = np.frombuffer(run.block, dtype=np.uint8)
    base = offset - run.at  # the input offset of block[0]
    max_text = min(out.opts.max_doc_bytes, js.MAX_TEXT)
    at = run.at
    while at <= run.last:
        rows, texts, misc = js.scan_run(buf, at, run.last, *keys, max_text, js.TABLES)
        if base + at == 0:  # (a BOM to strip: _line)
            rows[0, js.STATUS] = js.SLOW
        line_no = yield from _scanned_rows(fmt, out, line_no, run, rows, texts, misc, base)
        at = int(rows[-1, js.END]) + 1
    return line_no


def _scanned_rows(
    fmt: JsonLinesFormat,
    out: BatchBuilder,
    line_no: int | None,
    run: LineRun,
    rows: np.ndarray,
    texts: np.ndarray,
    misc: np.ndarray,
    base: int,
) -> Generator[DocBatch, None, int | None]:
    """The lines of one call of the compiled pass, in order (see `_scanned`)."""
    from pipeline.tokenize.inputs import jsonscan as js

    opts = out.opts
    taken = rows[:, js.STATUS] == 0
    sizes = np.where(taken, rows[:, js.TEXT_END] - rows[:, js.TEXT], 0)
    ends = np.cumsum(sizes)  # text bytes of the taken lines up to each line
    max_docs, max_bytes = opts.batch_docs, opts.batch_bytes
    i = 0
    for j in [*np.flatnonzero(~taken).tolist(), len(rows)]:
        while i < j:  # lines i..j-1 are taken: as many as the batch holds at once
            batch = out.current
            before = int(ends[i - 1]) if i else 0
            fills = int(np.searchsorted(ends, max_bytes - batch.nbytes + before))
            k = min(j - i, max_docs - len(batch.texts), fills - i + 1)
            _take(out, batch, rows[i : i + k], texts, misc, base)
            i += k
            if line_no is not None:
                line_no += k
            if out.full():
                yield out.take()
        if j == len(rows):
            break
        start, end = int(rows[j, js.START]), int(rows[j, js.END])
        raw = run.block[start:end]
        out.last_offset = base + start
        fmt._line(out, base + start, line_no, raw, raw)
        if line_no is not None:
            line_no += 1
        if out.full():
            yield out.take()
        i = j + 1
    return line_no


def _take(
    out: BatchBuilder,
    batch: DocBatch,
    rows: np.ndarray,
    texts: np.ndarray,
    misc: np.ndarray,
    base: int,
) -> None:
    """Add the taken lines `rows` (consecutive, their texts contiguous in `texts`) to the batch."""
    from pipeline.tokenize.inputs import jsonscan as js

    if type(batch.texts) is not Utf8Texts:
        batch.texts = Utf8Texts.of(batch.texts)
    first, last = int(rows[0, js.TEXT]), int(rows[-1, js.TEXT_END])
    bounds = np.empty(len(rows) + 1, dtype=np.int64)
    bounds[:-1] = rows[:, js.TEXT] - first
    bounds[-1] = last - first
    batch.texts.extend_utf8(texts[first:last], bounds)
    sizes = (rows[:, js.TEXT_END] - rows[:, js.TEXT]).tolist()
    batch.byte_lengths.extend(sizes)
    batch.nbytes += sum(sizes)
    offsets = (rows[:, js.START] + base).tolist()
    batch.input_offsets.extend(offsets)
    out.last_offset = offsets[-1]
    ids = _strings(rows[:, js.ID], rows[:, js.ID_END], misc)
    if ids is None:
        batch.doc_ids.extend(map(out.fallback_id, offsets))
    else:
        batch.doc_ids.extend(d or out.fallback_id(o) for d, o in zip(ids, offsets, strict=True))
    sources = _strings(rows[:, js.SOURCE], rows[:, js.SOURCE_END], misc)
    default = out.default_source
    if sources is None:
        batch.sources.extend([default] * len(rows))
    else:
        batch.sources.extend(default if s is None else s for s in sources)
    langs = _strings(rows[:, js.LANG], rows[:, js.LANG_END], misc)
    batch.langs.extend([None] * len(rows) if langs is None else langs)


def _strings(starts: np.ndarray, ends: np.ndarray, misc: np.ndarray) -> list[str | None] | None:
    """The strings misc[start:end] (None where start < 0: absent), or None when all are absent."""
    if (starts < 0).all():
        return None
    return [
        None if s < 0 else misc[s:e].tobytes().decode("utf-8")
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


register_format(JsonLinesFormat())
