"""Reading a compressed input that is cut short or corrupt without losing what is still readable:
every whole line before the damage is a document, and the damage is one reject after them."""

from __future__ import annotations

import contextlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pipeline.errors import InputReadFailed
from pipeline.output.storage import is_transient, with_retries

READ_BLOCK = 1 << 20
# what reading a cut or damaged input raises (zlib.error: a corrupt deflate stream in a .gz)
READ_ERRORS = (EOFError, OSError, ValueError, zlib.error)
SALVAGE_PIECE = 8 << 10  # bytes a read asks for again, after a read failed


class Salvaging:
    """A decompressed stream whose failing read gives up only what the damage took: a read that
    fails (a file cut short or corrupt) loses everything it would have returned, up to a whole
    block, so the file is opened again (with `salvage_opener` when given: a reader that returns
    every byte before the damage, e.g. GzipPieces), read up to where that read began, then in
    small pieces up to the failure; those bytes are returned, and the error is raised by the next
    read. A failure that does not come back (a passing network error) is read past. Costs nothing
    until a read fails."""

    def __init__(
        self,
        opener: Callable[[], Any],
        salvage_opener: Callable[[], Any] | None = None,
        raw: RawFile | None = None,
    ):
        self._opener, self._stream = opener, opener()
        self._salvage_opener = salvage_opener or opener
        self._raw = raw  # the compressed file under the stream, when the openers use one
        self._pos = 0  # decompressed bytes returned so far
        self._error: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        try:
            data = self._stream.read(n)
        except READ_ERRORS as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            data = self._salvage(n)
        self._pos += len(data)
        return data

    def _salvage(self, n: int) -> bytes:
        self._stream.close()
        self._stream = stream = self._salvage_opener()
        out = bytearray()
        try:
            left = self._pos
            while left > 0:  # as far as the reads that worked
                skipped = stream.read(min(READ_BLOCK, left))
                if not skipped:
                    break
                left -= len(skipped)
            while n < 0 or len(out) < n:
                piece = stream.read(SALVAGE_PIECE if n < 0 else min(SALVAGE_PIECE, n - len(out)))
                if not piece:
                    break
                out += piece
        except READ_ERRORS as exc:
            if not out:
                raise
            self._error = exc  # what came before it first
        return bytes(out)

    def compressed_position(self) -> int | None:
        """Compressed bytes read so far (a little ahead of what was returned: the decompressor
        reads ahead), or None when unknown."""
        return self._raw.position() if self._raw is not None else None

    def close(self) -> None:
        self._stream.close()
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> Salvaging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pieces(ABC):
    """A compressed file decompressed over its raw bytes, RAW bytes fed at a time (`_feed`):
    every byte the decompressor gives before the damage is returned first, then the error (set
    by `_feed`, or `_cut()` when the raw bytes end inside a member or frame) is raised."""

    RAW = 8 << 10

    def __init__(self, raw: Any):
        self._raw = raw
        self._out = bytearray()
        self._error: BaseException | None = None
        self._done = False

    @abstractmethod
    def _feed(self, data: bytes) -> None:
        """Decompress `data` into `_out`; on damage, keep what came before and set `_error`."""

    @abstractmethod
    def _cut(self) -> BaseException | None:
        """The error of raw bytes that end inside a member or frame (None: they end between)."""

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._out) < n):
            chunk = self._raw.read(self.RAW)
            if chunk:
                self._feed(chunk)
                continue
            self._done = True
            self._error = self._cut()
        if not self._out and self._error is not None:
            raise self._error
        take = len(self._out) if n < 0 else min(n, len(self._out))
        data = bytes(self._out[:take])
        del self._out[:take]
        return data

    def close(self) -> None:
        self._raw.close()


class GzipPieces(_Pieces):
    """A .gz file decompressed with zlib over its raw bytes: every byte the stream still gives
    comes out before the error, which the next read raises (EOFError for a file cut inside a
    member, as gzip's own reader says it; zlib.error for corrupt data, a bad CRC or a header that
    is not gzip's). gzip.GzipFile loses what the failing read had decompressed (up to
    SALVAGE_PIECE, several records; found with a cut file: 42 whole lines before the cut were in
    neither the shards nor the rejects). Members follow one another; zero bytes between and after
    them are skipped, as GzipFile skips them."""

    RAW = 8 << 10  # compressed bytes fed at a time (at most ~8 MB out: deflate's ratio)

    def __init__(self, raw: Any):
        super().__init__(raw)
        self._inflate: Any = None  # the member being read (None: between members)

    def _cut(self) -> BaseException | None:
        if self._inflate is None:
            return None
        return EOFError("Compressed file ended before the end-of-stream marker was reached")

    def _feed(self, data: bytes) -> None:
        while data:
            if self._inflate is None:
                data = data.lstrip(b"\x00")
                if not data:
                    return
                self._inflate = zlib.decompressobj(31)
            before = self._inflate.copy()
            try:
                self._out += self._inflate.decompress(data)
            except zlib.error as exc:  # again a byte at a time from before: all up to the damage
                self._inflate = before
                for i in range(len(data)):
                    try:
                        self._out += self._inflate.decompress(data[i : i + 1])
                    except zlib.error:
                        break
                self._error, self._done = exc, True
                return
            if not self._inflate.eof:
                return
            data, self._inflate = self._inflate.unused_data, None


class ZstdPieces(_Pieces):
    """A .zst file decompressed frame by frame over its raw bytes, fed a little at a time: every
    block before the damage comes out before the error, which the next read raises (OSError:
    "Truncated compressed stream" for a file cut inside a frame, "ZSTD decompress failed: ..."
    for corrupt data, a bad checksum or bytes that are no frame, as Arrow's reader says them).
    Arrow's stream loses what its failing read had decompressed (found with a corrupt 11th frame:
    25 whole lines of intact frames in neither the shards nor the rejects). Skippable frames are
    skipped, as Arrow skips them."""

    RAW = 4 << 10  # compressed bytes fed at a time

    def __init__(self, raw: Any):
        import zstandard

        super().__init__(raw)
        self._zstd = zstandard
        self._frames = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the frame being read (None: between frames)

    def _cut(self) -> BaseException | None:
        return None if self._frame is None else OSError("Truncated compressed stream")

    def _feed(self, data: bytes) -> None:
        while data:
            if self._frame is None:
                self._frame = self._frames.decompressobj()
            try:
                self._out += self._frame.decompress(data)
            except self._zstd.ZstdError as exc:
                detail = str(exc).split("error: ", 1)[-1]
                self._error, self._done = OSError(f"ZSTD decompress failed: {detail}"), True
                return
            if not self._frame.eof:
                return
            data, self._frame = self._frame.unused_data, None


class StorageReads:
    """An input file's bytes as its storage gives them: a read that fails is retried (transient
    errors, the storage retry policy: the file opened again at the same position) and, if it
    still fails, raises InputReadFailed, which no reader turns into a reject. The decompressor
    above it alone says a file is damaged: before, a 503 from an object store while a file was
    read became `unreadable input` rejects, committed, and a rerun had nothing to redo (whole
    files lost; a stream's partial range kept beside the full one: duplicates)."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path
        self._file = fs.open(path, "rb")
        self._pos = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._file.read(n)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any storage failure: retried, then the unit's
            data = self._again(n, exc)
        self._pos += len(data)
        return data

    def _again(self, n: int, first: BaseException) -> bytes:
        def reread() -> bytes:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = self.fs.open(self.path, "rb")
            self._file.seek(self._pos)
            return self._file.read(n)

        try:
            if not is_transient(first):
                raise first
            return with_retries(reread, f"read {self.path} at byte {self._pos}")
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputReadFailed(
                f"reading {self.path} failed at byte {self._pos} ({type(exc).__name__}: {exc}); "
                "a storage error, not damage in the file: nothing of this unit is committed, "
                "rerun the same command to resume"
            ) from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self._file.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self.closed = True
        self._file.close()

    def __enter__(self) -> StorageReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawFile:
    """The compressed file under a decompressing stream: opened (again) by the stream's openers,
    which do not close it themselves; its position tells how far the stream has read."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path
        self._file: Any = None
        self._last = 0

    def open(self) -> Any:
        self.close()
        self._file = StorageReads(self.fs, self.path)
        return self._file

    def position(self) -> int:
        if self._file is not None and not self._file.closed:
            self._last = self._file.tell()
        return self._last

    def close(self) -> None:
        if self._file is not None:
            self.position()
            self._file.close()
            self._file = None
