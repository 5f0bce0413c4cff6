"""Token checksums that do not depend on the format: a document's digest is the sha256 of its ids
as uint32 little-endian (an appended EOD not included); a file's digest is the sha256 of its
documents' 32-byte digests in order; the export's is the sha256 of its files' digests in order. A
file's stream checksum is the sha256 of every id it holds, EODs included, as uint32 little-endian
(for readers that see a token stream, not documents)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

SCHEME = "tokenmill-export-v1"
U32 = np.dtype("<u4")


def as_u32(ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=U32)


class FileDigest:
    """Digests of one file's documents (and of its token stream), fed in document order."""

    def __init__(self) -> None:
        self._docs = hashlib.sha256()
        self._stream = hashlib.sha256()
        self.documents = 0
        self.tokens = 0
        self.written = 0  # ids in the stream (EODs included)

    def add_documents(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Documents given as flat ids and offsets (len n+1): the shards' own tokens."""
        ids = as_u32(tokens)
        starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
        for start, end in zip(starts, ends, strict=True):
            self._docs.update(hashlib.sha256(ids[start:end]).digest())
        self.documents += len(starts)
        self.tokens += int(offsets[-1] - offsets[0])

    def add_document(self, ids: np.ndarray) -> None:
        self._docs.update(hashlib.sha256(as_u32(ids)).digest())
        self.documents += 1
        self.tokens += len(ids)

    def add_stream(self, ids: np.ndarray) -> None:
        self._stream.update(as_u32(ids))
        self.written += len(ids)

    @property
    def digest(self) -> str:
        return "sha256:" + self._docs.hexdigest()

    @property
    def stream(self) -> str:
        return "sha256:" + self._stream.hexdigest()


def combine(digests: Iterable[str]) -> str:
    """The digest of an ordered list of digests (files of an export)."""
    total = hashlib.sha256()
    for digest in digests:
        total.update(bytes.fromhex(digest.split(":", 1)[1]))
    return "sha256:" + total.hexdigest()


def stream_digest(arrays: Iterable[np.ndarray]) -> str:
    total = hashlib.sha256()
    for ids in arrays:
        total.update(as_u32(ids))
    return "sha256:" + total.hexdigest()
