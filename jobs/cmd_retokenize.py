"""`tokenmill retokenize`: committed shards of one tokenizer -> shards of another, through exact bytes,
with the same ledger, exactly-once and resume guarantees as `tokenmill run`."""

from __future__ import annotations

import click

from jobs.common import (
    parse_storage_options,
    print_run_summary,
    reports_user_errors,
    stop_quietly_on_sigterm,
    storage_option_flag,
)


@click.command("retokenize")
@click.option(
    "--input", "input_", required=True, metavar="URL", help="a committed tokenmill output"
)
@click.option("--output", required=True, metavar="URL")
@click.option("--tokenizer", required=True, metavar="KIND:PATH", help="the new tokenizer")
@click.option(
    "--source-tokenizer",
    default=None,
    metavar="KIND:PATH",
    help="the tokenizer that wrote the input (default: from the input's job.json)",
)
@click.option("--actors", type=int, default=None)
@click.option("--token-offsets", is_flag=True, default=None)
@click.option("--overwrite", is_flag=True, default=None)
@click.option("--no-progress", is_flag=True, default=False)
@storage_option_flag
@reports_user_errors
def retokenize_cmd(
    input_,
    output,
    tokenizer,
    source_tokenizer,
    actors,
    token_offsets,
    overwrite,
    no_progress,
    storage_option,
) -> None:
    """Re-tokenize committed shards with another tokenizer (nothing lost: bytes are identical)."""
    from pipeline.tokenize.config import load_config
    from pipeline.tokenize.engine import run_job
    from pipeline.tokenize.inputs.shards import source_tokenizer_spec

    stop_quietly_on_sigterm()
    storage = parse_storage_options(storage_option)
    cfg = load_config(
        input=[input_],
        output=output,
        tokenizer=tokenizer,
        format="shards",
        source_tokenizer=source_tokenizer or source_tokenizer_spec(input_, storage),
        actors=actors,
        token_offsets=token_offsets,
        overwrite=overwrite,
        storage_options=storage,
        progress=not no_progress,
    )
    summary = run_job(cfg)
    print_run_summary(summary)
