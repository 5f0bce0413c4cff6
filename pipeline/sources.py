"""Where documents enter: expand input globs into WorkUnits and stream each unit as document batches.

A WorkUnit is a newline-aligned byte range of an uncompressed JSONL/text file, one Parquet row group,
or one whole compressed file (or whole text file in `text_mode: file`). Its id is a pure function of
(url, format, range, size, etag), so replanning the same inputs gives the same units on any machine.
Every record read ends up as a document or as a `Reject` naming its file, byte offset and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.storage import url_to_fs, with_retries
from schemas.shards import REJECT_RAW_BYTES

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
FORMATS_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".text": "text",
    ".parquet": "parquet",
    ".pq": "parquet",
}
READ_BLOCK = 1 << 20
BOM = b"\xef\xbb\xbf"
log = logging.getLogger("tokenmill")


class InputError(ValueError):
    """The inputs cannot be planned: a glob matches nothing, a path is missing, a format is unknown."""


@dataclass(frozen=True)
class ReadOptions:
    """How records are found in input files (part of the job config; all fields hash into unit ids)."""

    format: str = "auto"  # auto | jsonl | text | parquet
    text_mode: str = "line"  # for text inputs: one document per "line" or per "file"
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    lang_field: str = "lang"
    unit_bytes: int = 64 << 20
    max_doc_bytes: int = 32 << 20  # UTF-8 bytes of one document's text
    max_record_bytes: int = 64 << 20  # raw bytes of one input line/record (JSON escapes included)
    batch_docs: int = 256
    batch_bytes: int = 4 << 20
    source_tokenizer: str = ""  # format "shards": KIND:PATH of the tokenizer that wrote the input


@dataclass(frozen=True)
class WorkUnit:
    url: str
    fmt: str  # jsonl | text | parquet
    compression: str | None
    start: int  # byte offset, or row-group index for parquet
    end: int  # byte end (exclusive), -1 = to the end of the (decompressed) stream
    size: int
    etag: str = ""
    whole_file_text: bool = False

    @property
    def unit_id(self) -> str:
        key = json.dumps(
            [
                self.url,
                self.fmt,
                self.compression,
                self.start,
                self.end,
                self.size,
                self.etag,
                self.whole_file_text,
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def describe(self) -> dict[str, Any]:
        return {"unit_id": self.unit_id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkUnit:
        data = {k: v for k, v in data.items() if k != "unit_id"}
        return cls(**data)


@dataclass
class Reject:
    source: str
    offset: int | None
    line: int | None
    row: int | None
    reason: str
    raw: bytes


@dataclass
class DocBatch:
    doc_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    langs: list[str | None] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    byte_lengths: list[int] = field(default_factory=list)  # UTF-8 bytes of each text
    nbytes: int = 0
    blank: int = 0  # blank lines skipped (not records)

    @property
    def records(self) -> int:
        return len(self.texts) + len(self.rejects)


def detect(path: str, opts: ReadOptions) -> tuple[str, str | None]:
    """(format, compression) of a path from its suffixes, or the configured format."""
    name = posixpath.basename(path).lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
            break
    if opts.format != "auto":
        return opts.format, compression
    for suffix, fmt in FORMATS_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt, compression
    raise InputError(
        f"cannot tell the format of {path!r} from its name; set format: jsonl|text|parquet"
    )


def expand_inputs(inputs: list[str], storage_options: dict | None) -> list[tuple[Any, str, dict]]:
    """Expand globs into sorted (fs, path, info) triples; every pattern must match a regular file."""
    found: dict[str, tuple[Any, str, dict]] = {}
    for pattern in inputs:
        fs, path = url_to_fs(pattern, storage_options)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if any(ch in path for ch in "*?["):
            matches = with_retries(
                lambda fs=fs, path=path: fs.glob(path, detail=True), f"glob {pattern}"
            )
        else:
            try:
                matches = {
                    path: with_retries(lambda fs=fs, path=path: fs.info(path), f"stat {pattern}")
                }
            except (FileNotFoundError, OSError) as exc:
                looping = protocol in ("file", "local") and os.path.islink(path)
                if not looping and not isinstance(exc, FileNotFoundError):
                    raise
                what = "is a broken or looping symlink" if looping else "does not exist"
                raise InputError(f"input {pattern!r} {what}") from exc
        matches = {p: _follow_link(fs, p, info) for p, info in matches.items()}
        files = {p: info for p, info in matches.items() if info.get("type") == "file"}
        skipped = [
            f"{p} ({_not_a_file(info)})" for p, info in sorted(matches.items()) if p not in files
        ]
        if skipped:
            log.warning(
                "input %r: skipping what is not a regular file: %s", pattern, ", ".join(skipped)
            )
        if not files:
            extra = f" (skipped: {', '.join(skipped)})" if skipped else ""
            raise InputError(f"input {pattern!r} matches no files{extra}")
        for p, info in files.items():
            url = p if protocol in ("file", "local") else f"{protocol}://{p}"
            found[url] = (fs, p, info)
    return [found[k] for k in sorted(found)]


def _follow_link(fs: Any, path: str, info: dict) -> dict:
    """Listings describe a symlink itself; a link to a regular file is that file."""
    if not info.get("islink") or info.get("type") == "file":
        return info
    try:
        target = fs.info(path)
    except OSError:
        return info  # broken or looping: reported as skipped
    return {**target, "islink": True}


def _not_a_file(info: dict) -> str:
    if info.get("islink") and info.get("type") != "directory":
        return "a broken or looping symlink"
    return "a directory" if info.get("type") == "directory" else f"type {info.get('type')}"


def plan_units(
    inputs: list[str], opts: ReadOptions, storage_options: dict | None = None
) -> list[WorkUnit]:
    """Split every input file into WorkUnits (deterministic order: by URL, then offset)."""
    if opts.format == "shards":
        from pipeline.shard_source import plan_shard_units

        return plan_shard_units(inputs, storage_options)
    units: list[WorkUnit] = []
    for fs, path, info in expand_inputs(inputs, storage_options):
        url = _url_of(fs, path)
        fmt, compression = detect(path, opts)
        size = int(info.get("size") or 0)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        whole_text = fmt == "text" and opts.text_mode == "file"
        if fmt == "parquet":
            units.extend(_parquet_units(fs, path, url, size, etag))
        elif compression or whole_text or size <= opts.unit_bytes:
            units.append(WorkUnit(url, fmt, compression, 0, -1, size, etag, whole_text))
        else:
            bounds = _aligned_bounds(fs, path, size, opts.unit_bytes)
            units.extend(
                WorkUnit(url, fmt, None, a, b, size, etag)
                for a, b in zip(bounds, bounds[1:], strict=False)
            )
    return units


def _url_of(fs: Any, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _parquet_units(fs: Any, path: str, url: str, size: int, etag: str) -> list[WorkUnit]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        n = pq.ParquetFile(handle).metadata.num_row_groups
    return [WorkUnit(url, "parquet", None, i, i + 1, size, etag) for i in range(n)]


def _aligned_bounds(fs: Any, path: str, size: int, unit_bytes: int) -> list[int]:
    """Unit boundaries at line starts: each nominal boundary moves to just after the next newline."""
    bounds = [0]
    with fs.open(path, "rb") as handle:
        for nominal in range(unit_bytes, size, unit_bytes):
            if nominal <= bounds[-1]:
                continue
            handle.seek(nominal - 1)
            pos = nominal - 1
            while True:
                block = handle.read(READ_BLOCK)
                if not block:
                    pos = size
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    pos += nl + 1
                    break
                pos += len(block)
            if pos < size and pos > bounds[-1]:
                bounds.append(pos)
    bounds.append(size)
    return bounds


def _open_unit(unit: WorkUnit, storage_options: dict | None):
    fs, path = url_to_fs(unit.url, storage_options)
    if unit.compression == "zstd":
        # Not fsspec's zstandard stream_reader: it returns EOF silently when the input is truncated
        # (a cut at a line end would lose documents unnoticed). Arrow's stream reads every frame,
        # bounds its output per read, and raises OSError("Truncated compressed stream").
        import pyarrow as pa

        return pa.CompressedInputStream(fs.open(path, "rb"), "zstd")
    return fs.open(path, "rb", compression=unit.compression)


def _first_bytes(parts: list[bytes], n: int) -> bytes:
    """The first n bytes of the concatenation of parts, without joining them all."""
    head = bytearray()
    for part in parts:
        head += part[: n - len(head)]
        if len(head) >= n:
            break
    return bytes(head)


def iter_lines(
    stream, start: int, end: int, max_record_bytes: int
) -> Iterator[tuple[int, bytes | None, bytes]]:
    """Yield (offset, line or None if too large, head) for each line in [start, end) of a stream.

    Lines longer than max_record_bytes are never held whole: they yield None plus their first bytes.
    `end` = -1 reads to the end of the stream. Decompression errors propagate as they happen.
    """
    pos = start
    pending: list[bytes] = []
    pending_len = 0
    oversized = False
    head = b""
    line_start = start
    remaining = None if end < 0 else end - start
    while remaining is None or remaining > 0:
        want = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
        block = stream.read(want)
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
        view_start = 0
        while True:
            nl = block.find(b"\n", view_start)
            piece = block[view_start : nl if nl >= 0 else len(block)]
            if not oversized:
                if pending_len + len(piece) > max_record_bytes:
                    oversized = True
                    head = _first_bytes([*pending, piece], REJECT_RAW_BYTES)
                    pending, pending_len = [], 0
                else:
                    pending.append(piece)
                    pending_len += len(piece)
            if nl < 0:
                break
            if oversized:
                yield line_start, None, head
            else:
                line = b"".join(pending)
                yield line_start, line, line[:REJECT_RAW_BYTES]
            pos_after = pos + nl + 1
            line_start = pos_after
            pending, pending_len, oversized, head = [], 0, False, b""
            view_start = nl + 1
        pos += len(block)
    if oversized:
        yield line_start, None, head
    elif pending_len:
        line = b"".join(pending)
        yield line_start, line, line[:REJECT_RAW_BYTES]


class UnitReader:
    """Streams one WorkUnit as DocBatches of bounded size."""

    def __init__(self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None = None):
        self.unit = unit
        self.opts = opts
        self.storage_options = storage_options
        self.default_source = posixpath.basename(unit.url)
        self._batch = DocBatch()

    def __iter__(self) -> Iterator[DocBatch]:
        if self.unit.fmt == "shards":
            yield from self._shards()
            return
        if self.unit.fmt == "parquet":
            yield from self._parquet()
            return
        if self.unit.whole_file_text:
            yield from self._whole_file()
            return
        yield from self._lines()

    # -- batching -------------------------------------------------------------------------------
    def _full(self) -> bool:
        b = self._batch
        return len(b.texts) >= self.opts.batch_docs or b.nbytes >= self.opts.batch_bytes

    def _take(self) -> DocBatch:
        batch, self._batch = self._batch, DocBatch()
        return batch

    def _reject(
        self, offset: int | None, line: int | None, row: int | None, reason: str, raw: bytes
    ) -> None:
        self._batch.rejects.append(
            Reject(self.unit.url, offset, line, row, reason, raw[:REJECT_RAW_BYTES])
        )

    def _accept(self, doc_id: str, text: str, nbytes: int, source: Any, lang: Any) -> None:
        b = self._batch
        b.doc_ids.append(doc_id)
        b.texts.append(text)
        b.sources.append(source if isinstance(source, str) else self.default_source)
        b.langs.append(lang if isinstance(lang, str) else None)
        b.byte_lengths.append(nbytes)
        b.nbytes += nbytes

    def _fallback_id(self, offset: int) -> str:
        return hashlib.sha256(f"{self.unit.url}\0{offset}".encode()).hexdigest()[:24]

    def _check_text(self, text: Any, where: str) -> tuple[str | None, int]:
        """(reason, utf8 length): reason is None when the text is acceptable."""
        if not isinstance(text, str):
            return f"{where} is {type(text).__name__}, expected string", 0
        if not text:
            return "empty text", 0
        try:
            nbytes = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            return f"text has a lone surrogate at character {exc.start} (not encodable as UTF-8)", 0
        if nbytes > self.opts.max_doc_bytes:
            return (
                f"document too large: {nbytes} bytes > max_doc_bytes {self.opts.max_doc_bytes}",
                nbytes,
            )
        return None, nbytes

    # -- formats ----------------------------------------------------------------------------------
    def _lines(self) -> Iterator[DocBatch]:
        unit, opts = self.unit, self.opts
        line_no: int | None = 1 if unit.start == 0 else None
        last_offset = unit.start
        try:
            with _open_unit(unit, self.storage_options) as stream:
                if unit.start:
                    stream.seek(unit.start)
                for offset, raw, head in iter_lines(
                    stream, unit.start, unit.end, opts.max_record_bytes
                ):
                    last_offset = offset
                    self._line(offset, line_no, raw, head)
                    if line_no is not None:
                        line_no += 1
                    if self._full():
                        yield self._take()
        except (EOFError, OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            where = "decompressed offset" if unit.compression else "offset"
            self._reject(
                last_offset,
                None,
                None,
                f"unreadable input after {where} {last_offset}: {type(exc).__name__}: {exc}",
                b"",
            )
        yield self._take()

    def _line(self, offset: int, line_no: int | None, raw: bytes | None, head: bytes) -> None:
        opts = self.opts
        if raw is None:
            self._reject(
                offset,
                line_no,
                None,
                f"record too large: more than max_record_bytes {opts.max_record_bytes} bytes",
                head,
            )
            return
        if offset == 0 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            self._batch.blank += 1
            return
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(
                offset, line_no, None, f"invalid UTF-8 at byte {exc.start} of the record", raw
            )
            return
        if self.unit.fmt == "text":
            reason, nbytes = self._check_text(decoded, "text")
            if reason:
                self._reject(offset, line_no, None, reason, raw)
            else:
                self._accept(self._fallback_id(offset), decoded, nbytes, None, None)
            return
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as exc:
            self._reject(
                offset, line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}", raw
            )
            return
        except RecursionError:
            self._reject(offset, line_no, None, "invalid JSON: nesting too deep", raw)
            return
        if not isinstance(record, dict):
            self._reject(
                offset,
                line_no,
                None,
                f"record is a JSON {type(record).__name__}, expected an object",
                raw,
            )
            return
        self._record(record, (offset, line_no, None), offset, lambda: raw)

    def _record(
        self,
        record: dict[str, Any],
        position: tuple[int | None, int | None, int | None],
        key: int,
        raw: Callable[[], bytes],
    ) -> None:
        """One parsed record (a JSON object or a Parquet row) at `position` (offset, line, row):
        rejected with its reason, or accepted (its id, else one derived from `key`). `raw` makes
        the reject's raw bytes, and is called only for a reject."""
        opts = self.opts
        if opts.text_field not in record:
            self._reject(*position, f"missing text field {opts.text_field!r}", raw())
            return
        reason, nbytes = self._check_text(
            record[opts.text_field], f"text field {opts.text_field!r}"
        )
        if reason:
            self._reject(*position, reason, raw())
            return
        doc_id = record.get(opts.id_field)
        doc_id = (
            str(doc_id) if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool) else None
        )
        self._accept(
            doc_id or self._fallback_id(key),
            record[opts.text_field],
            nbytes,
            record.get(opts.source_field),
            record.get(opts.lang_field),
        )

    def _whole_file(self) -> Iterator[DocBatch]:
        unit, opts = self.unit, self.opts
        limit = opts.max_doc_bytes
        try:
            with _open_unit(unit, self.storage_options) as stream:
                data = stream.read(limit + 1)
        except (EOFError, OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            self._reject(0, None, None, f"unreadable input: {type(exc).__name__}: {exc}", b"")
            yield self._take()
            return
        if len(data) > limit:
            self._reject(
                0, 1, None, f"document too large: more than max_doc_bytes {limit} bytes", data
            )
        else:
            if data.startswith(BOM):
                data = data[len(BOM) :]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._reject(0, None, None, f"invalid UTF-8 at byte {exc.start} of the file", data)
            else:
                reason, nbytes = self._check_text(text, "text")
                if reason:
                    self._reject(0, 1, None, reason, data)
                else:
                    self._accept(
                        hashlib.sha256(unit.url.encode()).hexdigest()[:24], text, nbytes, None, None
                    )
        yield self._take()

    def _shards(self) -> Iterator[DocBatch]:
        """Documents of a committed shard, decoded to their exact bytes by the source tokenizer."""
        import pyarrow as pa

        from pipeline.shard_source import decoder_for

        tokenizer = decoder_for(self.opts.source_tokenizer, self.storage_options)
        fs, path = url_to_fs(self.unit.url, self.storage_options)
        reader = pa.ipc.open_file(
            pa.BufferReader(with_retries(lambda: fs.cat_file(path), f"read {path}"))
        )
        row = 0
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            ids, sources, langs = (rb.column(n).to_pylist() for n in ("doc_id", "source", "lang"))
            tokens = rb.column("tokens")
            for j in range(rb.num_rows):
                raw = tokenizer.decode_bytes(tokens[j].values.to_numpy(zero_copy_only=False))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._reject(
                        None, None, row, f"tokens decode to invalid UTF-8 at byte {exc.start}", raw
                    )
                else:
                    self._accept(ids[j], text, len(raw), sources[j], langs[j])
                row += 1
                if self._full():
                    yield self._take()
        yield self._take()

    def _parquet(self) -> Iterator[DocBatch]:
        import pyarrow.parquet as pq

        unit, opts = self.unit, self.opts
        fs, path = url_to_fs(unit.url, self.storage_options)
        with fs.open(path, "rb") as handle:
            pf = pq.ParquetFile(handle)
            names = pf.schema_arrow.names
            wanted = [
                c
                for c in (opts.text_field, opts.id_field, opts.source_field, opts.lang_field)
                if c in names
            ]
            row = sum(pf.metadata.row_group(i).num_rows for i in range(unit.start))
            for rb in pf.iter_batches(
                batch_size=opts.batch_docs, row_groups=[unit.start], columns=wanted
            ):
                cols = {name: rb.column(name).to_pylist() for name in wanted}
                for i in range(rb.num_rows):
                    self._parquet_row(row, {k: v[i] for k, v in cols.items()})
                    row += 1
                    if self._full():
                        yield self._take()
        yield self._take()

    def _parquet_row(self, row: int, record: dict[str, Any]) -> None:
        self._record(
            record,
            (None, None, row),
            row,
            lambda: json.dumps(record, default=str, ensure_ascii=False).encode(),
        )
