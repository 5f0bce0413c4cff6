"""`report_tables`: every table a report shows, with each input read once."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipeline.analytics.counting import (
    DOC_CACHE,
    documents_from_files,
    keyed_from_files,
    keyed_from_relation,
    unigram_stats_tables,
)
from pipeline.analytics.session import AnalyticsSession
from pipeline.analytics.sql import metrics_sql, query
from schemas.sql import sql_sections

TEMP_TABLES = (
    "_unigram_keyed",
    "_unigram_keyed_lang",
    "_unigram_group_names",
    "_unigram_stats_source",
    "_unigram_stats_lang",
    "_documents_cache",
    "_documents_based",
)


def _count_inputs(session: AnalyticsSession) -> None:
    """The keyed token counts, unigram statistics and per-document table of the session: from the
    files it read when it has them, else (a database file) from its own views."""
    con = session.con
    if session.shards is None:
        keyed_from_relation(con, "unigram_counts")
    elif session.unit_counts is not None:
        keyed_from_files(con, session.unit_counts)
    else:
        keyed_from_files(con, session.shards, from_shards=True)
    unigram_stats_tables(con)
    if session.shards is not None:
        documents_from_files(con, session.shards, session.wordless)
    else:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _documents_cache AS SELECT {', '.join(DOC_CACHE)} "
            "FROM documents"
        )


def report_tables(session: AnalyticsSession | duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """Everything a report shows (`by_lang`, `by_source`, `merge`, `length_histogram`), with each
    input read once: the token counts per (tokenizer, source, language, token id) are folded into
    one temporary table keyed by integers (from the per-unit counts the engine wrote at
    tokenization time when every unit has them, else counted from the shards' token lists batch
    by batch), the per-document counts go into another (no token lists), and every metric is
    grouped from those two in DuckDB. A plain connection (a database file written by
    export_database) is read through its own views."""
    if isinstance(session, duckdb.DuckDBPyConnection):
        session = AnalyticsSession(session)
    con, sections = session.con, sql_sections()
    _count_inputs(session)
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
    for name in TEMP_TABLES:
        con.execute(f"DROP TABLE {name}")
    return tables
