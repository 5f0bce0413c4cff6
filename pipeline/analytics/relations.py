"""The raw relations under the views, built from what the ledger lists: one dataset per (output,
tokenizer), its committed shards, rejects, sidecars and per-unit token counts as lazy Arrow IPC
datasets registered with DuckDB, and the ledger entries, run summaries and tokenizers as small
Arrow tables.

DuckDB cannot read Arrow IPC files without an extension, so each dataset's committed files become
one `pyarrow.dataset` whose `unit_id` column comes from per-file partition expressions: DuckDB
pushes column projections into the scan and nothing is materialised in Python."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from pipeline.analytics.sql import quote_ident
from pipeline.errors import AnalyticsError
from pipeline.output import LedgerEntry, Output, read_manifest
from schemas.layout import RUNS_DIR
from schemas.shards import REJECTS_SCHEMA

# What the views are made of; export_database copies exactly these.
RAW_RELATIONS = ("_outputs", "_shards", "_ledger", "_runs", "_rejects", "_merge_batches")
# [(tokenizer label, filesystem, file paths)]: what a report reads itself, besides the views
Files = list[tuple[str, pafs.FileSystem, list[str]]]
SHARD_COLUMNS = (
    "doc_id",
    "source",
    "lang",
    "tokens",
    "n_tokens",
    "n_bytes",
    "n_chars",
    "n_words",
    "n_continued_words",
    "token_offsets",
)
MERGE_STATS = ("l0", "lm", "lword", "n_docs", "n_merges")
LEDGER_COUNTS = (
    "docs_read",
    "documents",
    "rejected",
    "tokens",
    "bytes",
    "chars",
    "words",
    "batches",
)
LEDGER_SCHEMA = pa.schema(
    [
        ("output", pa.string()),
        ("dataset_id", pa.int64()),
        ("tokenizer", pa.string()),
        ("unit_id", pa.string()),
        ("unit_url", pa.string()),
        ("unit_start", pa.int64()),
        ("unit_end", pa.int64()),
        ("shard", pa.string()),
        ("rejects", pa.string()),
        ("sidecar", pa.string()),
        ("config_hash", pa.string()),
        ("tokenizer_fingerprint", pa.string()),
    ]
    + [(k, pa.int64()) for k in LEDGER_COUNTS]
    + [("entry", pa.string())]
)
RUNS_SCHEMA = pa.schema(
    [
        ("output", pa.string()),
        ("run_id", pa.string()),
        ("complete", pa.bool_()),
        ("units_planned", pa.int64()),
        ("units_committed", pa.int64()),
        ("units_run", pa.int64()),
        ("documents", pa.int64()),
        ("tokens", pa.int64()),
        ("bytes", pa.int64()),
        ("rejected", pa.int64()),
        ("seconds", pa.float64()),
        ("mb_per_s", pa.float64()),
        ("tokens_per_s", pa.float64()),
        ("tokenizer_name", pa.string()),
        ("summary", pa.string()),
    ]
)
OUTPUTS_SCHEMA = pa.schema(
    [
        ("dataset_id", pa.int64()),
        ("output", pa.string()),
        ("tokenizer", pa.string()),
        ("tokenizer_kind", pa.string()),
        ("tokenizer_name", pa.string()),
        ("tokenizer_fingerprint", pa.string()),
        ("vocab_size", pa.int64()),
        ("base_vocab_size", pa.int64()),
    ]
)
EMPTY_MERGE = (
    "SELECT NULL::BIGINT AS dataset_id, NULL::VARCHAR AS unit_id, NULL::BIGINT AS batch_id, "
    + ", ".join(f"NULL::BIGINT AS {c}" for c in MERGE_STATS)
    + " WHERE false"
)


def arrow_filesystem(output: Output) -> pafs.FileSystem:
    if output.local:
        return pafs.LocalFileSystem(use_mmap=True)
    return pafs.PyFileSystem(pafs.FSSpecHandler(output.fs))


def ledger_dataset(
    output: Output, files: Sequence[tuple[str, str]], fs: pafs.FileSystem
) -> ds.Dataset:
    """A lazy Arrow IPC dataset over (unit_id, relative path) files, with a `unit_id` column that
    comes from per-file partition expressions (never stored in the files)."""
    paths = [output.path(rel) for _, rel in files]
    try:
        with fs.open_input_file(paths[0]) as handle:
            schema = pa.ipc.open_file(handle).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise damaged(paths[0], exc) from None
    schema = schema.remove_metadata().append(pa.field("unit_id", pa.string()))
    partitions = [pc.field("unit_id") == pc.scalar(unit_id) for unit_id, _ in files]
    return ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.IpcFileFormat(), filesystem=fs, partitions=partitions
    )


def damaged(path: str, exc: Exception) -> AnalyticsError:
    """The error of an output's file that no longer reads (torn or overwritten after its commit)."""
    return AnalyticsError(
        f"{path} is not a readable Arrow file ({exc}): it was damaged after its commit, or a run "
        "redoing its unit (--overwrite, changed inputs) removed it while this read the output "
        "(then run the report again); `tokenmill verify` names every damaged file and "
        "`tokenmill run --repair` redoes their units"
    )


def tokenizer_labels(tokenizers: list[dict[str, Any]]) -> list[str]:
    """The tokenizer's name; with a fingerprint prefix when two tokenizers share one name."""
    fingerprints: dict[str, set[str]] = defaultdict(set)
    for tok in tokenizers:
        fingerprints[str(tok.get("name"))].add(str(tok.get("fingerprint")))
    return [
        str(t.get("name"))
        if len(fingerprints[str(t.get("name"))]) == 1
        else f"{t.get('name')}#{str(t.get('fingerprint'))[:8]}"
        for t in tokenizers
    ]


def shard_branch(index: int, schema: pa.Schema, words: bool = True) -> str:
    """SELECT of one registered shard dataset, cast to the common column types; `words` false:
    the job counted no words (`--no-word-stats` writes 0), so n_words reads as NULL."""
    names = set(schema.names)
    cols = [
        f"{index} AS dataset_id",
        "unit_id",
        "doc_id",
        "CAST(source AS VARCHAR) AS source",
        "CAST(lang AS VARCHAR) AS lang",
        "CAST(tokens AS UINTEGER[]) AS tokens",
    ]
    cols += [f"CAST({c} AS BIGINT) AS {c}" for c in ("n_tokens", "n_bytes", "n_chars")]
    cols.append("CAST(n_words AS BIGINT) AS n_words" if words else "NULL::BIGINT AS n_words")
    cols.append(
        "CAST(n_continued_words AS BIGINT) AS n_continued_words"
        if "n_continued_words" in names
        else "NULL::BIGINT AS n_continued_words"
    )
    cols.append(
        "CAST(token_offsets AS UINTEGER[]) AS token_offsets"
        if "token_offsets" in names
        else "NULL::UINTEGER[] AS token_offsets"
    )
    cols += [quote_ident(n) for n in schema.names if n not in SHARD_COLUMNS and n != "unit_id"]
    return f"SELECT {', '.join(cols)} FROM {quote_ident(f'_shards_{index}')}"


def merge_branch(index: int, schema: pa.Schema) -> str:
    """Batch statistics rows of one sidecar dataset (rows without a new id, when it has them)."""
    names = set(schema.names)
    cols = [f"{index} AS dataset_id", "unit_id"]
    cols.append("batch_id" if "batch_id" in names else "NULL::BIGINT AS batch_id")
    cols += [quote_ident(c) if c in names else f"NULL::BIGINT AS {c}" for c in MERGE_STATS]
    scalar = [
        f.name for f in schema if not (pa.types.is_nested(f.type) or pa.types.is_binary(f.type))
    ]
    skip = {"unit_id", "batch_id", "new_id", "replaced", *MERGE_STATS}
    cols += [quote_ident(n) for n in scalar if n not in skip]
    where = " WHERE new_id IS NULL" if "new_id" in names else ""
    return f"SELECT {', '.join(cols)} FROM {quote_ident(f'_sidecar_{index}')}{where}"


def ledger_row(
    output: Output, index: int, label: str, entry: LedgerEntry, words: bool = True
) -> dict[str, Any]:
    """One row of `_ledger` (the `units` view): the entry's files and counts (words NULL when the
    job counted none), and its JSON."""
    row = {
        "output": output.url,
        "dataset_id": index,
        "tokenizer": label,
        "unit_id": entry.unit_id,
        "unit_url": entry.unit.url,
        "unit_start": entry.unit.start,
        "unit_end": entry.unit.end,
        "shard": entry.shard,
        "rejects": entry.rejects,
        "sidecar": entry.sidecar,
        "config_hash": entry.config_hash,
        "tokenizer_fingerprint": entry.tokenizer.get("fingerprint"),
        "entry": json.dumps(entry.to_json(), sort_keys=True),
    }
    row.update({key: getattr(entry, key) for key in LEDGER_COUNTS})
    if not words:
        row["words"] = None
    return row


def counts_words(output: Output) -> bool:
    """Whether the job that wrote `output` counted words (its manifest's options; one output holds
    one configuration): with `--no-word-stats` the shards' n_words are 0, not counts."""
    manifest = read_manifest(output) or {}
    return (manifest.get("options") or {}).get("word_stats", True) is not False


def output_row(index: int, output: Output, label: str, tok: dict[str, Any]) -> dict[str, Any]:
    """One row of `_outputs`: a dataset (output x tokenizer) and its tokenizer."""
    base = tok.get("base") if isinstance(tok.get("base"), dict) else {}
    return {
        "dataset_id": index,
        "output": output.url,
        "tokenizer": label,
        "tokenizer_kind": tok.get("kind"),
        "tokenizer_name": tok.get("name"),
        "tokenizer_fingerprint": tok.get("fingerprint"),
        "vocab_size": int(tok["vocab_size"]),
        "base_vocab_size": int(base.get("vocab_size", tok["vocab_size"])),
    }


def runs_rows(output: Output) -> list[dict[str, Any]]:
    """Rows of `_runs`: the run summaries under runs/, read as the JSON they were written as."""
    rows = []
    for name in output.list(RUNS_DIR, ".json"):
        summary = output.read_json(f"{RUNS_DIR}/{name}")
        row = {f.name: summary.get(f.name) for f in RUNS_SCHEMA}
        row.update(
            output=output.url,
            tokenizer_name=(summary.get("tokenizer") or {}).get("name"),
            summary=json.dumps(summary, sort_keys=True),
        )
        rows.append(row)
    return rows


def _union(con: duckdb.DuckDBPyConnection, name: str, branches: list[str], empty: str) -> None:
    body = "\nUNION ALL BY NAME\n".join(branches) if branches else empty
    con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {body}")


@dataclass
class RawRelations:
    """Registers the datasets of one connection, one `add` per (output, tokenizer), then `finish`
    creates the raw relations (RAW_RELATIONS, and `_unigrams` when every unit has its counts)."""

    con: duckdb.DuckDBPyConnection
    unit_counts: bool = True  # read the per-unit token counts when every unit has them
    shards: Files = field(default_factory=list)
    counted: Files = field(default_factory=list)
    wordless: set[str] = field(default_factory=set)  # shard paths whose jobs counted no words
    outputs: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    branches: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, output: Output, label: str, entries: list[LedgerEntry]) -> None:
        """One dataset: the committed units of `output` made with one tokenizer."""
        con, index = self.con, len(self.outputs)
        words = counts_words(output)
        self.outputs.append(output_row(index, output, label, entries[0].tokenizer))
        self.ledger += [ledger_row(output, index, label, e, words) for e in entries]
        fs = arrow_filesystem(output)
        shards = ledger_dataset(output, [(e.unit_id, e.shard) for e in entries], fs)
        paths = [output.path(e.shard) for e in entries]
        self.shards.append((label, fs, paths))
        if not words:
            self.wordless.update(paths)
        con.register(f"_shards_{index}", shards)
        self.branches["_shards"].append(shard_branch(index, shards.schema, words))
        rejects = [(e.unit_id, e.rejects) for e in entries if e.rejects]
        if rejects:
            con.register(f"_rejects_{index}", ledger_dataset(output, rejects, fs))
            self.branches["_rejects_raw"].append(
                f"SELECT {index} AS dataset_id, * FROM {quote_ident(f'_rejects_{index}')}"
            )
        if self.unit_counts and all(e.unigrams for e in entries):  # counted when tokenized
            files = [(e.unit_id, e.unigrams) for e in entries]
            con.register(f"_unigrams_{index}", ledger_dataset(output, files, fs))
            self.counted.append((label, fs, [output.path(e.unigrams) for e in entries]))
            self.branches["_unigrams"].append(
                f"SELECT {index} AS dataset_id, source, lang, token_id, count "
                f"FROM {quote_ident(f'_unigrams_{index}')}"
            )
        sidecars = [(e.unit_id, e.sidecar) for e in entries if e.sidecar]
        if sidecars:
            sidecar = ledger_dataset(output, sidecars, fs)
            con.register(f"_sidecar_{index}", sidecar)
            self.branches["_merge_batches"].append(merge_branch(index, sidecar.schema))

    @property
    def complete(self) -> bool:
        """Whether every dataset carries its per-unit token counts."""
        return len(self.counted) == len(self.outputs)

    def finish(self, runs: list[dict[str, Any]]) -> None:
        """The raw relations over everything added, and `runs` (rows of RUNS_SCHEMA)."""
        con = self.con
        con.register("_outputs", pa.Table.from_pylist(self.outputs, OUTPUTS_SCHEMA))
        con.register("_ledger", pa.Table.from_pylist(self.ledger, LEDGER_SCHEMA))
        con.register("_runs", pa.Table.from_pylist(runs, RUNS_SCHEMA))
        con.register(
            "_rejects_empty",
            REJECTS_SCHEMA.empty_table().append_column("unit_id", pa.array([], pa.string())),
        )
        _union(con, "_shards", self.branches["_shards"], "")
        _union(
            con,
            "_rejects_raw",
            self.branches["_rejects_raw"],
            "SELECT NULL::BIGINT AS dataset_id, * FROM _rejects_empty",
        )
        con.execute(
            "CREATE OR REPLACE VIEW _rejects AS SELECT o.output, o.tokenizer, r.* EXCLUDE "
            "(dataset_id) FROM _rejects_raw r LEFT JOIN _outputs o USING (dataset_id)"
        )
        _union(con, "_merge_batches", self.branches["_merge_batches"], EMPTY_MERGE)

    def count_views(self) -> None:
        """`unigram_counts` over the per-unit counts (replacing the view that unnests the token
        lists); only when every unit carries them (`complete`)."""
        _union(self.con, "_unigrams", self.branches["_unigrams"], "")
        self.con.execute(
            "CREATE OR REPLACE VIEW unigram_counts AS SELECT dataset_id, source, lang, token_id, "
            "sum(count)::BIGINT AS n FROM _unigrams GROUP BY ALL"
        )
