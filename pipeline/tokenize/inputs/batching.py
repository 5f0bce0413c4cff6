"""What every input format shares: building bounded DocBatches, and the checks that turn a record
into a document or a reject with its reason."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Callable
from typing import Any

from pipeline.tokenize.inputs.chat import ChatError, ChatRenderer
from pipeline.tokenize.inputs.types import DocBatch, ReadOptions, Reject, WorkUnit
from schemas.shards import REJECT_RAW_BYTES

Position = tuple[int | None, int | None, int | None]  # (byte offset, 1-based line, Parquet row)

log = logging.getLogger("tokenmill")


def _where(position: Position) -> str:
    offset, line, row = position
    if line is not None:
        return f"line {line}"
    return f"row {row}" if row is not None else f"offset {offset}"


def _raw(raw: bytes | Callable[[], bytes]) -> bytes:
    return raw() if callable(raw) else raw


def _plain(value: Any) -> bool:
    """Whether a record's id, source or lang needs no encoding check: not a str, or ASCII."""
    return type(value) is not str or value.isascii()


def _a(name: str) -> str:
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


REJECTS_PER_BATCH = 4096  # a batch is cut at this many rejects too (or batch_docs if more)


def max_rejects(opts: ReadOptions) -> int:
    """Rejects a batch holds at most: memory stays bounded in a unit of bad records (each holds
    up to REJECT_RAW_BYTES of its record; 2 M bad lines in one batch took 1.2 GB)."""
    return max(opts.batch_docs, REJECTS_PER_BATCH)


class BatchBuilder:
    """Collects one unit's documents and rejects into batches of at most `batch_docs` documents,
    `batch_bytes` text bytes or `max_rejects` rejects; every record read goes through `accept` or
    `reject`."""

    def __init__(self, unit: WorkUnit, opts: ReadOptions):
        self.unit = unit
        self.opts = opts
        self.max_rejects = max_rejects(opts)
        self.default_source = posixpath.basename(unit.url)
        self.chat = ChatRenderer(opts) if opts.chat_template else None
        self._batch = self._new_batch()
        self.last_offset = unit.start  # the last record's offset (line readers: for errors)
        self.bad_ids = 0  # records whose id field is present but not a string/integer
        self._first_bad_id = ""
        # fallback ids hash f"{url}\0{offset}": the url's part hashed once, copied per id
        self._id_hash = hashlib.sha256(f"{unit.url}\0".encode())

    @property
    def current(self) -> DocBatch:
        """The batch being filled (a reader's own loop may append to it as `record` does)."""
        return self._batch

    @property
    def blank(self) -> int:
        return self._batch.blank

    def skip_blank(self) -> None:
        self._batch.blank += 1

    def full(self) -> bool:
        b = self._batch
        return (
            len(b.texts) >= self.opts.batch_docs
            or b.nbytes >= self.opts.batch_bytes
            or len(b.rejects) >= self.max_rejects
        )

    def _new_batch(self) -> DocBatch:
        return DocBatch(segments=[] if self.chat is not None else None)

    def take(self) -> DocBatch:
        batch, self._batch = self._batch, self._new_batch()
        return batch

    def finish(self) -> DocBatch:
        """The unit's last batch; says (once per unit) how many records had an unusable id."""
        if self.bad_ids:
            log.warning(
                "%s: %d record%s a non-string id field %r (first at %s); they get hash ids",
                self._unit_name(),
                self.bad_ids,
                " has" if self.bad_ids == 1 else "s have",
                self.opts.id_field,
                self._first_bad_id,
            )
        return self.take()

    def _unit_name(self) -> str:
        unit = self.unit
        if unit.start == 0 and unit.end == -1:
            return unit.url
        if unit.fmt == "parquet":
            return f"{unit.url} ({row_groups(unit.start, unit.end)})"
        return f"{unit.url} (bytes {unit.start}..{unit.end})"

    def _usable_id(self, doc_id: Any, position: Position) -> str | None:
        """A record's id as a string (str and int ids); None (a hash id) for anything else, counted
        when the field is there but holds another type (null counts as no id)."""
        if isinstance(doc_id, str) or (isinstance(doc_id, int) and not isinstance(doc_id, bool)):
            return str(doc_id)
        if doc_id is not None:
            if not self.bad_ids:
                self._first_bad_id = f"{_where(position)}, {_a(type(doc_id).__name__)}"
            self.bad_ids += 1
        return None

    def reject(
        self, offset: int | None, line: int | None, row: int | None, reason: str, raw: bytes
    ) -> None:
        self._batch.rejects.append(
            Reject(self.unit.url, offset, line, row, reason, raw[:REJECT_RAW_BYTES])
        )

    def accept(
        self,
        doc_id: str,
        text: str,
        nbytes: int,
        source: Any,
        lang: Any,
        offset: int | None = None,
    ) -> None:
        b = self._batch
        b.doc_ids.append(doc_id)
        b.texts.append(text)
        b.sources.append(source if isinstance(source, str) else self.default_source)
        b.langs.append(lang if isinstance(lang, str) else None)
        b.byte_lengths.append(nbytes)
        b.input_offsets.append(offset)
        b.nbytes += nbytes
        if b.segments is not None:
            b.segments.append(None)

    def fallback_id(self, offset: int) -> str:
        """The id of a document whose record has none: a hash of (url, offset or row)."""
        digest = self._id_hash.copy()
        digest.update(str(offset).encode())
        return digest.hexdigest()[:24]

    def check_text(self, text: Any, where: str) -> tuple[str | None, int]:
        """(reason, utf8 length): reason is None when the text is acceptable."""
        if not isinstance(text, str):
            return f"{where} is {type(text).__name__}, expected string", 0
        if not text:
            return "empty text", 0
        if text.isascii():  # constant time: an ASCII str knows it is one
            nbytes = len(text)
        else:
            try:
                nbytes = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                return (
                    f"text has a lone surrogate at character {exc.start} (not encodable as UTF-8)",
                    0,
                )
        if nbytes > self.opts.max_doc_bytes:
            return (
                f"document too large: {nbytes} bytes > max_doc_bytes {self.opts.max_doc_bytes}",
                nbytes,
            )
        return None, nbytes

    def record(
        self,
        record: dict[str, Any],
        position: Position,
        key: int,
        raw: bytes | Callable[[], bytes],
    ) -> None:
        """One parsed record (a JSON object or a Parquet row) at `position`: rejected with its
        reason, or accepted (its id, else one derived from `key`). `raw`: the reject's raw bytes,
        or a function that makes them (called only for a reject)."""
        opts = self.opts
        field = opts.text_field
        if self.chat is not None and (opts.format == "chat" or field not in record):
            self._chat_record(record, position, key, raw)
            return
        if field not in record:
            hint = ""
            if opts.messages_field in record:  # (what it holds is checked with a template)
                hint = f" (it has {opts.messages_field!r}: give --chat-template to read chats)"
            self.reject(*position, f"missing text field {field!r}{hint}", _raw(raw))
            return
        text = record[field]
        # the usual document (an ASCII str of acceptable size) passes check_text without a word
        if type(text) is str and text and text.isascii() and len(text) <= opts.max_doc_bytes:
            nbytes = len(text)
        else:
            if isinstance(text, bytes):  # a binary column of a table format: UTF-8 text
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError as exc:
                    reason = (
                        f"text field {field!r} is bytes, not UTF-8 (invalid at byte {exc.start})"
                    )
                    self.reject(*position, reason, _raw(raw))
                    return
            reason, nbytes = self.check_text(text, f"text field {field!r}")
            if reason:
                self.reject(*position, reason, _raw(raw))
                return
        doc_id = record.get(opts.id_field)
        if type(doc_id) is not str and doc_id is not None:  # None: no id, nothing to count
            doc_id = self._usable_id(doc_id, position)
        source = record.get(opts.source_field)
        lang = record.get(opts.lang_field)
        if not (_plain(doc_id) and _plain(source) and _plain(lang)):
            reason = self._unencodable(doc_id, source, lang)
            if reason:
                self.reject(*position, reason, _raw(raw))
                return
        b = self._batch  # accept(), inlined
        b.doc_ids.append(doc_id or self.fallback_id(key))
        b.texts.append(text)
        b.sources.append(source if isinstance(source, str) else self.default_source)
        b.langs.append(lang if isinstance(lang, str) else None)
        b.byte_lengths.append(nbytes)
        b.input_offsets.append(position[0])
        b.nbytes += nbytes
        if b.segments is not None:
            b.segments.append(None)

    def _unencodable(self, doc_id: Any, source: Any, lang: Any) -> str | None:
        """Why a record's id, source or lang string cannot be stored (a lone surrogate, which
        Python's json reads from a JSON escape and UTF-8 cannot encode); None when they can."""
        opts = self.opts
        for role, field, value in (("id", opts.id_field, doc_id),
                                   ("source", opts.source_field, source),
                                   ("lang", opts.lang_field, lang)):  # fmt: skip
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return (
                        f"{role} field {field!r} has a lone surrogate at character {exc.start} "
                        "(not encodable as UTF-8)"
                    )
        return None

    def row(self, row: int, record: dict[str, Any]) -> None:
        """A row of a table format (Parquet, Arrow): `record` at its row index in the file."""
        self.record(
            record,
            (None, None, row),
            row,
            lambda: json.dumps(record, default=str, ensure_ascii=False).encode(),
        )

    def _chat_record(
        self,
        record: dict[str, Any],
        position: Position,
        key: int,
        raw: bytes | Callable[[], bytes],
    ) -> None:
        """A conversation: rendered into chat segments, or rejected with the reason."""
        opts = self.opts
        if opts.messages_field not in record:
            self.reject(*position, f"missing messages field {opts.messages_field!r}", _raw(raw))
            return
        try:
            segments = self.chat.segments(record[opts.messages_field])
        except ChatError as exc:
            self.reject(*position, str(exc), _raw(raw))
            return
        text = "".join(s[0] for s in segments)
        reason, nbytes = self.check_text(text, "rendered conversation")
        if reason:
            self.reject(*position, reason, _raw(raw))
            return
        doc_id = self._usable_id(record.get(opts.id_field), position)
        reason = self._unencodable(
            doc_id, record.get(opts.source_field), record.get(opts.lang_field)
        )
        if reason:
            self.reject(*position, reason, _raw(raw))
            return
        self.accept(
            doc_id or self.fallback_id(key),
            text,
            nbytes,
            record.get(opts.source_field),
            record.get(opts.lang_field),
            position[0],
        )
        self._batch.segments[-1] = segments


class OutOfRange:
    """Stands in for the values of a table column Python cannot hold (a timestamp past the year
    9999): no field check takes one, so each row is what a value of a wrong type makes it (a
    reject for a text, a hash id, the default source); its text in a reject's raw record names
    the column's type."""

    arrow_type = ""

    def __str__(self) -> str:
        return f"<{self.arrow_type} value out of Python's range>"


def column_values(column: Any) -> list[Any]:
    """A table column's values as Python objects (`to_pylist`), or, where Python cannot hold
    them, one OutOfRange stand-in per row, named after the column's Arrow type."""
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):  # (ArrowInvalid is a ValueError)
        name = f"{column.type} value out of Python's range"
        stand_in = type(name, (OutOfRange,), {"arrow_type": str(column.type)})()
        return [stand_in] * len(column)


def row_groups(start: int, end: int) -> str:
    """A Parquet unit's row groups [start, end) in words."""
    return f"row group {start}" if end == start + 1 else f"row groups {start}-{end - 1}"
