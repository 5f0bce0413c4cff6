"""The input-format registry: one `InputFormat` per way of finding records in a file, chosen by the
job's `format` or by the file name's suffix. A new format is one module that subclasses
`InputFormat` and calls `register_format`; nothing else changes."""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from pipeline.errors import InputError
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


class InputFormat(ABC):
    """How one format is planned into WorkUnits and read back as DocBatches."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()  # file-name suffixes `format: auto` maps here
    # True when the job's inputs are not files to expand but something the format plans itself
    # (committed outputs for "shards"); such a format overrides `plan_inputs`.
    plans_inputs: ClassVar[bool] = False

    def plan_inputs(
        self, inputs: list[str], opts: ReadOptions, storage_options: dict | None
    ) -> list[WorkUnit]:
        raise NotImplementedError(f"format {self.name!r} plans files one by one")

    @abstractmethod
    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        """The units of one file, in order."""

    @abstractmethod
    def read(
        self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None
    ) -> Iterator[DocBatch]:
        """Every record of the unit, as bounded batches of documents and rejects."""


_FORMATS: dict[str, InputFormat] = {}


def register_format(fmt: InputFormat) -> InputFormat:
    """Add a format; a second, different format under a taken name or suffix is refused."""
    existing = _FORMATS.get(fmt.name)
    if existing is not None and type(existing) is not type(fmt):
        raise ValueError(f"input format {fmt.name!r} is already registered")
    for other in _FORMATS.values():
        clash = set(other.suffixes) & set(fmt.suffixes)
        if other.name != fmt.name and clash:
            raise ValueError(f"suffixes {sorted(clash)} already belong to format {other.name!r}")
    _FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> list[str]:
    return sorted(_FORMATS)


def get_format(name: str) -> InputFormat:
    try:
        return _FORMATS[name]
    except KeyError:
        raise InputError(
            f"unknown input format {name!r}; known: {', '.join(format_names())}"
        ) from None


def detect(path: str, opts: ReadOptions) -> tuple[InputFormat, str | None]:
    """(format, compression) of a path from its suffixes, or the configured format."""
    name = posixpath.basename(path).lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
            break
    if opts.format not in ("auto", "chat"):  # "chat" says what records hold, not the file format
        return get_format(opts.format), compression
    for fmt in _FORMATS.values():
        if any(name.endswith(suffix) for suffix in fmt.suffixes):
            return fmt, compression
    raise InputError(
        f"cannot tell the format of {path!r} from its name; set format: "
        + "|".join(n for n in format_names() if not _FORMATS[n].plans_inputs)
    )
