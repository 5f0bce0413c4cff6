"""Packs of small files: with `pack_small_files: N`, consecutive whole JSON lines and text files of
at most N bytes share one unit (fmt "pack", its `members` the files' own units, in plan order), so
a corpus of many small files gets one shard, rejects file and ledger entry per pack instead of per
file. Each member is read exactly as it would be alone (same documents, ids, offsets, rejects
naming the member's file); the pack's batches carry each document's member index, which the
engine writes as the shard's `input_file` column.

Where packs end is decided by the files themselves, not by their position: a pack closes after a
file whose URL hashes under a threshold proportional to its size (on average a pack every
unit_bytes / 4, or every 1,024 files of tiny ones), or before one that would take it past
unit_bytes or 8,192 files. Adding or changing one file
then changes its own pack (and at most the next one), never the packs of the rest of the corpus:
a rerun redoes those units only, and the output still equals a fresh run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pipeline.tokenize.inputs.batching import max_rejects
from pipeline.tokenize.inputs.types import DocBatch, ReadOptions, WorkUnit

PACKED_FORMATS = ("jsonl", "text")
SPREAD = 4  # a pack closes on average every unit_bytes / SPREAD bytes of files ...
MEMBERS_MEAN = 1024  # ... or every MEMBERS_MEAN files, whichever comes first
MEMBERS_MAX = 8192  # and never holds more (the ledger entry lists every member: ~250 bytes each)
HASH_SPACE = 1 << 64


def packable(unit: WorkUnit, opts: ReadOptions) -> bool:
    """A whole JSON lines or text file (compressed or not) of at most pack_small_files bytes."""
    return (
        unit.fmt in PACKED_FORMATS
        and unit.start == 0
        and unit.end == -1
        and not unit.members
        and unit.size <= opts.pack_small_files
    )


def closes_after(unit: WorkUnit, opts: ReadOptions) -> bool:
    """Whether a pack ends after this file: its URL's hash against a threshold proportional to
    its size (a pack every unit_bytes / SPREAD bytes on average)."""
    share = min(1.0, max(SPREAD * unit.size / opts.unit_bytes, 1 / MEMBERS_MEAN))
    # the whole URL: files of one name in many folders (data.jsonl, README.md) decide apart
    digest = int.from_bytes(hashlib.sha256(unit.url.encode()).digest()[:8], "big")
    return digest < share * HASH_SPACE


def pack_units(units: list[WorkUnit], opts: ReadOptions) -> list[WorkUnit]:
    """The plan with runs of packable files packed (a pack of one file stays that file's unit);
    order kept (a pack sorts as its first file)."""
    if not opts.pack_small_files:
        return units
    out: list[WorkUnit] = []
    run: list[WorkUnit] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            size = sum(u.size for u in run)
            out.append(WorkUnit(run[0].url, "pack", None, 0, -1, size, members=tuple(run)))
        run.clear()

    total = 0
    for unit in units:
        if not packable(unit, opts):
            flush()
            total = 0
            out.append(unit)
            continue
        if run and (total + unit.size > opts.unit_bytes or len(run) >= MEMBERS_MAX):
            flush()
            total = 0
        run.append(unit)
        total += unit.size
        if closes_after(unit, opts):
            flush()
            total = 0
    flush()
    return out


def read_pack(unit: WorkUnit, opts: ReadOptions, read_member) -> Iterator[DocBatch]:
    """The pack's members read one after another (`read_member(member)`: the member's own
    DocBatches), joined into batches of up to batch_docs documents / batch_bytes, each document
    with its member's index."""
    out, most_rejects = DocBatch(input_files=[]), max_rejects(opts)
    for index, member in enumerate(unit.members):
        for batch in read_member(member):
            _append(out, batch, index)
            if (
                len(out.texts) >= opts.batch_docs
                or out.nbytes >= opts.batch_bytes
                or len(out.rejects) >= most_rejects
            ):
                yield out
                out = DocBatch(input_files=[])
    if out.records or out.blank:
        yield out


def _append(out: DocBatch, batch: DocBatch, index: int) -> None:
    if batch.segments is not None and out.segments is None:
        out.segments = [None] * len(out.texts)
    if out.segments is not None:
        out.segments.extend(batch.segments or [None] * len(batch.texts))
    out.doc_ids.extend(batch.doc_ids)
    out.texts.extend(batch.texts)
    out.sources.extend(batch.sources)
    out.langs.extend(batch.langs)
    out.rejects.extend(batch.rejects)
    out.byte_lengths.extend(batch.byte_lengths)
    out.input_offsets.extend(batch.input_offsets)
    out.input_files.extend([index] * len(batch.texts))
    out.nbytes += batch.nbytes
    out.blank += batch.blank
