"""Arrow IPC inputs (`.arrow`): the IPC *file* format (it starts with b"ARROW1") and the IPC
*stream* format (what Hugging Face `datasets` writes as `data-NNNNN-of-NNNNN.arrow`), told apart by
their first bytes. Each row is a record with the job's text/id/source/lang/messages columns.

A unit is a byte range [start, end) of the file that holds whole record-batch messages: consecutive
batches up to `unit_bytes` (a bigger batch is a unit of its own). Planning walks the message
*headers* of the file's IPC stream (the file format embeds one) and seeks past the bodies, so it
reads a few hundred bytes per batch. A unit is read by handing a stream reader the schema message,
the dictionary messages before the unit, the unit's bytes and an end-of-stream marker: earlier
batches are never read, in either format. The same header walk gives the unit's first row, so a
reject names its row within the file and fallback ids are unique per file. The walk of a file is
kept per process (keyed by its URL and version), so a driver that planned a file, or an actor that
read one of its units, does not walk it again.

A truncated or corrupt file is an InputError naming the file and the byte offset (and record batch)
where it breaks, at planning when the headers show it, else when the batch is read. A compressed
file (`.arrow.gz`, `.arrow.zst`) is refused: the IPC format compresses its own buffers (LZ4/ZSTD),
which is read as usual.

The default source of a row without a source column is the file's name, except for a `datasets`
data file (`data-NNNNN-of-NNNNN.arrow`), whose source is the folder holding it: the split name of a
DatasetDict, the dataset's folder for a Dataset (see hf_disk.py)."""

from __future__ import annotations

import posixpath
import re
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError
from pipeline.output.storage import url_to_fs
from pipeline.tokenize.inputs.batching import BatchBuilder, column_values
from pipeline.tokenize.inputs.registry import InputFormat, register_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit

MAGIC = b"ARROW1"
FILE_HEAD = 8  # the file format's magic and its padding, before the embedded stream
TRAILER = 10  # the file format's last bytes: int32 footer length, then the magic again
CONTINUATION = b"\xff\xff\xff\xff"
EOS = CONTINUATION + b"\x00\x00\x00\x00"
SCHEMA, DICTIONARY, RECORD_BATCH = 1, 2, 3  # flatbuffer MessageHeader union tags
COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"FEA1": "Feather v1"}
WALK_BLOCK = 1 << 16  # read-ahead of the header walk (a remote read per header at most)
CACHED_WALKS = 32
# a `datasets` save's data file: data-00000-of-00001.arrow, or dataset.arrow (datasets < 2.8)
HF_DATA_FILE = re.compile(r"data-\d+-of-\d+\.arrow|dataset\.arrow")


@dataclass(frozen=True)
class Message:
    """One encapsulated IPC message: where it is, its length (prefix, metadata and body), its
    kind and, for a record batch, its row count."""

    offset: int
    length: int
    kind: int
    rows: int


_WALKS: OrderedDict[tuple, tuple[Message, ...]] = OrderedDict()


def default_source(url: str) -> str:
    """The source of a row without one: the file's name, or for a `datasets` data file the name of
    its folder (a DatasetDict's split)."""
    name = posixpath.basename(url)
    if HF_DATA_FILE.fullmatch(name):
        return posixpath.basename(posixpath.dirname(url)) or name
    return name


def _read_at(handle: Any, pos: int, n: int) -> bytes:
    handle.seek(pos)
    return handle.read(n)


def _table(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(position, vtable position, vtable length) of the flatbuffer table at `pos`."""
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    return pos, vtable, struct.unpack_from("<H", buf, vtable)[0]


def _field(buf: bytes, table: tuple[int, int, int], index: int) -> int | None:
    """Position of field `index` of a table, None when absent (it has its default)."""
    pos, vtable, vtable_len = table
    slot = 4 + 2 * index
    if slot + 2 > vtable_len:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return pos + offset if offset else None


def _parse(meta: bytes) -> tuple[int, int, int]:
    """(header kind, body length, rows) of a Message flatbuffer (format/Message.fbs: Message has
    version, header_type, header, bodyLength; RecordBatch starts with length)."""
    message = _table(meta, struct.unpack_from("<I", meta, 0)[0])
    at = _field(meta, message, 1)
    kind = meta[at] if at is not None else 0
    at = _field(meta, message, 3)
    body = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    rows = 0
    if kind == RECORD_BATCH:
        at = _field(meta, message, 2)
        if at is None:
            raise ValueError("a record batch message without its header")
        batch = _table(meta, at + struct.unpack_from("<I", meta, at)[0])
        at = _field(meta, batch, 0)
        rows = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    if kind not in (SCHEMA, DICTIONARY, RECORD_BATCH) or body < 0 or rows < 0:
        raise ValueError(f"message kind {kind}, body {body} bytes, {rows} rows")
    return kind, body, rows


def _message_at(handle: Any, url: str, pos: int, limit: int, batch: int) -> Message | None:
    """The message at byte `pos` (None at the end-of-stream marker); `batch`: how many record
    batches came before it (for the error message)."""
    where = f"{url}: the Arrow IPC message at byte {pos} ({batch} record batches before it)"
    prefix = _read_at(handle, pos, 8)
    if prefix[:4] == CONTINUATION:
        if len(prefix) < 8:
            raise InputError(f"{where} is cut short: truncated file?")
        meta_len, skip = struct.unpack_from("<i", prefix, 4)[0], 8
    elif len(prefix) >= 4:  # the format before Arrow 0.15: no continuation marker
        meta_len, skip = struct.unpack_from("<i", prefix, 0)[0], 4
    else:
        raise InputError(f"{where} is cut short: truncated file?")
    if meta_len == 0:
        return None
    if meta_len < 0:
        raise InputError(f"{where} is corrupt: metadata length {meta_len}")
    if pos + skip + meta_len > limit:
        raise InputError(
            f"{where} is cut short: {meta_len} bytes of metadata, {limit - pos - skip} left in "
            "the file: truncated?"
        )
    try:
        kind, body, rows = _parse(_read_at(handle, pos + skip, meta_len))
    except (struct.error, IndexError, ValueError) as exc:
        raise InputError(f"{where} is corrupt: unreadable metadata ({exc})") from None
    length = skip + meta_len + body
    if pos + length > limit:
        raise InputError(
            f"{where} is cut short: it needs {length} bytes, the file has {limit - pos} from "
            "there: truncated?"
        )
    return Message(pos, length, kind, rows)


def _footer_start(handle: Any, url: str, size: int) -> int:
    """Where the file format's footer starts (its stream ends there at the latest)."""
    tail = _read_at(handle, max(0, size - TRAILER), TRAILER)
    if size < FILE_HEAD + TRAILER or tail[4:] != MAGIC:
        raise InputError(
            f"{url}: an Arrow IPC file that does not end with its footer and {MAGIC!r}: truncated?"
        )
    start = size - TRAILER - struct.unpack_from("<i", tail, 0)[0]
    if not FILE_HEAD <= start <= size - TRAILER:
        raise InputError(f"{url}: an Arrow IPC file whose footer length is corrupt")
    return start


def walk(handle: Any, url: str, size: int) -> tuple[Message, ...]:
    """Every message of the file's IPC stream, headers only; an InputError names the file and the
    byte offset where it is truncated or corrupt."""
    head = _read_at(handle, 0, FILE_HEAD)
    if not head:
        raise InputError(f"{url}: an empty file, not Arrow IPC")
    for magic, what in COMPRESSED.items():
        if head.startswith(magic):
            raise InputError(f"{url}: {what} data, not Arrow IPC; decompress or convert it")
    is_file = head.startswith(MAGIC)
    pos, limit = (FILE_HEAD, _footer_start(handle, url, size)) if is_file else (0, size)
    legacy_len = struct.unpack_from("<i", head.ljust(4, b"\0"), 0)[0]
    if not is_file and head[:4] != CONTINUATION and not 0 < legacy_len < 1 << 24:
        raise InputError(f"{url}: not Arrow IPC (it starts with {head!r})")
    messages: list[Message] = []
    batches = 0
    while pos < limit:
        message = _message_at(handle, url, pos, limit, batches)
        if message is None:
            break
        if (message.kind == SCHEMA) != (not messages):
            raise InputError(f"{url}: Arrow IPC stream without a schema first, at byte {pos}")
        messages.append(message)
        batches += message.kind == RECORD_BATCH
        pos += message.length
    else:
        if not is_file:
            raise InputError(
                f"{url}: the Arrow IPC stream ends at byte {size} without its end-of-stream "
                f"marker, after {batches} record batches: truncated?"
            )
    if not messages:
        raise InputError(f"{url}: Arrow IPC without a schema")
    return tuple(messages)


def _remember(key: tuple, messages: tuple[Message, ...]) -> None:
    _WALKS[key] = messages
    _WALKS.move_to_end(key)
    while len(_WALKS) > CACHED_WALKS:
        _WALKS.popitem(last=False)


def _walk_of(unit: WorkUnit, fs: Any, path: str) -> tuple[Message, ...]:
    key = (unit.url, unit.size, unit.etag, unit.version)
    if key not in _WALKS:
        with fs.open(path, "rb", block_size=WALK_BLOCK) as handle:
            _remember(key, walk(handle, unit.url, unit.size))
    return _WALKS[key]


def unit_ranges(messages: tuple[Message, ...], unit_bytes: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges of consecutive record-batch messages, up to `unit_bytes` each."""
    ranges: list[tuple[int, int]] = []
    start = end = -1
    for m in messages:
        if m.kind != RECORD_BATCH:
            continue
        if start >= 0 and m.offset + m.length - start > unit_bytes:
            ranges.append((start, end))
            start = -1
        if start < 0:
            start = m.offset
        end = m.offset + m.length
    if start >= 0:
        ranges.append((start, end))
    return ranges


class _Spliced:
    """What a stream reader reads for one unit: `head` (the schema and dictionary messages before
    the unit), then the unit's bytes [start, end) of the file, then an end-of-stream marker."""

    def __init__(self, head: bytes, handle: Any, url: str, start: int, end: int):
        self._head = memoryview(head)
        self._handle, self._url = handle, url
        self._pos, self._end = start, end
        self._tail = memoryview(EOS)
        self.closed = False
        handle.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = len(self._head) + (self._end - self._pos) + len(self._tail) if n < 0 else n
        if not self._head and n <= self._end - self._pos:  # a message body: no copy
            chunk = self._handle.read(n)
            self._pos += len(chunk)
            if len(chunk) == n:
                return chunk
            return chunk + self.read(n - len(chunk)) if chunk else self._cut()
        out = bytearray()
        while len(out) < n and (self._head or self._pos < self._end or self._tail):
            want = n - len(out)
            if self._head:
                out += self._head[:want]
                self._head = self._head[want:]
            elif self._pos < self._end:
                chunk = self._handle.read(min(want, self._end - self._pos))
                if not chunk:
                    self._cut()
                out += chunk
                self._pos += len(chunk)
            else:
                out += self._tail[:want]
                self._tail = self._tail[want:]
        return bytes(out)

    def _cut(self) -> bytes:
        raise InputError(f"{self._url}: the file ends at byte {self._pos}: truncated?")

    def close(self) -> None:
        self.closed = True


class ArrowFormat(InputFormat):
    name = "arrow"
    suffixes = (".arrow", ".arrows", ".feather", ".ipc")

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        if file.compression:
            raise InputError(
                f"{file.url}: a {file.compression}-compressed Arrow file is not supported; "
                "decompress it (compression inside the IPC format, LZ4 or ZSTD buffers, is)"
            )
        with file.fs.open(file.path, "rb", block_size=WALK_BLOCK) as handle:
            messages = walk(handle, file.url, file.size)
        _remember((file.url, file.size, file.etag, file.version), messages)
        return [
            WorkUnit(file.url, self.name, None, start, end, file.size, file.etag)
            for start, end in unit_ranges(messages, opts.unit_bytes)
        ]

    def read(
        self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None
    ) -> Iterator[DocBatch]:
        import pyarrow as pa

        out = BatchBuilder(unit, opts)
        out.default_source = default_source(unit.url)
        fs, path = url_to_fs(unit.url, storage_options)
        messages = _walk_of(unit, fs, path)
        before = [m for m in messages if m.offset < unit.start]
        batches = [m for m in messages if unit.start <= m.offset < unit.end]
        batches = [m for m in batches if m.kind == RECORD_BATCH]
        row = sum(m.rows for m in before if m.kind == RECORD_BATCH)
        index = sum(m.kind == RECORD_BATCH for m in before)
        with fs.open(path, "rb") as handle:
            head = [_read_at(handle, m.offset, m.length) for m in before if m.kind != RECORD_BATCH]
            schema = _open(pa.ipc.read_schema, pa.py_buffer(head[0]), None, unit.url)
            fields = (opts.text_field, opts.id_field, opts.source_field, opts.lang_field)
            wanted = [c for c in dict.fromkeys((*fields, opts.messages_field)) if c in schema.names]
            for name in wanted:  # (the first copy was read without a word; Parquet refuses)
                if schema.names.count(name) > 1:
                    raise InputError(
                        f"{unit.url}: column {name!r} appears {schema.names.count(name)} times "
                        "in its schema"
                    )
            options = pa.ipc.IpcReadOptions(
                included_fields=[schema.get_all_field_indices(c)[0] for c in wanted]
            )
            source = _Spliced(b"".join(head), handle, unit.url, unit.start, unit.end)
            reader = _open(pa.ipc.open_stream, source, options, unit.url)
            for i, message in enumerate(batches, start=index):
                rb = _next_batch(reader, message, i, unit.url)
                for lo in range(0, rb.num_rows, opts.batch_docs):
                    part = rb.slice(lo, opts.batch_docs)
                    cols = {name: column_values(part.column(name)) for name in wanted}
                    for j in range(part.num_rows):
                        out.row(row, {k: v[j] for k, v in cols.items()})
                        row += 1
                        if out.full():
                            yield out.take()
        yield out.finish()


def _open(read: Any, source: Any, options: Any, url: str) -> Any:
    """The schema (`read_schema`) or a reader (`open_stream`) of a unit's stream; an InputError
    names the file when its schema message is unreadable."""
    import pyarrow as pa

    try:
        return read(source) if options is None else read(source, options=options)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{url}: unreadable Arrow IPC schema: {exc}") from None


def _next_batch(reader: Any, message: Message, index: int, url: str) -> Any:
    """The next record batch of a unit, which must be the one the header walk found."""
    import pyarrow as pa

    where = f"{url}: Arrow IPC record batch {index} at byte {message.offset}"
    try:
        rb = reader.read_next_batch()
        rb.validate(full=True)  # corrupt offsets would otherwise be read out of bounds
    except StopIteration:
        raise InputError(f"{where} is missing: the file changed since planning?") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{where} is corrupt: {exc}") from None
    if rb.num_rows != message.rows:
        raise InputError(f"{where} has {rb.num_rows} rows, its header says {message.rows}")
    return rb


register_format(ArrowFormat())
