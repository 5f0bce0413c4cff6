"""`tokenmill export`: the committed shards of an output (only what the ledger lists) written as
files a trainer reads, resumably, then verified, then described by `export.json` (written last).

Layout of a destination: the format's files, `export.json`, and `_export/` (the plan, naming the
export's key and every object it writes, written first; one progress record per finished file).
Each file is built on local scratch and committed atomically (rename, or one PUT); its progress
record follows. A rerun after a kill skips the recorded files and writes the others with the same
bytes, since every byte is a function of the ledger and the options (`plan.py`)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import fsspec

from pipeline.errors import ExportError
from pipeline.export.check import MANIFEST, verify_files
from pipeline.export.digest import SCHEME, FileDigest, combine
from pipeline.export.documents import file_batches
from pipeline.export.formats import ExportFormat, get_format
from pipeline.export.plan import (
    EXPORT_VERSION,
    ExportOptions,
    FilePlan,
    Resolved,
    Source,
    export_key,
    load_source,
    plan_files,
    resolve,
)
from pipeline.output import Output
from pipeline.output.lease import OutputLease, current_holder
from pipeline.output.shards import file_checksum
from pipeline.output.verify import latest_run, run_complete
from schemas.layout import LEASE_FILE, SPOOL_DIR

log = logging.getLogger("tokenmill")
EXPORT_DIR = "_export"
PLAN = f"{EXPORT_DIR}/plan.json"
PROGRESS_DIR = f"{EXPORT_DIR}/files"
TOKENIZER_KEYS = ("kind", "name", "fingerprint", "vocab_size", "eos_id", "bos_id")


@dataclass
class ExportReport:
    """The outcome of one `tokenmill export`: the manifest (written only when ok) and this run."""

    ok: bool
    dest: str
    manifest: dict[str, Any]
    problems: list[str]
    files_written: int
    files_resumed: int
    seconds: float
    # whether the source's latest run had finished (False: a run holds its lease or ended short,
    # so the export holds only what was committed; None: the source has no run summary)
    source_complete: bool | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": self.ok,
            "source_complete": self.source_complete,
            "dest": self.dest,
            "format": m["format"],
            "files": len(m["files"]),
            "files_written": self.files_written,
            "files_resumed": self.files_resumed,
            "documents": m["documents"],
            "tokens": m["tokens"],
            "tokens_written": m["tokens_written"],
            "digest": m["checksum"]["digest"],
            "verified": m["verified"],
            "problems": self.problems,
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(m["tokens_written"] / self.seconds) if self.seconds else 0,
        }


def export_output(
    url: str,
    dest_url: str,
    options: ExportOptions,
    storage_options: dict[str, Any] | None = None,
    dest_storage_options: dict[str, Any] | None = None,
) -> ExportReport:
    """Export (or finish exporting, or re-verify) the committed shards of `url` into `dest_url`."""
    started = time.monotonic()
    fmt = get_format(options.format)
    if dest_storage_options is None:  # the source's options, where DEST is on the same store
        same = protocol(dest_url) == protocol(url)
        dest_storage_options = storage_options if same else None
    dest = Output(dest_url, dest_storage_options)
    with DestinationLease(dest):  # one export at a time (refused before reading anything)
        source = load_source(url, storage_options)
        resolved = resolve(options, source, fmt.default_max_tokens, fmt.carries)
        if source.documents == 0:
            raise ExportError(f"output {source.output.url} has no committed documents to export")
        plans = plan_files(source, resolved)
        key = export_key(source, resolved)
        return _export(source, fmt, resolved, plans, key, dest, options, started)


def _export(
    source: Source,
    fmt: ExportFormat,
    resolved: Any,
    plans: list[Any],
    key: str,
    dest: Output,
    options: ExportOptions,
    started: float,
) -> ExportReport:
    names = {p.index: fmt.object_names(p.index, len(plans)) for p in plans}
    done = prepare_destination(dest, key, fmt, names, options.overwrite, source)
    records = []
    for plan in plans:
        record = done.get(plan.index)
        if record is None:
            record = write_file(source, fmt, resolved, plan, names[plan.index], dest, key)
            log.info("export: wrote %s", ", ".join(names[plan.index]))
        records.append(record)
    digest = combine(r["digest"] for r in records)
    fmt.finish(resolved, dest, records, digest)
    problems, bad, verified = verify_files(dest, fmt, resolved, records, options.verify)
    problems += count_problems(source, records)
    manifest = build_manifest(source, fmt, resolved, key, records, digest, verified)
    if problems:  # not a verified export (any more): a rerun rewrites the files found bad
        dest.remove(MANIFEST)
        for index in bad:
            dest.remove(f"{PROGRESS_DIR}/{index:05d}.json")
    else:
        dest.write_json(MANIFEST, manifest)
    remove_spool(dest)
    return ExportReport(
        ok=not problems,
        dest=dest.url,
        manifest=manifest,
        problems=problems,
        files_written=len(plans) - len(done),
        files_resumed=len(done),
        seconds=time.monotonic() - started,
        source_complete=run_complete(latest_run(source.output), current_holder(source.output)),
    )


class DestinationLease:
    """The export's lease on its destination (`OutputLease` on `<dest>/_export`, tokenmill's own
    folder there): a second export into the same destination at the same time is refused, naming
    the first, instead of the two removing each other's scratch files (the loser failed with a
    FileNotFoundError traceback). A local destination that had no `_export` folder and was
    refused (not empty, another export) keeps none of it."""

    def __init__(self, dest: Output):
        self.dest = dest
        self.new_root = dest.local and not os.path.exists(dest.path(""))
        self.fresh = dest.local and not os.path.exists(dest.path(EXPORT_DIR))
        self.lease = OutputLease(
            Output(f"{dest.url.rstrip('/')}/{EXPORT_DIR}", dest.storage_options),
            ttl_s=EXPORT_LEASE_S,
            holder="export",
        )

    def __enter__(self) -> DestinationLease:
        self.lease.acquire()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.lease.release()
        if exc_type is not None and self.fresh and not self.dest.exists(PLAN):
            with contextlib.suppress(OSError):  # (the lock file, and the folders if empty)
                os.remove(self.lease.output.path(LEASE_FILE) + ".lock")
                os.rmdir(self.dest.path(EXPORT_DIR))
                if self.new_root:
                    os.rmdir(self.dest.path(""))


EXPORT_LEASE_S = 60.0


def protocol(url: str) -> str:
    return fsspec.core.split_protocol(url)[0] or "file"


def prepare_destination(
    dest: Output,
    key: str,
    fmt: ExportFormat,
    names: dict[int, list[str]],
    overwrite: bool,
    source: Source,
) -> dict[int, dict[str, Any]]:
    """Claim the destination for this export (its plan written first) and return the progress
    records of files already finished by an earlier run of the same export."""
    existing = dest.read_json(PLAN) if dest.exists(PLAN) else None
    replaced = existing is not None and (overwrite or existing.get("key") != key)
    if replaced and not overwrite:
        raise ExportError(
            f"{dest.url} holds another export ({existing.get('format')} of "
            f"{existing.get('source')}); use --overwrite or another destination"
        )
    if existing is None or replaced:  # (refused before anything is deleted)
        owned = {str(o).split("/")[0] for o in (existing or {}).get("objects", [])}
        foreign = [
            n
            for n in dest.list("")
            if n not in (EXPORT_DIR, MANIFEST) and n not in owned and not empty_dir(dest, n)
        ]
        if foreign:
            raise ExportError(
                f"{dest.url} is not empty ({', '.join(foreign[:5])}) and "
                + (
                    "holds files that are not part of its export"
                    if replaced
                    else "holds no tokenmill export"
                )
                + "; choose an empty or new destination"
            )
    if replaced:
        discard(dest, existing)
        existing = None
    if existing is None:
        objects = [n for group in names.values() for n in group] + fmt.final_objects()
        dest.write_json(
            PLAN,
            {"key": key, "format": fmt.name, "source": source.output.url, "objects": objects},
        )
    remove_spool(dest)
    return finished_records(dest, key, names)


def finished_records(dest: Output, key: str, names: dict[int, list[str]]) -> dict[int, dict]:
    done = {}
    for name in dest.list(PROGRESS_DIR, ".json"):
        record = dest.read_json(f"{PROGRESS_DIR}/{name}")
        index = record.get("index")
        if (
            record.get("key") == key
            and record.get("names") == names.get(index)
            and all(dest.exists(n) for n in record["names"])
        ):
            done[index] = record
    return done


def empty_dir(dest: Output, name: str) -> bool:
    """A local folder with nothing in it (it holds nothing an export could clobber)."""
    path = dest.path(name)
    return dest.local and os.path.isdir(path) and not os.listdir(path)


def discard(dest: Output, plan: dict[str, Any]) -> None:
    """Remove what an earlier export listed in its plan (and nothing else), and on a local
    destination the folders they were in once empty (hf's `data/`: left there, it made the
    destination look foreign to the export replacing it)."""
    names = [MANIFEST, *plan.get("objects", [])]
    for name in names:
        dest.remove(name)
    dest.remove(PLAN)  # (not the whole _export folder: this export's lease is in it)
    dest.remove(PROGRESS_DIR, recursive=True)
    if dest.local:
        folders = {name.rsplit("/", k)[0] for name in names for k in range(1, name.count("/") + 1)}
        for folder in sorted(folders, key=lambda f: -f.count("/")):  # deepest first
            with contextlib.suppress(OSError):  # (not empty: something else is in it)
                os.rmdir(dest.path(folder))


def remove_spool(dest: Output) -> None:
    """Scratch files a killed export left (one writer at a time): the spool of a local
    destination, and the temporary names of the atomic writes it cut (`<name>.tmp-<id>` of its
    progress records, plan and manifest)."""
    if dest.local:
        shutil.rmtree(dest.path(SPOOL_DIR), ignore_errors=True)
    for folder, stem in ((PROGRESS_DIR, ".json"), (EXPORT_DIR, "plan.json"), ("", MANIFEST)):
        for name in dest.list(folder):
            if ".tmp-" in name and name.split(".tmp-")[0].endswith(stem):
                dest.remove(f"{folder}/{name}" if folder else name)


def write_file(
    source: Source,
    fmt: ExportFormat,
    resolved: Resolved,
    plan: FilePlan,
    names: list[str],
    dest: Output,
    key: str,
) -> dict[str, Any]:
    """Write one planned file on local scratch, commit its objects, then its progress record."""
    digest = FileDigest()
    with contextlib.ExitStack() as stack:
        paths = {name: stack.enter_context(dest.spool()) for name in names}
        batches = file_batches(source, plan, resolved, digest)
        try:
            extra = fmt.write(resolved, batches, paths, plan.index)
        except ValueError as exc:
            raise ExportError(f"export file {', '.join(names)}: {exc}") from exc
        objects = [
            {"name": n, "bytes": os.path.getsize(p), "sha256": file_checksum(p)}
            for n, p in paths.items()
        ]
        for name, path in paths.items():
            dest.commit_file(path, name)
    record = {
        "key": key,
        "index": plan.index,
        "names": names,
        "objects": objects,
        "units": list(plan.unit_ids),
        "documents": digest.documents,
        "tokens": digest.tokens,
        "tokens_written": digest.written,
        "digest": digest.digest,
        "stream": digest.stream,
        **extra,
    }
    dest.write_json(f"{PROGRESS_DIR}/{plan.index:05d}.json", record)
    return record


def count_problems(source: Source, records: list[dict[str, Any]]) -> list[str]:
    """The export must hold exactly the ledger's units, documents and tokens."""
    problems = []
    units = [u for r in records for u in r["units"]]
    if units != [e.unit_id for e in source.entries]:
        problems.append("the exported units differ from the ledger's committed units")
    documents, tokens = sum(r["documents"] for r in records), sum(r["tokens"] for r in records)
    if (documents, tokens) != (source.documents, source.tokens):
        problems.append(
            f"exported {documents} documents / {tokens} tokens, the ledger lists "
            f"{source.documents} / {source.tokens}"
        )
    return problems


def build_manifest(
    source: Source,
    fmt: ExportFormat,
    resolved: Resolved,
    key: str,
    records: list[dict[str, Any]],
    digest: str,
    verified: dict[str, Any],
) -> dict[str, Any]:
    return {
        "tokenmill_export": EXPORT_VERSION,
        "key": key,
        "format": fmt.name,
        "options": resolved.to_json(),
        "dropped_columns": [c for c in source.columns if c not in resolved.columns],
        "source": {
            "output": source.output.url,
            "config_hash": source.config_hash,
            "tokenizer": {k: source.tokenizer.get(k) for k in TOKENIZER_KEYS},
        },
        "units": [
            {
                "unit_id": e.unit_id,
                "shard": e.shard,
                "shard_checksum": e.shard_checksum,
                "documents": e.documents,
                "tokens": e.tokens,
            }
            for e in source.entries
        ],
        "files": [{k: v for k, v in r.items() if k != "key"} for r in records],
        "documents": sum(r["documents"] for r in records),
        "tokens": sum(r["tokens"] for r in records),
        "tokens_written": sum(r["tokens_written"] for r in records),
        "checksum": {"scheme": SCHEME, "digest": digest},
        "verified": verified,
    }
