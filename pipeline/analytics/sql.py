"""The metric SQL: builders over the sections of schemas/analytics_v1.sql, the public views, and the
two DuckDB variables the metrics read (the Renyi alpha and the baseline tokenizer).

Everything here works on a plain DuckDB connection that has the raw relations (`_outputs`,
`_shards`, ...): one made by `connect`, or a database file written by `export_database`."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from pipeline.analytics.params import DEFAULT_ALPHA, MAX_ALPHA
from pipeline.errors import AnalyticsError
from schemas.sql import sql_sections

GROUP_COLUMNS = ("source", "lang")  # the only columns metrics may be grouped by (besides tokenizer)


def quote_ident(name: str) -> str:
    """A DuckDB identifier for any string: double quotes, embedded quotes doubled."""
    return '"' + str(name).replace('"', '""') + '"'


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A query's result as an Arrow table (values reach SQL as DuckDB variables, not text)."""
    return con.sql(sql).to_arrow_table()


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


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """The public views over the raw relations (see relations.RAW_RELATIONS) of the current
    database: documents, tokens, units, rejects, runs, merge_batches, unigram_counts, metrics and
    metrics_by_lang."""
    con.execute(sql_sections()["views"])
    con.execute(f"CREATE OR REPLACE VIEW metrics AS {metrics_sql(('source', 'lang'))}")
    con.execute(f"CREATE OR REPLACE VIEW metrics_by_lang AS {metrics_sql(('lang',))}")


def tokenizers(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tokenizer labels of the connected outputs, sorted."""
    return [
        row[0]
        for row in con.execute("SELECT DISTINCT tokenizer FROM _outputs ORDER BY 1").fetchall()
    ]


def set_parameters(
    con: duckdb.DuckDBPyConnection, *, alpha: float = DEFAULT_ALPHA, baseline: str | None = None
) -> None:
    """Set the Renyi alpha and the baseline tokenizer (by label) used by the metrics views."""
    if not 0 < alpha <= MAX_ALPHA or alpha == 1:
        raise AnalyticsError(f"Renyi alpha must be in (0, {MAX_ALPHA:g}] and != 1, got {alpha}")
    if baseline is not None and baseline not in (names := tokenizers(con)):
        raise AnalyticsError(
            f"baseline tokenizer {baseline!r} is not in these outputs; "
            f"tokenizers: {', '.join(names)}"
        )
    con.execute("SET VARIABLE renyi_alpha = ?", [float(alpha)])
    con.execute("SET VARIABLE baseline = ?", [baseline])
