"""`Utf8Texts`: a batch's texts held as UTF-8 bytes (one buffer and offsets), as the compiled
JSON-lines reader produces them, instead of one Python str per document.

It is a `Sequence[str]` (each text decoded when it is asked for), so any code that takes a list
of texts takes it; code on the hot path asks for `utf8()` instead: the encoders that take bytes
(gigatoken), the unassigned-character guard and the text statistics read the buffer as it is."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np


class Utf8Texts(Sequence[str]):
    """Texts as pieces of UTF-8 buffers; `utf8()` joins them into one (buffer, offsets) once.

    The buffer `utf8()` returns has zero bytes after the last text up to a multiple of 8 (the
    compiled scans read 8 bytes a step); offsets[i]:offsets[i + 1] is text i, offsets[0] == 0."""

    __slots__ = ("_joined", "_n", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[tuple[np.ndarray, np.ndarray]] = []  # (bytes, offsets from 0)
        self._n = 0
        self._joined: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def view(cls, data: np.ndarray, offsets: np.ndarray) -> Utf8Texts:
        """The texts data[offsets[i]:offsets[i + 1]] of a buffer `utf8()` made (8-aligned and
        padded): some of its texts, read in place (`utf8()` gives the buffer itself, offsets[0]
        not 0)."""
        made = cls()
        start = int(offsets[0])
        made._add(data[start : int(offsets[-1])], offsets - start)
        made._joined = (data, offsets)
        return made

    @classmethod
    def of(cls, texts: Iterable[str]) -> Utf8Texts:
        made = cls()
        made.extend(texts)
        return made

    def append(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self._add(np.frombuffer(data, dtype=np.uint8), np.array([0, len(data)], dtype=np.int64))

    def extend(self, texts: Iterable[str]) -> None:
        if isinstance(texts, Utf8Texts):
            for data, offsets in texts._pieces:
                self._add(data, offsets)
            return
        parts = [text.encode("utf-8", "surrogatepass") for text in texts]
        if parts:
            offsets = np.zeros(len(parts) + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=offsets[1:])
            self._add(np.frombuffer(b"".join(parts), dtype=np.uint8), offsets)

    def extend_utf8(self, data: np.ndarray, offsets: np.ndarray) -> None:
        """Add the texts data[offsets[i]:offsets[i + 1]] (offsets[0] == 0; data is kept, not
        copied)."""
        if len(offsets) > 1:
            self._add(data, offsets)

    def _add(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self._pieces.append((data, offsets))
        self._n += len(offsets) - 1
        self._joined = None

    @property
    def nbytes(self) -> int:
        return sum(int(offsets[-1]) for _, offsets in self._pieces)

    def utf8(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 buffer, int64 offsets): all the texts in one 8-aligned buffer, zero-padded to a
        multiple of 8 bytes; text i is buffer[offsets[i]:offsets[i + 1]], and offsets[0] is 0
        unless these texts are a `view` of a bigger buffer."""
        if self._joined is None:
            total = self.nbytes
            data = np.empty(total + (-total % 8), dtype=np.uint8)
            data[total:] = 0  # (the padding; every byte before it is copied below)
            offsets = np.empty(self._n + 1, dtype=np.int64)
            offsets[0] = 0
            at = n = 0
            for piece, piece_offsets in self._pieces:
                size = int(piece_offsets[-1])
                data[at : at + size] = piece[:size]
                offsets[n + 1 : n + len(piece_offsets)] = piece_offsets[1:] + at
                at += size
                n += len(piece_offsets) - 1
            self._joined = (data, offsets)
        return self._joined

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError("text index out of range")
        data, offsets = self.utf8()
        return _decode(data, int(offsets[index]), int(offsets[index + 1]))

    def __iter__(self) -> Iterator[str]:
        data, offsets = self.utf8()
        bounds = offsets.tolist()
        for i in range(self._n):
            yield _decode(data, bounds[i], bounds[i + 1])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable, as a list)

    def __repr__(self) -> str:
        return f"Utf8Texts({list(self)!r})"


def _decode(data: np.ndarray, start: int, end: int) -> str:
    return data[start:end].tobytes().decode("utf-8", "surrogatepass")


def as_str_list(texts: Sequence[str]) -> list[str]:
    """The texts as a list of str (a list as it is)."""
    return texts if isinstance(texts, list) else list(texts)


def utf8_of(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """`texts.utf8()` for texts held as bytes, else None."""
    return texts.utf8() if isinstance(texts, Utf8Texts) else None


def joined(groups: Sequence[Sequence[str]]) -> Sequence[str]:
    """The texts of several batches as one sequence: Utf8Texts when all are (no decoding), else
    a list of str."""
    if groups and all(isinstance(g, Utf8Texts) for g in groups):
        out = Utf8Texts()
        for g in groups:
            out.extend(g)
        return out
    return [t for g in groups for t in g]


__all__ = ["Utf8Texts", "as_str_list", "joined", "utf8_of"]
