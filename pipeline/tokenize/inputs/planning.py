"""Planning: expand input patterns into files (`expand`) and split every file into WorkUnits by its
format (deterministic order: by URL, then offset). Every unit carries its file's version, so a
unit's id changes exactly when the bytes it covers may have changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from pipeline.tokenize.inputs.expand import expand_inputs
from pipeline.tokenize.inputs.packs import pack_units, read_pack
from pipeline.tokenize.inputs.registry import detect, get_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit


def _stamped(units: list[WorkUnit], file: InputFile) -> list[WorkUnit]:
    """The units of a file, each with the file's version (a format need not know about it)."""
    return [
        dataclasses.replace(u, version=file.version)
        if file.version and not u.version and u.url == file.url
        else u
        for u in units
    ]


def plan_units(
    inputs: list[str],
    opts: ReadOptions,
    storage_options: dict | None = None,
    exclude: Iterable[str] = (),
) -> list[WorkUnit]:
    """Split every input into WorkUnits (deterministic order: by URL, then offset).

    `exclude`: output URLs; nothing under them is ever an input (a glob that matches the job's own
    ledger, lease or run files skips them with a warning)."""
    if opts.format not in ("auto", "chat") and get_format(opts.format).plans_inputs:
        return get_format(opts.format).plan_inputs(inputs, opts, storage_options)
    units: list[WorkUnit] = []
    for found in expand_inputs(inputs, storage_options, exclude):
        fmt, compression = detect(found.path, opts)
        file = dataclasses.replace(found, compression=compression)
        units.extend(_stamped(fmt.plan_file(file, opts), file))
    return pack_units(units, opts)


def read_unit(
    unit: WorkUnit,
    opts: ReadOptions,
    storage_options: dict | None = None,
    data: bytes | None = None,
) -> Iterator[DocBatch]:
    """Stream one unit as DocBatches of bounded size, by its format. `data`: the bytes of a range
    of a stream (see streams.py), handed over by the reader that cut it."""
    if data is not None:
        return get_format(unit.fmt).read(unit, opts, storage_options, data)
    if unit.members:
        return read_pack(unit, opts, lambda m: read_unit(m, opts, storage_options))
    return get_format(unit.fmt).read(unit, opts, storage_options)
