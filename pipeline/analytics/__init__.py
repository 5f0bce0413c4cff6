"""Tokenization-efficiency analytics over committed tokenmill outputs: DuckDB views (documents,
tokens, units, rejects, runs, dynamic-merge batches) and the efficiency metrics of
docs/algorithms.md (section 5, "Tokenization-efficiency metrics"), whose SQL lives in
schemas/analytics_v1.sql; reports as text, Markdown, HTML or JSON with PNG charts.

Only what the ledger lists is read (`pipeline.output.iter_committed`). Modules, each importing only
those above it:

- `sql`: metric SQL builders, the public views, the alpha/baseline variables (any connection).
- `relations`: the raw relations under the views, from committed ledger entries.
- `session`: `connect` -> `AnalyticsSession` (`.con`, the DuckDB connection, and the files it
  read); `export_database`.
- `counting`: token and document counts folded into integer-keyed DuckDB tables.
- `tables`: `report_tables`, every report table with each input read once.
- `charts`, `report`: PNG charts; `Report`, `build_report`, `render`, `write_report`,
  `summary_table`, `format_table`.
"""

from pipeline.analytics.report import (
    FORMATS,
    Report,
    build_report,
    format_table,
    render,
    summary_table,
    write_report,
)
from pipeline.analytics.session import AnalyticsSession, connect, export_database
from pipeline.analytics.sql import (
    DEFAULT_ALPHA,
    GROUP_COLUMNS,
    MAX_ALPHA,
    create_views,
    metrics_sql,
    query,
    quote_ident,
    set_parameters,
    tokenizers,
    unigram_stats_sql,
)
from pipeline.analytics.tables import report_tables
from pipeline.errors import AnalyticsError

__all__ = [
    "DEFAULT_ALPHA",
    "FORMATS",
    "GROUP_COLUMNS",
    "MAX_ALPHA",
    "AnalyticsError",
    "AnalyticsSession",
    "Report",
    "build_report",
    "connect",
    "create_views",
    "export_database",
    "format_table",
    "metrics_sql",
    "query",
    "quote_ident",
    "render",
    "report_tables",
    "set_parameters",
    "summary_table",
    "tokenizers",
    "unigram_stats_sql",
    "write_report",
]
