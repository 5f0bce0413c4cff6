"""What an export format is to the engine: the object names of file k of n, a writer that turns
the planned batches into local files, tokenmill's own reader of a written file, and the format's
own reader (its library, when installed) used to verify it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, ClassVar

import numpy as np

from pipeline.export.documents import ExportBatch
from pipeline.export.plan import Resolved
from pipeline.output import Output

READ_BLOCK = 8 << 20


class ExportFormat(ABC):
    """One export format. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    default_max_tokens: ClassVar[int]  # written tokens per file (0: the whole output in one)
    carries: ClassVar[tuple[str, ...]] = ()  # optional shard columns it writes (loss_mask)
    library: ClassVar[str] = ""  # the distribution of the format's own reader
    module: ClassVar[str] = ""  # a module of it, to see whether it is installed
    library_yields: ClassVar[str] = "documents"  # or "stream": one array per file, EODs included

    @abstractmethod
    def object_names(self, index: int, count: int) -> list[str]:
        """Object names (relative to the destination) of planned file `index` of `count`."""

    def final_objects(self) -> list[str]:
        """Objects written once every file is (e.g. an index naming them)."""
        return []

    @abstractmethod
    def write(
        self, resolved: Resolved, batches: Iterable[ExportBatch], paths: dict[str, str], index: int
    ) -> dict[str, Any]:
        """Write one planned file's objects to the local `paths` (name -> path); returns what the
        file's progress record keeps besides names, sizes and checksums."""

    @abstractmethod
    def read(
        self, resolved: Resolved, dest: Output, record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        """tokenmill's own reader: the documents of one written file as exported (EODs included)."""

    @abstractmethod
    def library_read(
        self, resolved: Resolved, paths: dict[str, str], record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        """The format's own reader over local copies of one file's objects: its documents, or
        (library_yields == "stream") the file's token stream."""

    def finish(
        self, resolved: Resolved, dest: Output, records: list[dict[str, Any]], digest: str
    ) -> None:
        """Write the final objects (after every file); by default there are none."""
        return None

    def check_final(
        self, resolved: Resolved, dest: Output, records: list[dict[str, Any]], digest: str
    ) -> list[str]:
        """Problems with the final objects."""
        return []

    def library_version(self) -> str | None:
        """'<distribution> <version>' when the format's own reader is installed, else None."""
        try:
            if importlib.util.find_spec(self.module) is None:
                return None
            return f"{self.library} {importlib.metadata.version(self.library)}"
        except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
            return None


def read_exactly(handle: BinaryIO, size: int, what: str) -> bytes:
    """`size` bytes from a file object, or a ValueError naming what was cut short."""
    data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"{what}: expected {size} bytes, found {len(data)}")
    return data


def open_object(dest: Output, name: str) -> BinaryIO:
    return dest.fs.open(dest.path(name), "rb", block_size=READ_BLOCK)
