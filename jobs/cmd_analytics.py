"""`tokenmill report`, `tokenmill compare` and `tokenmill sql`: tokenization-efficiency analytics
over committed outputs (pipeline/analytics/), and a batch job that tokenizes one corpus with
several tokenizers and compares them."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from jobs.common import (
    fail,
    parse_storage_options,
    reports_user_errors,
    stop_quietly_on_sigterm,
    storage_option_flag,
)
from pipeline.analytics import DEFAULT_ALPHA
from pipeline.errors import AnalyticsError, TokenmillError


def _alpha_flag(func):
    return click.option(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        show_default=True,
        help="Renyi efficiency order",
    )(func)


def _format_flag(func):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "markdown", "html", "json"]),
        default="table",
        show_default=True,
    )(func)


def emit_report(
    urls: list[str],
    storage: dict[str, Any],
    baseline: str | None,
    fmt: str,
    out: str | None,
    alpha: float,
) -> None:
    from pipeline.analytics import build_report, render, write_report

    report = build_report(urls, storage, baseline=baseline, alpha=alpha, charts=bool(out))
    click.echo(render(report, fmt))
    if out:
        for path in write_report(report, out, storage):
            click.echo(f"wrote {path}", err=True)


@click.command("report")
@click.argument("urls", nargs=-1, required=True)
@click.option("--baseline", metavar="NAME", help="tokenizer whose lengths normalize the others")
@_format_flag
@click.option(
    "--out", metavar="DIR", help="write report.html, report.md, report.json and PNG charts"
)
@_alpha_flag
@storage_option_flag
@reports_user_errors
def report_cmd(urls, baseline, fmt, out, alpha, storage_option) -> None:
    """Tokenization-efficiency metrics per tokenizer x source x language of committed outputs."""
    emit_report(list(urls), parse_storage_options(storage_option), baseline, fmt, out, alpha)


def sub_output_name(index: int, spec: str) -> str:
    """A stable folder name for the index-th tokenizer of a comparison, e.g. `0-bpe-bpe-8k`."""
    kind, _, path = spec.partition(":")
    stem = path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{index}-{kind}-{stem}")


@click.command("compare")
@click.option("--input", "input_", multiple=True, required=True, metavar="GLOB")
@click.option(
    "--tokenizer",
    "tokenizer_specs",
    multiple=True,
    required=True,
    metavar="KIND:PATH",
    help="repeat for each tokenizer to compare (the first is the default baseline)",
)
@click.option(
    "--output",
    required=True,
    metavar="URL",
    help="one sub-output per tokenizer under URL/<index-kind-name>/, report in URL/report/",
)
@click.option("--baseline", metavar="NAME", help="tokenizer name for normalized lengths")
@_format_flag
@click.option("--out", metavar="DIR", help="report folder (default: URL/report)")
@click.option("--actors", type=int, default=None)
@click.option("--overwrite", is_flag=True, default=False, help="redo every sub-output")
@click.option("--no-progress", is_flag=True, default=False)
@_alpha_flag
@storage_option_flag
@reports_user_errors
def compare_cmd(
    input_,
    tokenizer_specs,
    output,
    baseline,
    fmt,
    out,
    actors,
    overwrite,
    no_progress,
    alpha,
    storage_option,
) -> None:
    """Tokenize the same corpus with several tokenizers (resumable engine jobs) and compare them."""
    stop_quietly_on_sigterm()
    storage = parse_storage_options(storage_option)
    urls = run_comparison(
        list(input_),
        list(tokenizer_specs),
        output,
        storage,
        actors=actors,
        overwrite=overwrite,
        progress=not no_progress,
    )
    if baseline is None:  # the first tokenizer's label among all of them (two tokenizer.json
        # files are told apart as name#fingerprint only there: alone, the first is its name)
        from pipeline.analytics import connect

        with connect(urls, storage) as session:
            baseline = session.con.execute(
                "SELECT tokenizer FROM _outputs ORDER BY dataset_id LIMIT 1"
            ).fetchone()[0]
    emit_report(urls, storage, baseline, fmt, out or f"{output.rstrip('/')}/report", alpha)


def run_comparison(
    inputs: list[str],
    specs: list[str],
    output: str,
    storage: dict[str, Any],
    *,
    actors: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[str]:
    """Run (or resume) one engine job per tokenizer; returns the sub-output URLs in spec order."""
    from pipeline.tokenize.config import load_config
    from pipeline.tokenize.engine import run_job

    if len(specs) < 2:
        raise AnalyticsError("compare needs at least two --tokenizer KIND:PATH")
    urls = []
    for index, spec in enumerate(specs):
        url = f"{output.rstrip('/')}/{sub_output_name(index, spec)}"
        cfg = load_config(
            input=inputs,
            output=url,
            tokenizer=spec,
            storage_options=storage,
            actors=actors,
            overwrite=overwrite,
            progress=progress,
        )
        summary = run_job(cfg)
        click.echo(
            f"{spec}: {summary.documents} documents, {summary.tokens} tokens -> {url}",
            err=True,
        )
        urls.append(url)
    return urls


@click.command("sql")
@click.argument("args", nargs=-1, required=True, metavar="URL [URL ...] QUERY")
@click.option("--baseline", metavar="NAME", help="baseline tokenizer for the metrics views")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@_alpha_flag
@storage_option_flag
def sql_cmd(args, baseline, fmt, alpha, storage_option) -> None:
    """Run QUERY against the views (documents, tokens, units, rejects, runs, merge_batches,
    unigram_counts, metrics, metrics_by_lang) of the outputs; prints the result."""
    if len(args) < 2:
        fail("give at least one output URL and a query")
    if not args[-1].strip():
        fail("the query (the last argument) is empty")
    import duckdb

    from pipeline.analytics import connect

    try:
        session = connect(
            list(args[:-1]), parse_storage_options(storage_option), alpha=alpha, baseline=baseline
        )
        statements = duckdb.extract_statements(args[-1])
        relation = None
        for statement in statements:  # (one by one: the result shown is the last statement's)
            relation = session.con.sql(statement.query)
        if len(statements) > 1:
            click.echo(
                f"note: {len(statements)} statements ran; this is the last one's result", err=True
            )
        if relation is None:
            return
        table = relation.to_arrow_table()  # (files are scanned here: a damaged one fails here)
    except TokenmillError as exc:
        fail(str(exc))
    except duckdb.Error as exc:  # the user's SQL is wrong, or a file no longer reads
        fail(f"query failed: {exc}")
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
    elif fmt == "json":
        import json

        click.echo(json.dumps(table.to_pylist(), default=str, indent=1))
    else:
        from pipeline.analytics import format_table

        click.echo(format_table(table, table.column_names))
