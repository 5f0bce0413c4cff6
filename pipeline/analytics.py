"""DuckDB views over committed tokenmill outputs (documents, tokens, units, rejects, runs,
dynamic-merge batches) and the tokenization-efficiency metrics of ALGORITHMS.md section 5 (SQL
in schemas/).

Only what the ledger lists is read. Shards are Arrow IPC files, which DuckDB cannot read without an
extension, so each output's committed shards become one lazy `pyarrow.dataset` registered with
DuckDB: DuckDB pushes column projections into the scan and nothing is materialised in Python.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from pipeline.ledger import committed_entries
from pipeline.storage import Output
from schemas.shards import REJECTS_SCHEMA, RUNS_DIR

SQL_FILE = Path(__file__).resolve().parent.parent / "schemas" / "analytics_v1.sql"
DEFAULT_ALPHA = 2.5
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
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views `documents`, `tokens`, `units`, `rejects`, `runs`,
    `merge_batches`, `unigram_counts`, `metrics` and `metrics_by_lang` over committed outputs."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise AnalyticsError("at least one output URL is required")
    con = duckdb.connect(database)
    outputs, ledger_rows, runs_rows = [], [], []
    shard_branches, reject_branches, merge_branches, unigram_branches = [], [], [], []
    pending: list[tuple[Output, list[dict[str, Any]]]] = []
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
        con.register(f"_shards_{index}", shards)
        shard_branches.append(_shard_branch(index, shards.schema))
        rejects = [(e["unit_id"], e["rejects"]) for e in group if e.get("rejects")]
        if rejects:
            con.register(f"_rejects_{index}", ledger_dataset(output, rejects, fs))
            reject_branches.append(
                f"SELECT {index} AS dataset_id, * FROM {quote_ident(f'_rejects_{index}')}"
            )
        if all(e.get("unigrams") for e in group):  # counted at tokenization time
            con.register(
                f"_unigrams_{index}",
                ledger_dataset(output, [(e["unit_id"], e["unigrams"]) for e in group], fs),
            )
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
    if len(unigram_branches) == len(pending):
        # every unit carries its token counts: the unigram views never unnest the token lists
        _union(con, "_unigrams", unigram_branches, "")
        con.execute(
            "CREATE OR REPLACE VIEW unigram_counts AS SELECT dataset_id, source, lang, token_id, "
            "sum(count)::BIGINT AS n FROM _unigrams GROUP BY ALL"
        )
    set_parameters(con, alpha=alpha, baseline=baseline)
    return con


def has_precounted_unigrams(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every unit of the connected outputs carries its token counts (unigrams/)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = '_unigrams'"
    ).fetchall()
    return found == [(1,)]


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
    if not alpha > 0 or alpha == 1:
        raise AnalyticsError(f"Renyi alpha must be > 0 and != 1, got {alpha}")
    if baseline is not None and baseline not in (names := tokenizers(con)):
        raise AnalyticsError(
            f"baseline tokenizer {baseline!r} is not in these outputs; "
            f"tokenizers: {', '.join(names)}"
        )
    con.execute("SET VARIABLE renyi_alpha = ?", [float(alpha)])
    con.execute("SET VARIABLE baseline = ?", [baseline])


def metrics_sql(
    by: Sequence[str] = GROUP_COLUMNS, unigram: str = "unigram_counts", documents: str = "documents"
) -> str:
    """The metrics query grouped by tokenizer and `by` (a subset of GROUP_COLUMNS), reading token
    counts from `unigram` and per-document counts from `documents` (views or cached tables)."""
    bad = [c for c in by if c not in GROUP_COLUMNS]
    if bad:
        raise AnalyticsError(f"cannot group metrics by {bad}; choose from {list(GROUP_COLUMNS)}")
    keys = "".join(f", {quote_ident(c)}" for c in by)
    replacements = {
        "{keys}": keys,
        "{d_keys}": "".join(f", d.{quote_ident(c)}" for c in by),
        "{join_u}": "".join(
            f" AND u.{quote_ident(c)} IS NOT DISTINCT FROM d.{quote_ident(c)}" for c in by
        ),
        "{join_n}": "".join(
            f" AND n.{quote_ident(c)} IS NOT DISTINCT FROM d.{quote_ident(c)}" for c in by
        ),
        "{unigram}": quote_ident(unigram),
        "{documents}": quote_ident(documents),
    }
    sql = sql_sections()["metrics"]
    for placeholder, value in replacements.items():
        sql = sql.replace(placeholder, value)
    return sql


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A query's result as an Arrow table (values reach SQL as DuckDB variables, not text)."""
    return con.sql(sql).to_arrow_table()


def report_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """Everything a report shows. The shards are scanned twice in all, inside DuckDB: once for the
    token counts per group and token id, once for the per-document counts (no token lists)."""
    sections = sql_sections()
    con.execute(sections["unigram_groups"])
    distinct = con.execute("SELECT count(*) = count(DISTINCT h) FROM _unigram_groups").fetchall()
    if has_precounted_unigrams(con):
        con.execute("CREATE OR REPLACE TEMP TABLE _unigram_cache AS SELECT * FROM unigram_counts")
    elif distinct == [(True,)]:
        con.execute(sections["unigram_cache"])
    else:  # two groups share a 32-bit hash: count by the group columns themselves
        con.execute("CREATE OR REPLACE TEMP TABLE _unigram_cache AS SELECT * FROM unigram_counts")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _documents_cache AS SELECT {', '.join(DOC_CACHE)} "
        "FROM documents"
    )
    tables = {
        "by_lang": query(con, metrics_sql(("lang",), "_unigram_cache", "_documents_cache")),
        "by_source": query(
            con, metrics_sql(("source", "lang"), "_unigram_cache", "_documents_cache")
        ),
        "merge": query(con, sections["merge_summary"]),
        "length_histogram": query(
            con, sections["length_histogram"].replace("{documents}", "_documents_cache")
        ),
    }
    for name in ("_unigram_cache", "_documents_cache", "_unigram_groups"):
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
