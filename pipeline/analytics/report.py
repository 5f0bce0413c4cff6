"""Tokenization-efficiency reports: metrics tables as text, Markdown, HTML or JSON, and PNG charts
(matplotlib, Agg) written beside report.md and embedded in report.html."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.analytics.charts import CHART_TITLES, render_charts
from pipeline.analytics.session import connect
from pipeline.analytics.sql import DEFAULT_ALPHA, metrics_sql
from pipeline.analytics.tables import report_tables
from pipeline.errors import AnalyticsError
from pipeline.output import Output

SUMMARY_COLUMNS = (
    "tokenizer",
    "lang",
    "documents",
    "tokens",
    "bytes_per_token",
    "chars_per_token",
    "fertility",
    "continued_word_share",
    "normalized_length",
    "shannon_efficiency",
    "renyi_efficiency",
    "bits_per_byte",
    "vocab_share",
    "p50_tokens",
    "p99_tokens",
)
SOURCE_COLUMNS = (
    "tokenizer",
    "source",
    "lang",
    "documents",
    "bytes",
    "chars",
    "words",
    "tokens",
    "fertility",
    "continued_word_share",
    "bytes_per_token",
    "chars_per_token",
    "normalized_length",
    "baseline_documents",
    "vocab_size",
    "types",
    "shannon_efficiency",
    "shannon_efficiency_observed",
    "renyi_efficiency",
    "renyi_efficiency_observed",
    "bits_per_byte",
    "vocab_share",
    "types_per_million",
    "p50_tokens",
    "p90_tokens",
    "p99_tokens",
    "max_tokens",
)
FORMATS = ("table", "markdown", "html", "json")
WORD_RULE = (
    "Words are counted at tokenization time (pipeline/tokenize/textstats.py): maximal runs of letters, "
    'digits and \'_\' (non-ASCII letters included), keeping "it\'s", "it’s" and "3.14" whole; each CJK '
    "ideograph and kana is one word (as UAX #29 segments ideographs without a dictionary); Thai, "
    "Lao, Khmer and Myanmar runs count as one word each. A word is continued when its bytes span "
    "2+ tokens."
)


@dataclass
class Report:
    urls: list[str]
    baseline: str | None
    alpha: float
    tables: dict[str, pa.Table]
    charts: dict[str, bytes] = field(default_factory=dict)
    shared: dict[str, list[str]] = field(default_factory=dict)  # label -> outputs sharing it

    def notes(self) -> list[str]:
        base = (
            f"normalized_length = tokens / tokens of baseline {self.baseline!r} on the same "
            "documents (joined on doc_id, source and text bytes)"
            if self.baseline
            else "normalized_length: no baseline chosen (--baseline NAME)"
        )
        return [
            WORD_RULE,
            f"Shannon and Renyi (alpha = {self.alpha:g}) efficiency: entropy of the unigram token "
            "distribution / log|V|; *_efficiency uses |V| = the tokenizer's vocabulary size, "
            "*_observed uses |V| = the token types observed in the group.",
            "bits_per_byte: unigram model bits (-sum log2 p) / UTF-8 bytes; vocab_share: observed "
            "types / vocabulary size; types_per_million: observed types per 1M tokens.",
            "Length percentiles are document lengths in tokens, linear interpolation.",
            base,
            *(
                f"outputs {', '.join(urls)} share tokenizer {label!r}: their documents are "
                "counted together under it"
                for label, urls in self.shared.items()
            ),
        ]


def build_report(
    urls: str | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    *,
    baseline: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    charts: bool = True,
) -> Report:
    """The report tables of committed outputs (and its charts, unless `charts` is false)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    with connect(urls, storage_options, alpha=alpha, baseline=baseline) as session:
        tables = report_tables(session)
        shared = session.shared_labels()
    report = Report(urls, baseline, alpha, tables, shared=shared)
    if charts:
        report.charts = render_charts(tables)
    return report


# what would break a table's row: line breaks of every kind (str.splitlines' set) and tabs
_CONTROLS = str.maketrans(
    {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    | {c: repr(c)[1:-1] for c in "\v\f\x1c\x1d\x1e\x85\u2028\u2029"}
)


def _cell(value: Any) -> str:
    """A value as a table shows it: 4 significant digits under 1000, one decimal from there
    (whole numbers in full), no negative zero, line breaks and tabs in text escaped (a source
    name holding one would break the row)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        value += 0.0  # (-0.0 -> 0.0)
        if math.isinf(value):
            return str(value)
        if value == int(value) and abs(value) >= 100:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value).translate(_CONTROLS)


def _rows(table: pa.Table, columns: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in columns if c in table.column_names]
    data = table.select(cols).to_pylist()
    return cols, [[_cell(row[c]) for c in cols] for row in data]


def format_table(table: pa.Table, columns: Sequence[str] = SUMMARY_COLUMNS) -> str:
    """An aligned plain-text table."""
    cols, rows = _rows(table, columns)
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    numeric = [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in (table.schema.field(c).type for c in cols)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(table: pa.Table, columns: Sequence[str]) -> str:
    cols, rows = _rows(table, columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(out)


def html_table(table: pa.Table, columns: Sequence[str]) -> str:
    cols, rows = _rows(table, columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


MERGE_COLUMNS = (
    "tokenizer",
    "output",
    "batches",
    "l0",
    "lm",
    "lword",
    "reduction_pct",
    "absolute_reduction_pct",
)
SECTIONS = (
    ("by_lang", "Per tokenizer x language", SUMMARY_COLUMNS),
    ("by_source", "Per tokenizer x source x language", SOURCE_COLUMNS),
    ("merge", "Dynamic merging (L0 base, Lm merged, Lword word-level lengths)", MERGE_COLUMNS),
)


def render(report: Report, fmt: str) -> str:
    """The report as text in one of FORMATS (charts only in files written by write_report)."""
    sections = [(t, c, report.tables[k]) for k, t, c in SECTIONS if report.tables[k].num_rows]
    if fmt == "json":
        payload = {
            "outputs": report.urls,
            "baseline": report.baseline,
            "alpha": report.alpha,
            "notes": report.notes(),
            **{k: report.tables[k].to_pylist() for k, _, _ in SECTIONS},
        }
        return json.dumps(payload, indent=1, default=str)
    if fmt == "table":
        parts = [f"== {title} ==\n{format_table(t, cols)}" for title, cols, t in sections]
        return "\n\n".join(parts + ["Notes:\n" + "\n".join(f"- {n}" for n in report.notes())])
    if fmt == "markdown":
        return markdown_document(report, sections, chart_links=False)
    if fmt == "html":
        return html_document(report, sections)
    raise AnalyticsError(f"unknown report format {fmt!r}; choose from {FORMATS}")


def markdown_document(report: Report, sections, chart_links: bool = True) -> str:
    parts = ["# Tokenization-efficiency report", "Outputs: " + ", ".join(report.urls)]
    parts += [f"## {title}\n\n{markdown_table(t, cols)}" for title, cols, t in sections]
    if chart_links:
        parts += [
            f"## {CHART_TITLES[name]}\n\n![{CHART_TITLES[name]}]({name})" for name in report.charts
        ]
    parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in report.notes()))
    return "\n\n".join(parts) + "\n"


def html_document(report: Report, sections) -> str:
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tokenmill report</title>"
        f"<style>{style}</style></head><body><h1>Tokenization-efficiency report</h1>",
        "<p>Outputs: " + html.escape(", ".join(report.urls)) + "</p>",
    ]
    parts += [f"<h2>{html.escape(title)}</h2>{html_table(t, cols)}" for title, cols, t in sections]
    for name, png in report.charts.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<h2>{html.escape(CHART_TITLES[name])}</h2>"
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
        )
    parts.append(
        "<h2>Notes</h2><ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes())
        + "</ul></body></html>"
    )
    return "\n".join(parts)


def write_report(
    report: Report, out: str, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Write report.html (charts embedded), report.md + PNG charts beside it, report.json."""
    target = Output(out, storage_options)
    sections = [(t, c, report.tables[k]) for k, t, c in SECTIONS if report.tables[k].num_rows]
    files = {
        "report.html": html_document(report, sections).encode(),
        "report.md": markdown_document(report, sections).encode(),
        "report.json": render(report, "json").encode(),
        **report.charts,
    }
    for name, data in files.items():
        target.write_bytes(name, data)
    return [f"{target.url}/{name}" for name in files]


def summary_table(
    urls: str | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    baseline: str | None = None,
) -> str:
    """The tokenizer x language metrics table as text (the first table of `tokenmill report`)."""
    with connect(urls, storage_options, baseline=baseline) as session:
        table = session.query(metrics_sql(("lang",)))
    return format_table(table, SUMMARY_COLUMNS)
