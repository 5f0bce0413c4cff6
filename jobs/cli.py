"""The `tokenmill` command line: one group and an explicit list of commands, each defined in its
own `jobs/cmd_*.py` module (which never imports this one). `python -m jobs.cli` works too."""

from __future__ import annotations

import logging

import click

from jobs.cmd_analytics import compare_cmd, report_cmd, sql_cmd
from jobs.cmd_byte_probs import byte_probs_cmd
from jobs.cmd_export import export_cmd
from jobs.cmd_loader import find_cmd, plan_cmd, which_cmd
from jobs.cmd_ngram import train_ngram_cmd
from jobs.cmd_retokenize import retokenize_cmd
from jobs.cmd_run import run_cmd, verify_cmd
from jobs.cmd_train import train_tokenizer_cmd
from jobs.common import use_plugins
from jobs.demo import demo_cmd

COMMANDS = [
    demo_cmd,
    run_cmd,
    verify_cmd,
    train_tokenizer_cmd,
    retokenize_cmd,
    report_cmd,
    compare_cmd,
    sql_cmd,
    train_ngram_cmd,
    byte_probs_cmd,
    plan_cmd,
    which_cmd,
    find_cmd,
    export_cmd,
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log progress details")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="import MODULE first: a tokenizer plugin that registers its kind (repeatable; also "
    "TOKENMILL_PLUGINS=MOD1,MOD2, which this sets for the run's helper processes and local "
    "Ray workers; on a cluster, install the plugin on every node)",
)
def main(verbose: bool, plugins: tuple[str, ...]) -> None:
    """tokenmill: corpora in, exactly-once Arrow token shards out."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if plugins:
        use_plugins(plugins)


for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
