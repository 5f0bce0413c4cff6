"""`tokenmill verify`: re-read every committed shard and check it against its ledger entry."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.output.lease import current_holder, is_stale
from pipeline.output.ledger import entry_unit_id, read_ledger, read_manifest
from pipeline.output.shards import bytes_checksum, shard_metadata
from pipeline.output.storage import Output
from schemas.layout import (
    LEDGER_DIR,
    REJECTS_DIR,
    RUNS_DIR,
    SHARDS_DIR,
    SIDECAR_DIR,
    SPOOL_DIR,
    UNIGRAMS_DIR,
    UnitNames,
)
from schemas.records import LedgerEntry, VerifyReport


def verify_output(url: str, storage_options: dict | None = None) -> VerifyReport:
    """Check every ledger entry's shard (checksum, schema, rows, tokens, bytes) and side files
    (rejects, sidecar, unigrams); a problem names the unit and the object."""
    output = Output(url, storage_options)
    entries, damaged = read_ledger(output)
    problems: list[str] = []
    bad_units: list[str] = []
    for rel, why in damaged.items():  # (it ended verify with exit 2 and no report)
        unit_id = entry_unit_id(rel)
        bad_units.append(unit_id)
        problems.append(f"unit {unit_id}: {why}")
    manifest = read_manifest(output) or {}
    started = (manifest.get("tokenizer") or {}).get("fingerprint")
    for entry in entries:
        unit_problems = _check_entry(output, entry)
        if unit_problems and not output.exists(
            UnitNames.of(entry.unit_id, entry.config_hash).ledger
        ):
            continue  # uncommitted while verify read it (a run redoing it): not damage
        if started and entry.tokenizer.get("fingerprint") != started:  # (a node that loaded
            # another file under the tokenizer's path wrote it)
            unit_problems.append(
                f"written by tokenizer fingerprint {entry.tokenizer.get('fingerprint')}, not "
                f"the output's ({started}, job.json)"
            )
        if unit_problems:
            bad_units.append(entry.unit_id)
            problems.extend(f"unit {entry.unit_id}: {p}" for p in unit_problems)
    orphans = orphan_files(output, entries)
    latest = latest_run(output)
    holder = current_holder(output)  # (a run began after the latest summary and has not ended)
    if not entries and not output.list(LEDGER_DIR) and not _complete_with_nothing(latest):
        problems.append(f"no ledger entries under {output.url}/{LEDGER_DIR}: nothing committed")
    return VerifyReport(
        ok=not problems,
        output=output.url,
        units=len(entries),
        documents=sum(e.documents for e in entries),
        tokens=sum(e.tokens for e in entries),
        rejected=sum(e.rejected for e in entries),
        bytes=sum(e.bytes for e in entries),
        bad_units=bad_units,
        problems=problems,
        orphans=orphans,
        spool_files=spool_files(output),
        run_complete=run_complete(latest, holder),
        units_planned=None if latest is None or holder else latest.get("units_planned"),
        run_running=None if holder is None else not is_stale(holder),
    )


def run_complete(latest: dict | None, holder: dict | None) -> bool | None:
    """Whether an output's latest run finished, from its latest summary and its lease: a run
    that holds the lease began after that summary and has not ended (None: no run at all)."""
    if holder is not None:
        return False
    return None if latest is None else bool(latest.get("complete"))


def latest_run(output: Output) -> dict | None:
    """The summary of the output's latest run (runs/ names sort by time), or None."""
    names = sorted(n for n in output.list(RUNS_DIR, ".json") if ".tmp-" not in n)
    return output.read_json(f"{RUNS_DIR}/{names[-1]}") if names else None


def _complete_with_nothing(latest: dict | None) -> bool:
    """Whether the output's latest run completed with no unit to commit (its inputs hold no
    rows: an Arrow file without record batches, a Parquet file without row groups)."""
    return latest is not None and bool(latest.get("complete")) and latest.get("units_planned") == 0


def orphan_files(output: Output, entries: list[LedgerEntry] | None = None) -> list[str]:
    """Files no committed entry lists: a unit's files published before a crash took its ledger
    entry (or an uncommit removed the entry and not yet its files) whose unit is no longer
    planned, and temporary names of atomic writes a crash cut (`*.tmp-<id>` beside the ledger,
    the runs or job.json). A fresh run has none of them; the next run removes them. Without
    `entries`, the ledger's file names say which units are committed (a unit's files are named
    after its ledger entry's stem, `UnitNames`): one listing, no entry read."""
    ledger = output.list(LEDGER_DIR)
    if entries is None:
        stems = {name.removesuffix(".json") for name in ledger if name.endswith(".json")}
        listed = {f"{d}/{stem}.arrow" for stem in stems for d in UNIT_DIRS}
    else:
        listed = {r for e in entries for r in (e.shard, e.rejects, e.sidecar, e.unigrams) if r}
    found = [f"{d}/{name}" for d in UNIT_DIRS for name in output.list(d)]
    found = [rel for rel in found if rel not in listed]
    found += [f"{LEDGER_DIR}/{name}" for name in ledger if ".tmp-" in name]
    found += [f"{RUNS_DIR}/{name}" for name in output.list(RUNS_DIR) if ".tmp-" in name]
    return found + [name for name in output.list("") if ".tmp-" in name]


UNIT_DIRS = (SHARDS_DIR, REJECTS_DIR, SIDECAR_DIR, UNIGRAMS_DIR)  # a unit's files, by its stem


def spool_files(output: Output) -> list[str]:
    """Scratch files under a local output that interrupted runs left (the next run removes them)."""
    return [f"{SPOOL_DIR}/{name}" for name in output.list(SPOOL_DIR)]


def _check_entry(output: Output, entry: LedgerEntry) -> list[str]:
    problems: list[str] = []
    try:
        data = output.read_bytes(entry.shard)
    except FileNotFoundError:
        return [f"shard {entry.shard} is missing"]
    if bytes_checksum(data) != entry.shard_checksum:
        problems.append(f"shard {entry.shard} checksum mismatch (corrupted or replaced)")
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        return [*problems, f"shard {entry.shard} is not a readable Arrow IPC file: {exc}"]
    meta = shard_metadata(table)
    if meta.get("tokenmill.schema_version") != str(entry.schema_version):
        problems.append(
            f"shard {entry.shard} schema version {meta.get('tokenmill.schema_version')} "
            f"!= ledger {entry.schema_version}"
        )
    if meta.get("tokenmill.tokenizer.fingerprint") != entry.tokenizer["fingerprint"]:
        problems.append(f"shard {entry.shard} tokenizer fingerprint differs from the ledger")
    if table.num_rows != entry.documents:
        problems.append(
            f"shard {entry.shard} has {table.num_rows} rows, ledger says {entry.documents}"
        )
    n_tokens = int(pc.sum(table["n_tokens"]).as_py() or 0) if table.num_rows else 0
    list_tokens = (
        int(pc.sum(pc.list_value_length(table["tokens"])).as_py() or 0) if table.num_rows else 0
    )
    if not n_tokens == list_tokens == entry.tokens:
        problems.append(
            f"shard {entry.shard} tokens: n_tokens {n_tokens}, lists {list_tokens}, "
            f"ledger {entry.tokens}"
        )
    n_bytes = int(pc.sum(table["n_bytes"]).as_py() or 0) if table.num_rows else 0
    if n_bytes != entry.bytes:
        problems.append(f"shard {entry.shard} bytes {n_bytes} != ledger {entry.bytes}")
    if entry.docs_read != entry.documents + entry.rejected:
        problems.append(
            f"ledger accounting: read {entry.docs_read} != {entry.documents} + {entry.rejected}"
        )
    for key in ("rejects", "sidecar", "unigrams"):
        if getattr(entry, key):
            problems.extend(_check_side_file(output, entry, key))
    return problems


def _check_side_file(output: Output, entry: LedgerEntry, key: str) -> list[str]:
    name, checksum = entry.files()[key]
    try:
        data = output.read_bytes(name)
    except FileNotFoundError:
        return [f"{key} {name} is missing"]
    if bytes_checksum(data) != checksum:
        return [f"{key} {name} checksum mismatch"]
    if key == "rejects":
        rows = pa.ipc.open_file(pa.BufferReader(data)).read_all().num_rows
        if rows != entry.rejected:
            return [f"rejects {name} has {rows} rows, ledger says {entry.rejected}"]
    if key == "unigrams":
        counted = pc.sum(pa.ipc.open_file(pa.BufferReader(data)).read_all()["count"]).as_py() or 0
        if counted != entry.tokens:
            return [f"unigrams {name} count {counted} tokens, ledger says {entry.tokens}"]
    return []
