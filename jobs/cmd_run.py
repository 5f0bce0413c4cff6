"""`tokenmill run` (tokenize a corpus into shards, resumable) and `tokenmill verify`."""

from __future__ import annotations

import json
import os
import sys

import click

from jobs.common import (
    EXIT_FAILURE,
    parse_storage_options,
    print_run_summary,
    reports_user_errors,
    stop_quietly_on_sigterm,
    storage_option_flag,
)
from jobs.config_flags import build_config, job_options
from pipeline.errors import RunIncomplete


@click.command("run")
@job_options
@reports_user_errors
def run_cmd(config_file, storage_option, tokenizer_option, **flags) -> None:
    """Tokenize a corpus into Arrow token shards (resumes a stopped run; --overwrite redoes it)."""
    from pipeline.tokenize.engine import run_job
    from pipeline.tokenize.unit import WORKER_ENV

    for name, value in WORKER_ENV.items():  # the driver's threads, one core each, like actors
        os.environ.setdefault(name, value)
    stop_quietly_on_sigterm()
    cfg = build_config(config_file, storage_option, tokenizer_option, **flags)
    summary = run_job(cfg)
    print_run_summary(summary)
    if not summary.complete:
        raise RunIncomplete(
            f"{summary.units_committed} of {summary.units_planned} units committed; "
            "rerun the same command to resume"
        )


@click.command("verify")
@click.argument("url")
@storage_option_flag
@reports_user_errors
def verify_cmd(url: str, storage_option: tuple[str, ...]) -> None:
    """Re-read every committed shard and check it against the ledger; exit 1 on any mismatch."""
    from pipeline.output.verify import verify_output

    report = verify_output(url, parse_storage_options(storage_option))
    for problem in report.problems:
        click.echo(f"PROBLEM: {problem}", err=True)
    if report.run_running:
        click.echo(
            f"note: a run of this output is running now ({report.units} units committed so far)",
            err=True,
        )
    elif report.run_complete is False:  # (sound, but not all there: `ok` is about what is)
        planned = "" if report.units_planned is None else f" of {report.units_planned} planned"
        how = " (killed: it left its lease)" if report.run_running is False else ""
        click.echo(
            f"note: the latest run did not finish{how} ({report.units}{planned} units "
            "committed); rerun it to complete the output",
            err=True,
        )
    click.echo(json.dumps(report.to_json(), sort_keys=True))
    sys.exit(0 if report.ok else EXIT_FAILURE)
