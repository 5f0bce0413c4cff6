"""`tokenmill export`: committed shards -> Megatron-LM, Hugging Face or LitData files, verified."""

from __future__ import annotations

import json
import sys

import click

from jobs.common import (
    EXIT_FAILURE,
    parse_pairs,
    parse_storage_options,
    reports_user_errors,
    stop_quietly_on_sigterm,
    storage_option_flag,
)

FORMATS = ("megatron", "hf", "litdata")  # pipeline.export.FORMAT_NAMES (not imported: CLI start)


@click.command("export")
@click.argument("output")
@click.argument("dest")
@click.option("--format", "format_", type=click.Choice(FORMATS), required=True)
@click.option("--append-eod", is_flag=True, help="append the tokenizer's EOS id to each document")
@click.option(
    "--max-tokens-per-file",
    type=click.IntRange(min=0),
    default=None,
    help="group shards into files of at most this many ids (0: one file; "
    "default: megatron 0, hf 2**26, litdata 2**24)",
)
@click.option(
    "--dtype",
    type=click.Choice(("auto", "uint16", "int32")),
    default="auto",
    help="id type (auto: megatron uint16 below 65500 ids else int32, as Megatron does; "
    "hf and litdata int32)",
)
@click.option(
    "--verify",
    type=click.Choice(("all", "tokenmill")),
    default="all",
    help="all: tokenmill's reader and the format's own (when installed); tokenmill: ours only",
)
@click.option("--overwrite", is_flag=True, help="discard an earlier, different export at DEST")
@storage_option_flag
@click.option(
    "--dest-storage-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for DEST (repeatable; default: those of --storage-option when"
    " DEST is on the same kind of store as OUTPUT)",
)
@reports_user_errors
def export_cmd(
    output,
    dest,
    format_,
    append_eod,
    max_tokens_per_file,
    dtype,
    verify,
    overwrite,
    storage_option,
    dest_storage_option,
) -> None:
    """Export the committed shards of OUTPUT (only what its ledger lists) to DEST, resumably (a
    rerun after a kill finishes with the same bytes), then verify and write DEST/export.json.
    Exit 1 when verification finds a problem (export.json is then not written)."""
    from pipeline.export import ExportOptions, export_output

    stop_quietly_on_sigterm()
    storage = parse_storage_options(storage_option)
    dest_storage = (
        parse_pairs(dest_storage_option, "--dest-storage-option") if dest_storage_option else None
    )
    options = ExportOptions(
        format=format_,
        append_eod=append_eod,
        max_tokens_per_file=max_tokens_per_file,
        dtype=dtype,
        verify=verify,
        overwrite=overwrite,
    )
    report = export_output(output, dest, options, storage, dest_storage)
    summary = report.to_json()
    for problem in report.problems:
        click.echo(f"PROBLEM: {problem}", err=True)
    click.echo(
        f"exported {summary['documents']} documents, {summary['tokens_written']} ids in "
        f"{summary['files']} {format_} file(s) ({summary['files_resumed']} resumed) to {dest} in "
        f"{summary['seconds']} s ({summary['tokens_per_s']} ids/s); "
        + (
            f"verified by tokenmill's reader and {summary['verified']['format_reader']}"
            if report.ok
            else f"verification FAILED ({len(report.problems)} problem(s) above) with tokenmill's "
            f"reader and {summary['verified']['format_reader']}"
        ),
        err=True,
    )
    if report.source_complete is False:
        click.echo(
            f"note: the latest run of {output} has not finished (it runs now, or stopped short): "
            f"this export holds the {summary['documents']} documents committed so far; export "
            "again with --overwrite once the run is complete",
            err=True,
        )
    click.echo(json.dumps(summary, sort_keys=True))
    sys.exit(0 if report.ok else EXIT_FAILURE)
