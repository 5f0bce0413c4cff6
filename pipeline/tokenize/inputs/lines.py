"""Line-oriented inputs (JSON lines, plain text): units are newline-aligned byte ranges of an
uncompressed file or a whole compressed file, read as a stream of lines of bounded size."""

from __future__ import annotations

import gzip
import io
import zlib
from abc import abstractmethod
from collections.abc import Generator, Iterable, Iterator

from pipeline.output.storage import url_to_fs
from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.registry import InputFormat
from pipeline.tokenize.inputs.salvage import (  # noqa: F401 (READ_BLOCK: set by tests)
    READ_BLOCK,
    READ_ERRORS,
    GzipPieces,
    RawFile,
    Salvaging,
    StorageReads,
    ZstdPieces,
)
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit
from schemas.shards import REJECT_RAW_BYTES

BOM = b"\xef\xbb\xbf"


# WorkUnit.end of a compressed file that is split into ranges while it is read (streams.py)
STREAM = -2


def is_stream(unit: WorkUnit) -> bool:
    return unit.end == STREAM


def stream_unit(file: InputFile, fmt: str, opts: ReadOptions) -> WorkUnit | None:
    """The stream unit of a compressed file too big for one unit, else None."""
    if not file.compression or file.size <= opts.unit_bytes:
        return None
    return WorkUnit(file.url, fmt, file.compression, 0, STREAM, file.size, file.etag)


def error_name(exc: BaseException) -> str:
    """The name a reject gives a read error (zlib's plain `error` qualified)."""
    return "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__


class DamagedRange(bytes):
    """The bytes of a stream's last range when decompressing the file failed: its whole lines
    (the line the failure cut is not among them), and the failure, which its reader turns into
    the reject after the range's last line, as a whole-file unit's reader does."""

    error: BaseException

    def __new__(cls, data: bytes, error: BaseException) -> DamagedRange:
        made = super().__new__(cls, data)
        made.error = error
        return made

    def __reduce__(self) -> tuple:  # (to an actor: bytes and error, pickled)
        return DamagedRange, (bytes(self), self.error)


def same_file(stream: WorkUnit, unit: WorkUnit) -> bool:
    """Whether `unit` is a range of the same version of the stream's file."""
    identity = ("url", "fmt", "compression", "size", "etag", "version")
    is_range = unit.end >= 0 or unit.start > 0  # not a whole-file unit of an earlier plan
    return is_range and all(getattr(stream, k) == getattr(unit, k) for k in identity)


def open_unit(unit: WorkUnit, storage_options: dict | None):
    """A binary stream of the unit's file, decompressed (a compressed one read as Salvaging)."""
    fs, path = url_to_fs(unit.url, storage_options)
    if unit.compression == "zstd":
        # Not fsspec's zstandard stream_reader: it returns EOF silently when the input is truncated
        # (a cut at a line end would lose documents unnoticed). Arrow's stream reads every frame,
        # bounds its output per read, and raises OSError("Truncated compressed stream").
        import pyarrow as pa

        raw = RawFile(fs, path)
        return Salvaging(
            lambda: pa.CompressedInputStream(raw.open(), "zstd"),
            lambda: ZstdPieces(raw.open()),
            raw=raw,
        )
    if unit.compression == "gzip":
        raw = RawFile(fs, path)
        return Salvaging(
            lambda: gzip.GzipFile(fileobj=raw.open(), mode="rb"),  # (what fsspec's "gzip" makes)
            lambda: GzipPieces(raw.open()),
            raw=raw,
        )
    if unit.compression:
        return Salvaging(lambda: fs.open(path, "rb", compression=unit.compression))
    return StorageReads(fs, path)


def aligned_bounds(fs, path: str, size: int, unit_bytes: int) -> list[int]:
    """Unit boundaries at line starts: each nominal boundary moves to just after the next newline.

    Linear in the file whatever its lines: the last block read is kept and every byte is read at
    most once, so a long stretch without a newline (a file of zeros) is scanned once, not once per
    nominal boundary it spans."""
    bounds = [0]
    block, block_at = b"", 0  # the last block read and its offset
    with fs.open(path, "rb") as handle:
        for nominal in range(unit_bytes, size, unit_bytes):
            if nominal <= bounds[-1]:
                continue
            pos = nominal - 1  # a boundary is just after a newline at or after here
            while True:
                if pos >= block_at + len(block):  # past what was read: read from here on
                    if pos >= size:
                        break
                    if pos != block_at + len(block):
                        handle.seek(pos)
                    block, block_at = handle.read(READ_BLOCK), pos
                    if not block:
                        pos = size
                        break
                nl = block.find(b"\n", pos - block_at)
                if nl >= 0:
                    pos = block_at + nl + 1
                    break
                pos = block_at + len(block)
            if pos >= size:
                break  # no newline after this nominal boundary: the rest is one unit
            bounds.append(pos)
    bounds.append(size)
    return bounds


def _source(unit: WorkUnit, storage_options: dict | None, data: bytes | None):
    """A binary stream positioned at the unit's start."""
    if data is not None:
        return io.BytesIO(data)
    stream = open_unit(unit, storage_options)
    if unit.start and unit.compression:  # a compressed stream cannot seek: read up to the start
        left = unit.start
        while left > 0:
            skipped = len(stream.read(min(READ_BLOCK, left)))
            if not skipped:
                break
            left -= skipped
    elif unit.start:
        stream.seek(unit.start)
    return stream


def _first_bytes(parts: list[bytes], n: int) -> bytes:
    """The first n bytes of the concatenation of parts, without joining them all."""
    head = bytearray()
    for part in parts:
        head += part[: n - len(head)]
        if len(head) >= n:
            break
    return bytes(head)


class LineRun:
    """The whole lines of block[at : last + 1] (block[last] is a newline), iterated one by one
    (each sliced when it is taken: while the line is read, it is in the cache); a reader with a
    compiled pass over the block takes `block`, `at` and `last` instead."""

    __slots__ = ("at", "block", "last")

    def __init__(self, block: bytes, at: int, last: int):
        self.block, self.at, self.last = block, at, last

    def __iter__(self) -> Iterator[bytes]:
        block, at, last = self.block, self.at, self.last
        find = block.find
        while at <= last:
            nl = find(b"\n", at)
            yield block[at:nl]
            at = nl + 1


def iter_line_runs(
    stream, start: int, end: int, max_record_bytes: int
) -> Iterator[tuple[int, Iterable[bytes] | None, bytes]]:
    """Yield (offset, lines, head) for the lines in [start, end) of a stream: `lines`, consecutive
    whole lines from `offset` on (without their line ends), or None for one line longer than
    max_record_bytes, which is never held whole (`head`: its first bytes, what a reject keeps).
    `end` = -1 reads to the end of the stream. Decompression errors propagate as they happen.
    (Hot loop: one pass over every input byte. A block's whole lines come as one run, one line a
    run when the block is longer than max_record_bytes; the line it ends inside is carried over.)
    """
    pos = start
    pending: list[bytes] = []  # the start of a line carried over from earlier blocks
    pending_len = 0
    oversized = False  # the carried line is too long: only its `head` is kept
    head = b""
    line_start = start
    remaining = None if end < 0 else end - start
    while remaining is None or remaining > 0:
        want = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
        try:
            block = stream.read(want)
        except READ_ERRORS as exc:
            exc.cut_at = line_start  # (the start of the line the damage cut: its reject's offset)
            raise
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
        last = block.rfind(b"\n")
        tail = block[last + 1 :]  # after the block's last newline: the start of a line, or b""
        at = 0  # where the block's whole lines start (after the end of a carried line)
        if last >= 0 and (pending or oversized):  # the carried line ends at the first newline
            at = block.find(b"\n") + 1
            first = block[: at - 1]
            if not oversized and pending_len + len(first) > max_record_bytes:
                oversized, head = True, _first_bytes([*pending, first], REJECT_RAW_BYTES)
            if oversized:
                yield line_start, None, head
            else:
                yield line_start, [b"".join([*pending, first])], b""
            line_start = pos + at
            pending, pending_len, oversized, head = [], 0, False, b""
        if last >= at:
            if len(block) <= max_record_bytes:  # no line of it is too long: sliced as read
                yield line_start, LineRun(block, at, last), b""
            else:
                for piece in block[at:last].split(b"\n"):  # one by one: the too long rejected
                    if len(piece) > max_record_bytes:
                        yield line_start, None, piece[:REJECT_RAW_BYTES]
                    else:
                        yield line_start, [piece], b""
                    line_start += len(piece) + 1
            line_start = pos + last + 1
        if tail and not oversized:
            if pending_len + len(tail) > max_record_bytes:
                oversized, head = True, _first_bytes([*pending, tail], REJECT_RAW_BYTES)
                pending, pending_len = [], 0
            else:
                pending.append(tail)
                pending_len += len(tail)
        pos += len(block)
    if oversized:
        yield line_start, None, head
    elif pending_len:
        yield line_start, [b"".join(pending)], b""


def _reader_failed(unit: WorkUnit, out: BatchBuilder, exc: BaseException) -> RuntimeError:
    """A failure of the code that reads whole lines (bytes already in memory): a bug, which fails
    the unit, naming it and the line; the handler of read errors below would have turned it into
    an `unreadable input` reject and dropped the rest of the unit into it."""
    return RuntimeError(
        f"{unit.url}: reading the record at offset {out.last_offset} failed: "
        f"{type(exc).__name__}: {exc}"
    )


class LineFormat(InputFormat):
    """A format with one record per line; subclasses say what a line's text becomes."""

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        stream = stream_unit(file, self.name, opts)
        if stream is not None:
            return [stream]
        if file.compression or file.size <= opts.unit_bytes:
            return [WorkUnit(file.url, self.name, file.compression, 0, -1, file.size, file.etag)]
        bounds = aligned_bounds(file.fs, file.path, file.size, opts.unit_bytes)
        return [
            WorkUnit(file.url, self.name, None, a, b, file.size, file.etag)
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]

    def read(
        self,
        unit: WorkUnit,
        opts: ReadOptions,
        storage_options: dict | None,
        data: bytes | None = None,
    ) -> Iterator[DocBatch]:
        """The unit's records; `data`, when given, is the unit's (decompressed) bytes, handed
        over by the reader of a stream instead of being read from the file."""
        out = BatchBuilder(unit, opts)
        line_no: int | None = 1 if unit.start == 0 else None
        try:
            with _source(unit, storage_options, data) as stream:
                for offset, lines, head in iter_line_runs(
                    stream, unit.start, unit.end, opts.max_record_bytes
                ):
                    try:
                        if lines is not None:
                            line_no = yield from self._lines(out, offset, line_no, lines)
                            continue
                        out.last_offset = offset
                        self._line(out, offset, line_no, None, head)
                    except READ_ERRORS as exc:  # (the reader's own code failed, not a read:
                        raise _reader_failed(unit, out, exc) from exc  # never "unreadable")
                    if line_no is not None:
                        line_no += 1
                    if out.full():
                        yield out.take()
            if isinstance(data, DamagedRange):  # the file could not be read past this range
                data.error.cut_at = unit.start + len(data)
                raise data.error
        except READ_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            where = "decompressed offset" if unit.compression else "offset"
            cut = getattr(exc, "cut_at", out.last_offset)  # where the first unread line starts
            out.reject(
                cut,
                line_no,
                None,
                f"unreadable input after {where} {cut}: {error_name(exc)}: {exc}",
                b"",
            )
        yield out.finish()

    def _lines(
        self, out: BatchBuilder, offset: int, line_no: int | None, lines: Iterable[bytes]
    ) -> Generator[DocBatch, None, int | None]:
        """Consecutive whole lines from `offset` (a run of iter_line_runs), each through `_line`;
        yields each batch that fills, returns the next line number."""
        for raw in lines:
            out.last_offset = offset
            self._line(out, offset, line_no, raw, raw)
            offset += len(raw) + 1
            if line_no is not None:
                line_no += 1
            if out.full():
                yield out.take()
        return line_no

    def _line(
        self, out: BatchBuilder, offset: int, line_no: int | None, raw: bytes | None, head: bytes
    ) -> None:
        if raw is None:
            out.reject(
                offset,
                line_no,
                None,
                f"record too large: more than max_record_bytes {out.opts.max_record_bytes} bytes",
                head,
            )
            return
        if offset == 0 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():  # what bytes.strip() would leave empty, without a copy
            out.skip_blank()
            return
        if self.parse_fast(out, offset, line_no, raw):
            return
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.reject(
                offset, line_no, None, f"invalid UTF-8 at byte {exc.start} of the record", raw
            )
            return
        self.parse_line(out, offset, line_no, decoded, raw)

    def parse_fast(self, out: BatchBuilder, offset: int, line_no: int | None, raw: bytes) -> bool:
        """Take a non-blank line (without its line end) as bytes, when a format can do so exactly
        as `parse_line` would; False sends it on to `parse_line` (decoded). It returns before
        `parse_line` is called, so the parser runs at the same stack depth either way (json's
        recursion limit depends on it)."""
        return False

    @abstractmethod
    def parse_line(
        self, out: BatchBuilder, offset: int, line_no: int | None, text: str, raw: bytes
    ) -> None:
        """One non-blank, valid UTF-8 line (without its line end)."""
