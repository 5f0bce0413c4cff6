"""`tokenmill verify`: re-read every committed shard and check it against its ledger entry."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.output.ledger import committed_entries
from pipeline.output.shards import bytes_checksum, shard_metadata
from pipeline.output.storage import Output
from schemas.layout import LEDGER_DIR, SHARDS_DIR, SPOOL_DIR
from schemas.records import LedgerEntry, VerifyReport


def verify_output(url: str, storage_options: dict | None = None) -> VerifyReport:
    """Check every ledger entry's shard (checksum, schema, rows, tokens, bytes) and side files
    (rejects, sidecar, unigrams); a problem names the unit and the object."""
    output = Output(url, storage_options)
    entries = committed_entries(output)
    problems: list[str] = []
    bad_units: list[str] = []
    for entry in entries:
        unit_problems = _check_entry(output, entry)
        if unit_problems:
            bad_units.append(entry.unit_id)
            problems.extend(f"unit {entry.unit_id}: {p}" for p in unit_problems)
    listed = {e.shard.split("/", 1)[1] for e in entries}
    orphans = [n for n in output.list(SHARDS_DIR, ".arrow") if n not in listed]
    if not entries and not output.list(LEDGER_DIR):
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
    )


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
