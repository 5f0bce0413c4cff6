"""The ledger: one JSON entry per committed unit, written LAST (the commit point), plus the job
manifest and run summaries. Readers only ever read what the ledger lists: `iter_committed`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pipeline.errors import LedgerError
from pipeline.output.storage import Output
from schemas.layout import JOB_MANIFEST, LEDGER_DIR, RUNS_DIR, ledger_suffix
from schemas.records import LedgerEntry, RecordError, RunSummary


def read_entry(output: Output, rel: str) -> LedgerEntry:
    """One ledger entry; a malformed one is a LedgerError naming the object."""
    try:
        return LedgerEntry.from_json(output.read_json(rel))
    except (RecordError, ValueError, TypeError) as exc:
        raise LedgerError(
            f"ledger entry {output.url}/{rel} is malformed: {exc} (`tokenmill run --repair` "
            "redoes its unit)"
        ) from exc


def committed_entries(output: Output, config_hash: str | None = None) -> list[LedgerEntry]:
    """Every ledger entry of the output (optionally only those of one config), sorted by unit;
    a malformed one is a LedgerError naming it."""
    entries, damaged = read_ledger(output, config_hash)
    if damaged:
        raise LedgerError(next(iter(damaged.values())))
    return entries


def read_ledger(
    output: Output, config_hash: str | None = None
) -> tuple[list[LedgerEntry], dict[str, str]]:
    """(the readable entries sorted by unit, {object name: why} of the malformed ones): for
    `verify` and `--repair`, which name a damaged entry and redo its unit; every other reader
    refuses the output (committed_entries)."""
    entries, damaged = [], {}
    for name in output.list(LEDGER_DIR, ledger_suffix(config_hash)):
        try:
            entries.append(read_entry(output, f"{LEDGER_DIR}/{name}"))
        except LedgerError as exc:
            damaged[f"{LEDGER_DIR}/{name}"] = str(exc)
        except FileNotFoundError:  # uncommitted since the listing (a run redoing its unit)
            continue
    return sorted(entries, key=lambda e: (e.unit.url, e.unit.start)), damaged


def entry_unit_id(rel: str) -> str:
    """The unit id a ledger object is named for (`ledger/<unit id>.<config>.json`)."""
    return rel.rsplit("/", 1)[-1].split(".", 1)[0]


def iter_committed(output: Output, config_hash: str | None = None) -> Iterator[LedgerEntry]:
    """The committed units of an output, in unit order: the only way a reader learns which shard,
    rejects, sidecar and unigram files count (anything else under the prefix is an orphan)."""
    yield from committed_entries(output, config_hash)


def committed_unit_ids(output: Output, config_hash: str) -> set[str]:
    return {entry_unit_id(name) for name in output.list(LEDGER_DIR, ledger_suffix(config_hash))}


def read_manifest(output: Output) -> dict[str, Any] | None:
    return output.read_json(JOB_MANIFEST) if output.exists(JOB_MANIFEST) else None


def check_manifest(output: Output, manifest: dict[str, Any]) -> None:
    """Refuse to mix two configurations in one output; write the manifest on first use."""
    existing = read_manifest(output)
    if existing is None:
        output.write_json(JOB_MANIFEST, manifest)
        return
    old_version = existing.get("schema_version")
    if old_version != manifest.get("schema_version"):
        raise LedgerError(
            f"output {output.url} holds shards of schema version {old_version}; this tokenmill "
            f"writes version {manifest.get('schema_version')} and never mixes the two in one "
            "output. Use --overwrite (retokenize everything) or another output."
        )
    if existing.get("config_hash") != manifest["config_hash"]:
        raise LedgerError(
            f"output {output.url} already holds shards of another configuration "
            f"(config {existing.get('config_hash')}, tokenizer {existing.get('tokenizer', {}).get('fingerprint')}); "
            f"this job has config {manifest['config_hash']}. Use --overwrite or another output."
        )
    check_tokenizer_record(output, existing.get("tokenizer") or {}, manifest.get("tokenizer") or {})


def check_tokenizer_record(output: Output, had: dict[str, Any], has: dict[str, Any]) -> None:
    """What a resumed job's tokenizer records beside its ids must be what the output was started
    with: the EOS / BOS the loader reads (a tokenizer_config.json that appeared or changed beside
    the tokenizer file moved them without changing the config hash: one output then held entries
    of two EOS ids) and its name, written into every shard (the file's name: a byte-identical copy
    under another name resumed, and the output held shards of two names)."""
    for key in ("eos", "bos"):
        old, new = had.get(f"{key}_id"), has.get(f"{key}_id")
        if f"{key}_id" in had and f"{key}_id" in has and old != new:
            raise LedgerError(
                f"output {output.url} was started with {key.upper()} {had.get(f'{key}_token')!r} "
                f"(id {old}); this job's tokenizer resolves {has.get(f'{key}_token')!r} (id {new}) "
                "(a tokenizer_config.json beside the tokenizer file that appeared or changed?): "
                "restore what the output was started with (or pass --tokenizer-option "
                "tokenizer_config=false if it had none), or use --overwrite or another output"
            )
    if "name" in had and "name" in has and had["name"] != has["name"]:
        raise LedgerError(
            f"output {output.url} was started with a tokenizer named {had['name']!r} (its "
            f"shards record the name); this job's is named {has['name']!r}: pass --tokenizer-"
            f"option name={had['name']} to continue it, or use --overwrite or another output"
        )


def write_run_summary(output: Output, summary: RunSummary) -> str:
    """Write a run summary under runs/; returns its object name."""
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{summary.run_nonce or '0'}"
    rel = f"{RUNS_DIR}/{run_id}.json"
    output.write_json(rel, {"run_id": run_id, **summary.to_json()})
    return rel
