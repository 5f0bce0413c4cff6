"""What an export will write, decided before anything is written: the committed units of the
source output (only what the ledger lists), the resolved options, and the files (groups of whole
shards, in ledger order). The plan is a pure function of the ledger and the options, so a rerun of
a killed export plans the same files and writes the same bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import ExportError
from pipeline.output import LedgerEntry, Output, iter_committed, read_manifest

EXPORT_VERSION = 1
FORMAT_NAMES = ("megatron", "hf", "litdata")
DTYPES = ("auto", "uint16", "int32")
VERIFY_MODES = ("all", "tokenmill")
OPTIONAL_COLUMNS = ("loss_mask",)  # shard columns a format may carry besides the tokens
# Megatron's DType.optimal_dtype: uint16 ids below this vocabulary size, else int32.
MEGATRON_UINT16_VOCAB = 65500


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for (`tokenmill export` flags)."""

    format: str
    append_eod: bool = False
    max_tokens_per_file: int | None = None  # None: the format's default; 0: no limit
    dtype: str = "auto"
    verify: str = "all"  # all: tokenmill's reader and the format's own; tokenmill: ours only
    overwrite: bool = False


@dataclass
class Source:
    """A committed output as the ledger lists it."""

    output: Output
    config_hash: str
    entries: list[LedgerEntry]
    tokenizer: dict[str, Any]
    columns: tuple[str, ...]  # optional columns its shards have (e.g. loss_mask)

    @property
    def documents(self) -> int:
        return sum(e.documents for e in self.entries)

    @property
    def tokens(self) -> int:
        return sum(e.tokens for e in self.entries)


@dataclass(frozen=True)
class Resolved:
    """The options every byte of the export depends on (recorded in export.json)."""

    format: str
    append_eod: bool
    eos_id: int | None
    max_tokens_per_file: int
    dtype: str
    columns: tuple[str, ...] = ()  # optional shard columns the export carries

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "append_eod": self.append_eod,
            "eos_id": self.eos_id,
            "max_tokens_per_file": self.max_tokens_per_file,
            "dtype": self.dtype,
            "columns": list(self.columns),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resolved:
        return cls(**{**data, "columns": tuple(data.get("columns", ()))})


@dataclass(frozen=True)
class FilePlan:
    """One export file (or Megatron pair): whole shards, in ledger order."""

    index: int
    entries: tuple[int, ...]  # indices into Source.entries
    documents: int
    tokens: int  # document tokens (an appended EOD not counted)
    unit_ids: tuple[str, ...] = field(default=())


def load_source(url: str, storage_options: dict[str, Any] | None = None) -> Source:
    """The committed units of an output (of the configuration its job.json names)."""
    output = Output(url, storage_options)
    manifest = read_manifest(output) or {}
    config_hash = manifest.get("config_hash")
    entries = list(iter_committed(output, config_hash))
    if not entries:
        raise ExportError(f"output {output.url} has no committed units (its ledger/ is empty)")
    hashes = sorted({e.config_hash for e in entries})
    fingerprints = sorted({e.tokenizer.get("fingerprint") for e in entries})
    if len(hashes) > 1 or len(fingerprints) > 1:
        raise ExportError(f"output {output.url} mixes configurations {hashes} / tokenizers")
    record = entries[0].tokenizer  # (dynamic_merge records itself by kind: older outputs)
    if record.get("batch_local_ids") or (
        record.get("kind") == "dynamic_merge" and any(e.sidecar for e in entries)
    ):
        raise ExportError(
            f"output {output.url} holds ids local to each batch (its tokenizer, "
            f"{entries[0].tokenizer.get('kind')}, gives their meaning in each unit's sidecar "
            "vocabulary, which no export format carries): export an output of a tokenizer with "
            "one vocabulary"
        )
    tokenizer = dict(entries[0].tokenizer)
    for key in ("eos_id", "bos_id"):
        if tokenizer.get(key) is None:
            tokenizer[key] = manifest.get("tokenizer", {}).get(key)
    return Source(output, hashes[0], entries, tokenizer, shard_columns(output, entries[0]))


def shard_columns(output: Output, entry: LedgerEntry) -> tuple[str, ...]:
    """The optional columns (OPTIONAL_COLUMNS) of a committed shard, read from its footer."""
    try:
        with output.fs.open(output.path(entry.shard), "rb") as handle:
            names = pa.ipc.open_file(handle).schema.names
    except FileNotFoundError as exc:
        raise ExportError(
            f"shard {output.url}/{entry.shard} listed by the ledger is missing"
        ) from exc
    except (pa.ArrowInvalid, OSError) as exc:  # (torn or overwritten after its commit)
        raise ExportError(
            f"shard {output.url}/{entry.shard} is not a readable Arrow file ({exc}): it was "
            "damaged after its commit; `tokenmill verify` and `tokenmill run --repair` redo it"
        ) from None
    return tuple(c for c in OPTIONAL_COLUMNS if c in names)


def resolve(options: ExportOptions, source: Source, default_max: int, carries: tuple) -> Resolved:
    """Options with the format's defaults filled in, checked against the output."""
    if options.format not in FORMAT_NAMES:
        raise ExportError(f"unknown export format {options.format!r}; one of {FORMAT_NAMES}")
    if options.dtype not in DTYPES:
        raise ExportError(f"unknown dtype {options.dtype!r}; one of {DTYPES}")
    vocab = int(source.tokenizer.get("vocab_size") or 0)
    dtype = options.dtype
    if dtype == "auto":
        megatron = options.format == "megatron"
        dtype = "uint16" if megatron and 0 < vocab < MEGATRON_UINT16_VOCAB else "int32"
    if dtype == "uint16" and vocab > 65536:
        raise ExportError(f"a vocabulary of {vocab} ids does not fit uint16; use --dtype int32")
    eos = source.tokenizer.get("eos_id")
    if options.append_eod and eos is None:
        raise ExportError(
            f"--append-eod: the tokenizer of {source.output.url} declares no EOS id (eos_id)"
        )
    limit = default_max if options.max_tokens_per_file is None else options.max_tokens_per_file
    if limit < 0:
        raise ExportError("--max-tokens-per-file must be >= 0 (0: no limit)")
    columns = tuple(c for c in source.columns if c in carries)
    return Resolved(
        options.format,
        options.append_eod,
        int(eos) if options.append_eod else None,
        int(limit),
        dtype,
        columns,
    )


def plan_files(source: Source, resolved: Resolved) -> list[FilePlan]:
    """Greedy groups of whole shards of at most max_tokens_per_file written tokens each (0: one
    file); a shard larger than the limit is a file of its own, and a shard without tokens joins
    the file before it."""
    limit = resolved.max_tokens_per_file
    groups: list[list[int]] = []
    size = 0
    for i, entry in enumerate(source.entries):
        written = entry.tokens + (entry.documents if resolved.append_eod else 0)
        if not groups or (limit and written and size + written > limit and size):
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += written
    return [
        FilePlan(
            k,
            tuple(group),
            sum(source.entries[i].documents for i in group),
            sum(source.entries[i].tokens for i in group),
            tuple(source.entries[i].unit_id for i in group),
        )
        for k, group in enumerate(groups)
    ]


def export_key(source: Source, resolved: Resolved) -> str:
    """Names the bytes an export holds: the committed units exported and every resolved option.
    A destination whose plan has another key holds another export."""
    data = {
        "export_version": EXPORT_VERSION,
        "config_hash": source.config_hash,
        "units": [[e.unit_id, e.shard, e.shard_checksum] for e in source.entries],
        "options": resolved.to_json(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
