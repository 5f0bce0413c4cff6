"""DuckDB views over committed tokenmill outputs (documents, tokens, units, rejects, runs,
dynamic-merge batches) and the tokenization-efficiency metrics of ALGORITHMS.md section 5 (SQL
in schemas/).

Only what the ledger lists is read. Shards are Arrow IPC files, which DuckDB cannot read without an
extension, so each output's committed shards become one lazy `pyarrow.dataset` registered with
DuckDB: DuckDB pushes column projections into the scan and nothing is materialised in Python.
"""

from __future__ import annotations

import json
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from pipeline.ledger import committed_entries
from pipeline.storage import Output
from schemas.shards import REJECTS_SCHEMA, RUNS_DIR

SQL_FILE = Path(__file__).resolve().parent.parent / "schemas" / "analytics_v1.sql"
DEFAULT_ALPHA = 2.5
MAX_ALPHA = 16.0
# [(tokenizer label, filesystem, file paths)]: what a report reads itself, besides the views
Files = list[tuple[str, pafs.FileSystem, list[str]]]


@dataclass(frozen=True)
class _Inputs:
    shards: Files
    unit_counts: Files | None  # the per-unit token counts, when every unit has them


_INPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> _Inputs
GROUP_COLUMNS = ("source", "lang")  # the only columns metrics may be grouped by (besides tokenizer)
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
DOC_CACHE = (
    "tokenizer",
    "doc_id",
    "source",
    "lang",
    "n_tokens",
    "n_bytes",
    "n_chars",
    "n_words",
    "n_continued_words",
)
MERGE_STATS = ("l0", "lm", "lword", "n_docs", "n_merges")


class AnalyticsError(ValueError):
    """Nothing to analyse, or a bad analytics request (unknown baseline, grouping, alpha)."""


def quote_ident(name: str) -> str:
    """A DuckDB identifier for any string: double quotes, embedded quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_sections() -> dict[str, str]:
    """The `-- name: X` sections of schemas/analytics_v1.sql."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in SQL_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("-- name: "):
            current = line.removeprefix("-- name: ").strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


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
    with fs.open_input_file(paths[0]) as handle:
        schema = pa.ipc.open_file(handle).schema
    schema = schema.remove_metadata().append(pa.field("unit_id", pa.string()))
    partitions = [pc.field("unit_id") == pc.scalar(unit_id) for unit_id, _ in files]
    return ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.IpcFileFormat(), filesystem=fs, partitions=partitions
    )


def _tokenizer_labels(tokenizers: list[dict[str, Any]]) -> list[str]:
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


def _shard_branch(index: int, schema: pa.Schema) -> str:
    """SELECT of one registered shard dataset, cast to the common column types."""
    names = set(schema.names)
    cols = [
        f"{index} AS dataset_id",
        "unit_id",
        "doc_id",
        "CAST(source AS VARCHAR) AS source",
        "CAST(lang AS VARCHAR) AS lang",
        "CAST(tokens AS UINTEGER[]) AS tokens",
    ]
    cols += [f"CAST({c} AS BIGINT) AS {c}" for c in ("n_tokens", "n_bytes", "n_chars", "n_words")]
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


def _merge_branch(index: int, schema: pa.Schema) -> str:
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


def _union(con: duckdb.DuckDBPyConnection, name: str, branches: list[str], empty: str) -> None:
    body = "\nUNION ALL BY NAME\n".join(branches) if branches else empty
    con.execute(f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {body}")


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


def _ledger_row(output: Output, index: int, label: str, entry: dict[str, Any]) -> dict[str, Any]:
    tok, unit = entry.get("tokenizer", {}), entry.get("unit", {})
    row = {
        "output": output.url,
        "dataset_id": index,
        "tokenizer": label,
        "unit_url": unit.get("url"),
        "unit_start": unit.get("start"),
        "unit_end": unit.get("end"),
        "tokenizer_fingerprint": tok.get("fingerprint"),
        "entry": json.dumps(entry, sort_keys=True),
    }
    for key in ("unit_id", "shard", "rejects", "sidecar", "config_hash"):
        row[key] = entry.get(key)
    for key in LEDGER_COUNTS:
        row[key] = entry.get(key)
    return row


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


def _runs_rows(output: Output) -> list[dict[str, Any]]:
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


def connect(
    urls: str | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    baseline: str | None = None,
    database: str = ":memory:",
    unit_counts: bool = True,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views `documents`, `tokens`, `units`, `rejects`, `runs`,
    `merge_batches`, `unigram_counts`, `metrics` and `metrics_by_lang` over committed outputs.

    Token counts come from the per-unit counts the engine writes (unigrams/) when every unit has
    them and `unit_counts` is true, else from the shards' token lists (the views unnest them in
    DuckDB; report_tables counts them batch by batch with numpy)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise AnalyticsError("at least one output URL is required")
    con = duckdb.connect(database)
    outputs, ledger_rows, runs_rows = [], [], []
    shard_branches, reject_branches, merge_branches, unigram_branches = [], [], [], []
    pending: list[tuple[Output, list[dict[str, Any]]]] = []
    counted: Files = []
    shard_files: Files = []
    for url in urls:
        output = Output(url, storage_options)
        entries = committed_entries(output)
        if not entries:
            raise AnalyticsError(
                f"no committed units under {output.url}/ledger: nothing to analyse"
            )
        by_fingerprint: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            by_fingerprint[entry["tokenizer"]["fingerprint"]].append(entry)
        pending += [(output, group) for _, group in sorted(by_fingerprint.items())]
        runs_rows += _runs_rows(output)
    labels = _tokenizer_labels([group[0]["tokenizer"] for _, group in pending])
    for index, ((output, group), label) in enumerate(zip(pending, labels, strict=True)):
        tok = group[0]["tokenizer"]
        base = tok.get("base") if isinstance(tok.get("base"), dict) else {}
        outputs.append(
            {
                "dataset_id": index,
                "output": output.url,
                "tokenizer": label,
                "tokenizer_kind": tok.get("kind"),
                "tokenizer_name": tok.get("name"),
                "tokenizer_fingerprint": tok.get("fingerprint"),
                "vocab_size": int(tok["vocab_size"]),
                "base_vocab_size": int(base.get("vocab_size", tok["vocab_size"])),
            }
        )
        ledger_rows += [_ledger_row(output, index, label, e) for e in group]
        fs = arrow_filesystem(output)
        shards = ledger_dataset(output, [(e["unit_id"], e["shard"]) for e in group], fs)
        shard_files.append((label, fs, [output.path(e["shard"]) for e in group]))
        con.register(f"_shards_{index}", shards)
        shard_branches.append(_shard_branch(index, shards.schema))
        rejects = [(e["unit_id"], e["rejects"]) for e in group if e.get("rejects")]
        if rejects:
            con.register(f"_rejects_{index}", ledger_dataset(output, rejects, fs))
            reject_branches.append(
                f"SELECT {index} AS dataset_id, * FROM {quote_ident(f'_rejects_{index}')}"
            )
        if unit_counts and all(e.get("unigrams") for e in group):  # counted when tokenized
            unigrams = ledger_dataset(output, [(e["unit_id"], e["unigrams"]) for e in group], fs)
            counted.append((label, fs, [output.path(e["unigrams"]) for e in group]))
            con.register(f"_unigrams_{index}", unigrams)
            unigram_branches.append(
                f"SELECT {index} AS dataset_id, source, lang, token_id, count "
                f"FROM {quote_ident(f'_unigrams_{index}')}"
            )
        sidecars = [(e["unit_id"], e["sidecar"]) for e in group if e.get("sidecar")]
        if sidecars:
            sidecar = ledger_dataset(output, sidecars, fs)
            con.register(f"_sidecar_{index}", sidecar)
            merge_branches.append(_merge_branch(index, sidecar.schema))
    con.register("_outputs", pa.Table.from_pylist(outputs, OUTPUTS_SCHEMA))
    con.register("_ledger", pa.Table.from_pylist(ledger_rows, LEDGER_SCHEMA))
    con.register("_runs", pa.Table.from_pylist(runs_rows, RUNS_SCHEMA))
    con.register(
        "_rejects_empty",
        REJECTS_SCHEMA.empty_table().append_column("unit_id", pa.array([], pa.string())),
    )
    _union(con, "_shards", shard_branches, "")
    _union(
        con,
        "_rejects_raw",
        reject_branches,
        "SELECT NULL::BIGINT AS dataset_id, * FROM _rejects_empty",
    )
    con.execute(
        "CREATE OR REPLACE VIEW _rejects AS SELECT o.output, o.tokenizer, r.* EXCLUDE "
        "(dataset_id) FROM _rejects_raw r LEFT JOIN _outputs o USING (dataset_id)"
    )
    empty_merge = (
        "SELECT NULL::BIGINT AS dataset_id, NULL::VARCHAR AS unit_id, "
        "NULL::BIGINT AS batch_id, "
        + ", ".join(f"NULL::BIGINT AS {c}" for c in MERGE_STATS)
        + " WHERE false"
    )
    _union(con, "_merge_batches", merge_branches, empty_merge)
    create_views(con)
    complete = len(unigram_branches) == len(pending)
    if complete:
        # every unit carries its token counts: the unigram views never unnest the token lists
        _union(con, "_unigrams", unigram_branches, "")
        con.execute(
            "CREATE OR REPLACE VIEW unigram_counts AS SELECT dataset_id, source, lang, token_id, "
            "sum(count)::BIGINT AS n FROM _unigrams GROUP BY ALL"
        )
    _INPUTS[con] = _Inputs(shards=shard_files, unit_counts=counted if complete else None)
    set_parameters(con, alpha=alpha, baseline=baseline)
    return con


def has_precounted_unigrams(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every unit of the connected outputs carries its token counts (unigrams/)."""
    inputs = _INPUTS.get(con)
    return inputs is not None and inputs.unit_counts is not None


RAW_RELATIONS = ("_outputs", "_shards", "_ledger", "_runs", "_rejects", "_merge_batches")


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """The public views over the raw relations (RAW_RELATIONS) of the current database."""
    con.execute(sql_sections()["views"])
    con.execute(f"CREATE OR REPLACE VIEW metrics AS {metrics_sql(('source', 'lang'))}")
    con.execute(f"CREATE OR REPLACE VIEW metrics_by_lang AS {metrics_sql(('lang',))}")


def export_database(
    urls: str | Iterable[str], path: str, storage_options: dict[str, Any] | None = None
) -> str:
    """Copy the outputs' rows (token lists included) into a DuckDB database file with the same
    views, for the DuckDB CLI (`duckdb PATH`) or any DuckDB client; returns PATH."""
    con = connect(urls, storage_options)
    try:
        con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS export_db")
        for name in RAW_RELATIONS:
            con.execute(f"CREATE OR REPLACE TABLE export_db.{name} AS SELECT * FROM {name}")
        con.execute("USE export_db")
        create_views(con)
    finally:
        con.close()
    return path


def tokenizers(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        row[0]
        for row in con.execute("SELECT DISTINCT tokenizer FROM _outputs ORDER BY 1").fetchall()
    ]


def set_parameters(
    con: duckdb.DuckDBPyConnection, *, alpha: float = DEFAULT_ALPHA, baseline: str | None = None
) -> None:
    """Set the Renyi alpha and the baseline tokenizer (by label) used by the metrics views."""
    if not 0 < alpha <= MAX_ALPHA or alpha == 1:
        # sum(n ** alpha) over token counts stays finite in doubles up to alpha = 16
        raise AnalyticsError(f"Renyi alpha must be in (0, {MAX_ALPHA:g}] and != 1, got {alpha}")
    if baseline is not None and baseline not in (names := tokenizers(con)):
        raise AnalyticsError(
            f"baseline tokenizer {baseline!r} is not in these outputs; "
            f"tokenizers: {', '.join(names)}"
        )
    con.execute("SET VARIABLE renyi_alpha = ?", [float(alpha)])
    con.execute("SET VARIABLE baseline = ?", [baseline])


def unigram_stats_sql(group: str, counts: str) -> str:
    """Unigram statistics (types, entropy, renyi_entropy, unigram_bits) per `group` (SQL columns)
    from `counts` (a relation or parenthesised query with those columns and `n`)."""
    sql = sql_sections()["unigram_stats"]
    return sql.replace("{group}", group).replace("{counts}", counts)


def metrics_sql(
    by: Sequence[str] = GROUP_COLUMNS,
    unigram: str = "unigram_counts",
    documents: str = "documents",
    unigram_stats: str | None = None,
    based: str | None = None,
) -> str:
    """The metrics query grouped by tokenizer and `by` (a subset of GROUP_COLUMNS), reading token
    counts from `unigram` (dataset_id, source, lang, token_id, n) and per-document counts from
    `documents` (views or cached tables). `unigram_stats` names a relation that already holds the
    unigram statistics at this grain (see unigram_stats_sql), which spares the token counts;
    `based` one that holds the documents with their `base_tokens` (section `based`), which spares
    the join with the baseline."""
    bad = [c for c in by if c not in GROUP_COLUMNS]
    if bad:
        raise AnalyticsError(f"cannot group metrics by {bad}; choose from {list(GROUP_COLUMNS)}")
    keys = "".join(f", {quote_ident(c)}" for c in by)
    if unigram_stats is None:
        counts = (
            f"(SELECT o.tokenizer{keys}, u.token_id, sum(u.n)::DOUBLE AS n "
            f"FROM {quote_ident(unigram)} u JOIN _outputs o USING (dataset_id) GROUP BY ALL)"
        )
        stats_sql = unigram_stats_sql(f"tokenizer{keys}", counts)
    else:
        stats_sql = f"SELECT * FROM {quote_ident(unigram_stats)}"
    if based is None:
        based_sql = sql_sections()["based"].replace("{documents}", quote_ident(documents))
    else:
        based_sql = f"SELECT * FROM {quote_ident(based)}"
    replacements = {
        "{based}": based_sql,
        "{unigram_stats}": stats_sql,
        "{keys}": keys,
        "{d_keys}": "".join(f", d.{quote_ident(c)}" for c in by),
        "{join_u}": "".join(
            f" AND u.{quote_ident(c)} IS NOT DISTINCT FROM d.{quote_ident(c)}" for c in by
        ),
    }
    sql = sql_sections()["metrics"]
    for placeholder, value in replacements.items():
        sql = sql.replace(placeholder, value)
    return sql


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A query's result as an Arrow table (values reach SQL as DuckDB variables, not text)."""
    return con.sql(sql).to_arrow_table()


KEYED_CHUNK_ROWS = 1 << 22  # per-unit count rows gathered in memory before DuckDB folds them in
TOKEN_MASK = 0xFFFFFFFF
DENSE_CELLS = 1 << 23  # groups x token ids summed in a dense array (64 MB) rather than hashed


def _read_columns(
    fs: pafs.FileSystem, path: str, wanted: Sequence[str]
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The record batches of an Arrow IPC file with only the `wanted` columns it has (in that
    order). Off the local disk only those columns' buffers are read (a remote shard's token lists
    are not fetched for its per-document columns); locally the file is memory-mapped, so the
    columns not selected are never touched anyway."""
    with fs.open_input_file(path) as handle:
        reader = pa.ipc.open_file(handle)
        schema = reader.schema
        cols = [c for c in wanted if c in schema.names]
        if len(cols) < len(schema.names) and not isinstance(fs, pafs.LocalFileSystem):
            fields = [schema.get_field_index(c) for c in cols]
            reader = pa.ipc.open_file(handle, options=pa.ipc.IpcReadOptions(included_fields=fields))
        batches = [reader.get_batch(i).select(cols) for i in range(reader.num_record_batches)]
    return pa.schema([schema.field(c) for c in cols]), batches


def _constant(values: pa.Array, first: Any) -> bool:
    if first is None:
        return values.null_count == len(values)
    return values.null_count == 0 and pc.all(pc.equal(values, first)).as_py()


def _keyed_from_files(
    con: duckdb.DuckDBPyConnection,
    sources: Files,
    from_shards: bool = False,
) -> None:
    """`_unigram_keyed` (k = group id << 32 | token id, n), `_unigram_keyed_lang` (the same by
    tokenizer x language group) and `_unigram_group_names` from the per-unit count files, or (`from_shards`) from the shards' token lists, counted per record
    batch. Grouping 4-tuples with two strings costs DuckDB several times more than one integer
    key, and the strings repeat within a file, so each batch's (source, lang) pairs are numbered
    here from their dictionaries; rows reach DuckDB in chunks of about KEYED_CHUNK_ROWS, which
    bounds memory, and DuckDB sums them by key."""
    groups: dict[tuple[str, str | None, str | None], int] = {}
    lang_groups: dict[tuple[str, str | None], int] = {}
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    pending = flushes = 0
    for name in ("_unigram_partial", "_unigram_partial_lang"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (k UBIGINT, n DOUBLE)")

    def insert(table: str, gid: np.ndarray, token: np.ndarray, n: np.ndarray) -> None:
        """Rows (gid << 32 | token, n) summed by key into `table`."""
        width = int(token.max()) + 1 if len(token) else 1
        if len(token) and (int(gid.max()) + 1) * width <= DENSE_CELLS:
            # few groups x a vocabulary: sum by direct addressing, as np.bincount does
            summed = np.bincount(gid.astype(np.int64) * width + token.astype(np.int64), weights=n)
            cells = np.flatnonzero(summed)
            high = (cells // width).astype(np.uint64) << np.uint64(32)
            chunk = pa.table({"k": high | (cells % width).astype(np.uint64), "n": summed[cells]})
            select = "SELECT k, n FROM _unigram_chunk"
        else:
            chunk = pa.table({"k": (gid.astype(np.uint64) << np.uint64(32)) | token, "count": n})
            select = "SELECT k, sum(count)::DOUBLE FROM _unigram_chunk GROUP BY k"
        con.register("_unigram_chunk", chunk)
        con.execute(f"INSERT INTO {table} {select}")
        con.unregister("_unigram_chunk")

    def flush() -> None:
        nonlocal pending, flushes, keys, counts
        k, n = np.concatenate(keys), np.concatenate(counts)
        gid, token = k >> np.uint64(32), k & np.uint64(TOKEN_MASK)
        insert("_unigram_partial", gid, token, n)
        lang_of = np.array([lang_groups[(g[0], g[2])] for g in groups], dtype=np.uint64)
        insert(
            "_unigram_partial_lang", lang_of[gid.astype(np.int64)] if len(gid) else gid, token, n
        )
        keys, counts, pending, flushes = [], [], 0, flushes + 1

    def group_ids(label: str, source: pa.Array, lang: pa.Array) -> np.ndarray | int:
        """The group id of every row, or one id when the batch holds a single (source, lang), as
        the engine writes them (one record batch per group)."""
        s0, l0 = source[0].as_py(), lang[0].as_py()
        if _constant(source, s0) and _constant(lang, l0):
            lang_groups.setdefault((label, l0), len(lang_groups))
            return groups.setdefault((label, s0, l0), len(groups))
        src = pc.dictionary_encode(source, null_encoding="encode")
        lng = pc.dictionary_encode(lang, null_encoding="encode")
        src_names, lang_names = src.dictionary.to_pylist(), lng.dictionary.to_pylist()
        for l_name in lang_names:
            lang_groups.setdefault((label, l_name), len(lang_groups))
        gid = np.array(
            [
                [groups.setdefault((label, a, b), len(groups)) for b in lang_names]
                for a in src_names
            ],
            dtype=np.uint64,
        ).reshape(len(src_names), len(lang_names))
        return gid[src.indices.to_numpy(), lng.indices.to_numpy()]

    def add(gid: np.ndarray | int, tokens: np.ndarray, n: np.ndarray) -> None:
        nonlocal pending
        keys.append((np.asarray(gid, dtype=np.uint64) << np.uint64(32)) | tokens.astype(np.uint64))
        counts.append(n)
        pending += len(n)

    def count_tokens(gid: np.ndarray | int, lists: pa.Array) -> None:
        """Token counts of one shard batch, per group, by direct addressing (np.bincount)."""
        flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
        if not len(flat):
            return
        width = int(flat.max()) + 1
        if isinstance(gid, int):
            n = np.bincount(flat, minlength=width)
            ids = np.flatnonzero(n)
            add(gid, ids, n[ids])
            return
        local, inverse = np.unique(gid, return_inverse=True)
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        n = np.bincount(np.repeat(inverse, lengths) * width + flat)
        cells = np.flatnonzero(n)
        add(local[cells // width], cells % width, n[cells])

    wanted = (
        ("source", "lang", "tokens") if from_shards else ("source", "lang", "token_id", "count")
    )
    for label, fs, paths in sources:
        for path in paths:
            _, batches = _read_columns(fs, path, wanted)
            for batch in batches:
                if not batch.num_rows:
                    continue
                gid = group_ids(label, batch.column("source"), batch.column("lang"))
                if from_shards:
                    count_tokens(gid, batch.column("tokens"))
                else:
                    add(gid, batch.column("token_id").to_numpy(), batch.column("count").to_numpy())
            if pending >= KEYED_CHUNK_ROWS:
                flush()
    if pending or not flushes:
        if not keys:
            keys, counts = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
        flush()
    for partial, final in (
        ("_unigram_partial", "_unigram_keyed"),
        ("_unigram_partial_lang", "_unigram_keyed_lang"),
    ):
        if flushes == 1:  # already summed by key
            con.execute(f"ALTER TABLE {partial} RENAME TO {final}")
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {final} AS "
                f"SELECT k, sum(n) AS n FROM {partial} GROUP BY k"
            )
            con.execute(f"DROP TABLE {partial}")
    names = pa.table(
        {
            "gid": pa.array(list(groups.values()), pa.int64()),
            "tokenizer": [g[0] for g in groups],
            "source": [g[1] for g in groups],
            "lang": [g[2] for g in groups],
            "lang_gid": pa.array([lang_groups[(g[0], g[2])] for g in groups], pa.int64()),
        }
    )
    con.register("_unigram_names_arrow", names)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_group_names AS SELECT * FROM _unigram_names_arrow"
    )
    con.unregister("_unigram_names_arrow")


DOC_CHUNK_ROWS = 1 << 20  # per-document rows gathered in memory before DuckDB copies them in
DOC_COUNTS = ("n_tokens", "n_bytes", "n_chars", "n_words", "n_continued_words")


def _documents_from_files(con: duckdb.DuckDBPyConnection, sources: Files) -> None:
    """`_documents_cache` (DOC_CACHE columns) from the shards, read with pyarrow (the per-document
    columns only; token lists are never touched). The repeating strings reach DuckDB
    dictionary-encoded, which DuckDB ingests several times faster than plain strings, in chunks of
    about DOC_CHUNK_ROWS rows."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _documents_cache (tokenizer VARCHAR, doc_id VARCHAR, "
        "source VARCHAR, lang VARCHAR, " + ", ".join(f"{c} BIGINT" for c in DOC_COUNTS) + ")"
    )
    pending: list[pa.Table] = []
    rows = 0

    def flush() -> None:
        nonlocal pending, rows
        if pending:
            chunk = pa.concat_tables(pending, promote_options="permissive").combine_chunks()
            for name in ("tokenizer", "source", "lang"):
                index = chunk.schema.get_field_index(name)
                encoded = pc.dictionary_encode(chunk.column(name).cast(pa.string()))
                chunk = chunk.set_column(index, name, encoded)
            con.register("_documents_chunk", chunk)
            con.execute(
                f"INSERT INTO _documents_cache SELECT {', '.join(DOC_CACHE)} FROM _documents_chunk"
            )
            con.unregister("_documents_chunk")
        pending, rows = [], 0

    wanted = ("doc_id", "source", "lang", *DOC_COUNTS)
    for label, fs, paths in sources:
        for path in paths:
            schema, batches = _read_columns(fs, path, wanted)
            table = pa.Table.from_batches(batches, schema)
            for name in wanted:
                if name not in schema.names:
                    table = table.append_column(name, pa.nulls(table.num_rows, pa.int64()))
            pending.append(table.append_column("tokenizer", pa.repeat(label, table.num_rows)))
            rows += table.num_rows
            if rows >= DOC_CHUNK_ROWS:
                flush()
    flush()


def _keyed_from_relation(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """`_unigram_keyed` and `_unigram_group_names` from a relation of (dataset_id, source, lang,
    token_id, n) rows (the `unigram_counts` view of a database written by export_database)."""
    rel = quote_ident(relation)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_group_names AS "
        "SELECT (row_number() OVER (ORDER BY tokenizer, source, lang) - 1)::BIGINT AS gid, "
        "tokenizer, source, lang, "
        "(dense_rank() OVER (ORDER BY tokenizer, lang) - 1)::BIGINT AS lang_gid "
        f"FROM (SELECT DISTINCT o.tokenizer, u.source, u.lang FROM {rel} u "
        "JOIN _outputs o USING (dataset_id))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_keyed AS "
        "SELECT (g.gid::UBIGINT << 32) | u.token_id::UBIGINT AS k, sum(u.n)::DOUBLE AS n "
        f"FROM {rel} u JOIN _outputs o USING (dataset_id) JOIN _unigram_group_names g "
        "ON g.tokenizer = o.tokenizer AND g.source IS NOT DISTINCT FROM u.source "
        "AND g.lang IS NOT DISTINCT FROM u.lang GROUP BY ALL"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_keyed_lang AS "
        f"SELECT (g.lang_gid::UBIGINT << 32) | (u.k & {TOKEN_MASK}) AS k, sum(u.n) AS n "
        "FROM _unigram_keyed u JOIN _unigram_group_names g ON g.gid = (u.k >> 32)::BIGINT "
        "GROUP BY 1"
    )


def _unigram_stats_tables(con: duckdb.DuckDBPyConnection) -> None:
    """`_unigram_stats_source` and `_unigram_stats_lang` (tokenizer, [source,] lang, types,
    entropy, renyi_entropy, unigram_bits) from `_unigram_keyed` and `_unigram_keyed_lang`
    (k = language group id << 32 | token id), grouped on integer keys only."""
    by_gid = unigram_stats_sql("gid", "(SELECT (k >> 32)::BIGINT AS gid, n FROM _unigram_keyed)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_stats_source AS "
        "SELECT g.tokenizer, g.source, g.lang, s.* EXCLUDE (gid) "
        f"FROM ({by_gid}) s JOIN _unigram_group_names g USING (gid)"
    )
    by_lang = unigram_stats_sql(
        "lang_gid", "(SELECT (k >> 32)::BIGINT AS lang_gid, n FROM _unigram_keyed_lang)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_stats_lang AS "
        "SELECT g.tokenizer, g.lang, s.* EXCLUDE (lang_gid) "
        f"FROM ({by_lang}) s JOIN (SELECT DISTINCT lang_gid, tokenizer, lang "
        "FROM _unigram_group_names) g USING (lang_gid)"
    )


def report_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """Everything a report shows, with each input read once: the token counts per (tokenizer,
    source, language, token id) are folded into one temporary table keyed by integers (from the
    per-unit counts the engine wrote at tokenization time when every unit has them, else counted
    from the shards' token lists batch by batch), the per-document counts go into another (no
    token lists), and every metric is grouped from those two in DuckDB."""
    sections = sql_sections()
    temps = ["_unigram_keyed", "_unigram_keyed_lang", "_unigram_group_names"]
    temps += ["_unigram_stats_source"]
    temps += ["_unigram_stats_lang", "_documents_cache", "_documents_based"]
    inputs = _INPUTS.get(con)
    if inputs is None:  # a database file opened without connect(): its own views
        _keyed_from_relation(con, "unigram_counts")
    elif inputs.unit_counts is not None:
        _keyed_from_files(con, inputs.unit_counts)
    else:
        _keyed_from_files(con, inputs.shards, from_shards=True)
    _unigram_stats_tables(con)
    if inputs is not None:
        _documents_from_files(con, inputs.shards)
    else:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _documents_cache AS SELECT {', '.join(DOC_CACHE)} "
            "FROM documents"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _documents_based AS "
        + sections["based"].replace("{documents}", "_documents_cache")
    )
    tables = {
        "by_lang": query(
            con,
            metrics_sql(("lang",), unigram_stats="_unigram_stats_lang", based="_documents_based"),
        ),
        "by_source": query(
            con,
            metrics_sql(
                ("source", "lang"), unigram_stats="_unigram_stats_source", based="_documents_based"
            ),
        ),
        "merge": query(con, sections["merge_summary"]),
        "length_histogram": query(
            con, sections["length_histogram"].replace("{documents}", "_documents_cache")
        ),
    }
    for name in temps:
        con.execute(f"DROP TABLE {name}")
    return tables


def summary_table(
    urls: str | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    baseline: str | None = None,
) -> str:
    """The tokenizer x language metrics table as text (the first table of `tokenmill report`)."""
    from pipeline.analytics_report import SUMMARY_COLUMNS, format_table

    con = connect(urls, storage_options, baseline=baseline)
    try:
        table = query(con, metrics_sql(("lang",)))
    finally:
        con.close()
    return format_table(table, SUMMARY_COLUMNS)
