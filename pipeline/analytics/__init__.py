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

from __future__ import annotations

import importlib
from typing import Any

from pipeline.errors import AnalyticsError

# Public name -> the module that defines it. Imported on first use, so that `import
# pipeline.analytics` (e.g. by the command line) does not load DuckDB, pandas or matplotlib.
_WHERE = {
    **dict.fromkeys(
        (
            "FORMATS",
            "Report",
            "build_report",
            "format_table",
            "render",
            "summary_table",
            "write_report",
        ),
        "report",
    ),
    **dict.fromkeys(("AnalyticsSession", "connect", "export_database"), "session"),
    **dict.fromkeys(
        (
            "GROUP_COLUMNS",
            "create_views",
            "metrics_sql",
            "query",
            "quote_ident",
            "set_parameters",
            "tokenizers",
            "unigram_stats_sql",
        ),
        "sql",
    ),
    **dict.fromkeys(("DEFAULT_ALPHA", "MAX_ALPHA"), "params"),
    "report_tables": "tables",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pipeline.analytics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.analytics.{_WHERE[name]}"), name)


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
