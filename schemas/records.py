"""Typed, versioned records that cross a seam: the unit a ledger entry covers, the ledger entry (the
commit record of one unit), the run summary and the verify report.

Each record is written as one JSON object (`to_json`) and read back with `from_json`, which accepts
entries written by earlier versions (fields added since then take their defaults) and keeps keys it
does not know in `extra`, so reading and rewriting an entry never loses anything."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

LEDGER_VERSION = 1


class RecordError(ValueError):
    """A JSON record is not an object or lacks a field every version of it has."""


def _split(cls: type, data: Any, required: tuple[str, ...]) -> tuple[dict, dict]:
    """(known fields, unknown keys) of a JSON object read as `cls`."""
    if not isinstance(data, dict):
        raise RecordError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    missing = [name for name in required if name not in data]
    if missing:
        raise RecordError(f"{cls.__name__} lacks {', '.join(missing)}")
    names = {f.name for f in fields(cls)}
    return (
        {k: v for k, v in data.items() if k in names},
        {k: v for k, v in data.items() if k not in names},
    )


@dataclass(frozen=True)
class WorkUnit:
    """One independently committed piece of input: a newline-aligned byte range of an uncompressed
    text/JSONL file, one Parquet row group, a whole compressed file, one committed shard, or a
    pack of small whole files (`members`, each a unit of its own kind; fmt "pack", the first
    member's URL; `pack_small_files`).

    Its id is a pure function of every field, so replanning the same inputs gives the same units
    (and the same output object names) on any machine. `version` says which version of the file
    the unit read (local: `mtime_ns=...[;sha256=...]`; object stores: `version_id=...`); it enters
    the id (and the entry's `unit`) only when set, so units planned before it existed, and units
    of unversioned objects (identified by their `etag`), keep their ids."""

    url: str
    fmt: str  # an input format name: jsonl | text | parquet | shards
    compression: str | None
    start: int  # byte offset, or row-group index for Parquet
    end: int  # byte end (exclusive); -1 = to the end of the (decompressed) stream
    size: int
    etag: str = ""
    whole_file_text: bool = False
    version: str = ""  # which version of the file was planned; "" = unknown (ids as before)
    members: tuple[WorkUnit, ...] = ()  # a pack's files, in plan order (enter id and entry if any)

    @functools.cached_property
    def unit_id(self) -> str:  # (cached: a pack's id hashes every member's)
        parts: list[Any] = [
            self.url,
            self.fmt,
            self.compression,
            self.start,
            self.end,
            self.size,
            self.etag,
            self.whole_file_text,
        ]
        if self.version:
            parts.append(self.version)
        if self.members:
            parts.append([m.unit_id for m in self.members])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]

    def describe(self) -> dict[str, Any]:
        data = {"unit_id": self.unit_id, **asdict(self)}
        if not self.version:  # entries of unversioned units stay byte-identical to earlier ones
            data.pop("version")
        data.pop("members")
        if self.members:
            data["members"] = [m.describe() for m in self.members]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkUnit:
        known, _ = _split(cls, data, ("url", "fmt", "start", "end", "size"))
        known.setdefault("compression", None)
        known.pop("unit_id", None)
        members = known.pop("members", None) or ()
        return cls(**known, members=tuple(cls.from_dict(m) for m in members))


@dataclass(frozen=True)
class LedgerEntry:
    """The commit record of one unit, written last: once it exists the unit is committed.

    Readers (loader, analytics, verify, re-tokenization) only read the files an entry lists."""

    unit_id: str
    unit: WorkUnit
    config_hash: str
    shard: str
    shard_checksum: str
    docs_read: int
    documents: int
    rejected: int
    tokens: int
    bytes: int
    tokenizer: dict[
        str, Any
    ]  # the tokenizer's describe(): kind, name, fingerprint, vocab_size, ...
    schema_version: int
    tokenmill_version: str = ""
    rejects: str | None = None
    rejects_checksum: str | None = None
    sidecar: str | None = None
    sidecar_checksum: str | None = None
    unigrams: str | None = None
    unigrams_checksum: str | None = None
    chars: int = 0
    words: int = 0
    blank_lines: int = 0
    batches: int = 0
    # Documents (and their text bytes) re-encoded with the tokenizer's reference and found equal.
    verified_documents: int = 0
    verified_bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of this commit
    # The lease the commit was made under ({"owner", "generation"}); None before leases fenced.
    lease: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "unit_id",
        "unit",
        "config_hash",
        "shard",
        "shard_checksum",
        "docs_read",
        "documents",
        "rejected",
        "tokens",
        "bytes",
        "tokenizer",
        "schema_version",
    )
    # The files an entry may list, each with its checksum field `<name>_checksum`.
    FILES: ClassVar[tuple[str, ...]] = ("shard", "rejects", "sidecar", "unigrams")

    def files(self) -> dict[str, tuple[str, str]]:
        """kind -> (object name, checksum) of every file this entry commits."""
        return {
            kind: (getattr(self, kind), getattr(self, f"{kind}_checksum"))
            for kind in self.FILES
            if getattr(self, kind)
        }

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["unit"] = self.unit.describe()
        return {**self.extra, **data}

    @classmethod
    def from_json(cls, data: Any) -> LedgerEntry:
        known, extra = _split(cls, data, cls.REQUIRED)
        known.pop("extra", None)
        return cls(**{**known, "unit": WorkUnit.from_dict(known["unit"])}, extra=extra)


@dataclass(frozen=True)
class RunCounts:
    """What one run did (as opposed to what the output holds)."""

    units: int = 0
    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    rejected: int = 0

    def add(self, other: RunCounts) -> RunCounts:
        return RunCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def astuple(record: Any) -> tuple:
    return tuple(getattr(record, f.name) for f in fields(record))


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one `tokenmill run`: written under runs/ and printed as JSON."""

    output: str
    config_hash: str
    tokenizer: dict[str, Any]
    encoder: str
    storage_options: dict[str, Any]
    units_planned: int
    units_skipped: int
    units_run: int
    units_committed: int
    actors: int
    repaired: list[dict[str, Any]]
    this_run: RunCounts
    docs_read: int
    documents: int
    rejected: int
    tokens: int
    bytes: int
    seconds: float
    mb_per_s: float
    tokens_per_s: float
    complete: bool
    # Units whose inputs changed or disappeared since they were committed: uncommitted by this run
    # (and redone when their files still exist), by input URL.
    encoder_version: str = ""
    encoder_fallbacks: list[str] = field(default_factory=list)  # faster backends passed over, why
    verified_documents: int = 0  # sampled documents whose ids the reference encoder confirmed
    verified_bytes: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over committed units
    inputs_changed: list[str] = field(default_factory=list)
    units_uncommitted: int = 0
    spool_files_removed: int = 0  # scratch files that interrupted runs left behind
    notes: list[str] = field(default_factory=list)  # what the run adjusted (e.g. actors capped)
    run_nonce: str = ""
    summary_path: str = ""
    run_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("run_id", "summary_path"):  # set once the summary is written
            if not data[name]:
                data.pop(name)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunSummary:
        known, _ = _split(cls, data, ("output", "config_hash", "complete"))
        return cls(**{**known, "this_run": RunCounts(**known.get("this_run", {}))})


@dataclass(frozen=True)
class VerifyReport:
    """`tokenmill verify`: every committed unit re-read and checked against its ledger entry."""

    ok: bool
    output: str
    units: int
    documents: int
    tokens: int
    rejected: int
    bytes: int
    bad_units: list[str]
    problems: list[str]  # each names the unit and the object
    orphans: list[str]  # files no entry lists (paths under the output): the next run removes them
    spool_files: list[str] = field(default_factory=list)  # scratch left by interrupted runs
    # the latest run's summary: whether it committed every unit it planned (None: no summary),
    # what `ok` (the committed units are sound) does not say
    run_complete: bool | None = None
    units_planned: int | None = None
    # a run holds the output's lease (it began after the latest summary, so that run did not
    # finish: run_complete False): True while it runs, False once it stopped without releasing
    # the lease (killed; the rerun takes the lease over); None: no lease
    run_running: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> VerifyReport:
        known, _ = _split(cls, data, ("ok", "output", "units", "problems"))
        return cls(**known)


@dataclass
class Reject:
    """One input record that did not become a document: a row of a unit's rejects file."""

    source: str  # the input file's URL
    offset: int | None  # byte offset of the record in the (decompressed) file
    line: int | None  # 1-based line number when known
    row: int | None  # row index for Parquet inputs
    reason: str
    raw: bytes  # the first bytes of the raw record
