"""The `tokenmill` command line: demo, train-tokenizer, run, verify, plus every `jobs/cmd_*.py` module."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.config import ConfigError, load_config
from pipeline.lease import LeaseError
from pipeline.ledger import LedgerError
from pipeline.sources import InputError
from pipeline.storage import StorageError, parse_storage_options
from tokenizers_impl.base import TokenizerError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GLOB = str(REPO_ROOT / "data" / "sample" / "*.jsonl")
USER_ERRORS = (
    ConfigError,
    InputError,
    LedgerError,
    LeaseError,
    TokenizerError,
    StorageError,
    ValueError,
)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"tokenmill: error: {message}", err=True)
    sys.exit(code)


def storage_option_flag(func):
    return click.option(
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="fsspec storage option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log progress details")
def main(verbose: bool) -> None:
    """tokenmill: corpora in, exactly-once Arrow token shards out."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def run_options(func):
    options = [
        click.option(
            "--input",
            "input_",
            multiple=True,
            metavar="GLOB",
            help="input path/URL/glob (repeatable)",
        ),
        click.option("--output", metavar="URL", help="output prefix (local folder or s3://...)"),
        click.option(
            "--tokenizer",
            metavar="KIND:PATH",
            help="e.g. bpe:tokenizer.json, sentencepiece:m.model, lib:lex.json",
        ),
        click.option("--actors", type=int, help="tokenizer actors (default: the cluster's CPUs)"),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="YAML job config (flags win)",
        ),
        storage_option_flag,
        click.option(
            "--overwrite",
            is_flag=True,
            default=None,
            help="discard committed output and redo everything",
        ),
        click.option(
            "--repair",
            is_flag=True,
            default=None,
            help="verify committed units first and re-run the ones whose files are bad",
        ),
        click.option(
            "--format",
            "format_",
            type=click.Choice(["auto", "jsonl", "text", "parquet"]),
            default=None,
        ),
        click.option(
            "--text-mode",
            type=click.Choice(["line", "file"]),
            default=None,
            help="text inputs: one document per line or per file",
        ),
        click.option("--text-field", default=None),
        click.option("--id-field", default=None),
        click.option(
            "--unit-bytes", type=int, default=None, help="work unit size for uncompressed files"
        ),
        click.option(
            "--max-doc-bytes", type=int, default=None, help="larger documents are rejected"
        ),
        click.option(
            "--token-offsets", is_flag=True, default=None, help="store each token's byte end offset"
        ),
        click.option(
            "--ray-address",
            default=None,
            help="existing Ray cluster (default: RAY_ADDRESS or local)",
        ),
        click.option("--no-progress", is_flag=True, default=False),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(config_file: str | None, storage_option: tuple[str, ...], **flags: Any):
    overrides = {k.rstrip("_"): v for k, v in flags.items()}
    if overrides.get("input") == ():
        overrides["input"] = None
    if storage_option:
        overrides["storage_options"] = parse_storage_options(storage_option)
    if overrides.pop("no_progress", False):
        overrides["progress"] = False
    return load_config(config_file, **overrides)


@main.command("run")
@run_options
def run_cmd(config_file, storage_option, **flags) -> None:
    """Tokenize a corpus into Arrow token shards (resumes a stopped run; --overwrite redoes it)."""
    from pipeline.engine import UnitFailed, run_job

    try:
        cfg = build_config(config_file, storage_option, **flags)
        summary = run_job(cfg)
    except (*USER_ERRORS, UnitFailed) as exc:
        fail(str(exc))
    print_run_summary(summary)


def print_run_summary(summary: dict[str, Any]) -> None:
    click.echo(
        f"committed {summary['units_committed']}/{summary['units_planned']} units "
        f"({summary['units_skipped']} resumed): {summary['documents']} documents, "
        f"{summary['tokens']} tokens, {summary['rejected']} rejected; this run "
        f"{summary['mb_per_s']} MB/s, {summary['tokens_per_s']:.0f} tokens/s with "
        f"{summary['actors']} actors, encoder {summary['encoder']}",
        err=True,
    )
    click.echo(
        f"shards: {summary['output']}/shards  ledger: {summary['output']}/ledger  "
        f"summary: {summary['output']}/{summary['summary_path']}",
        err=True,
    )
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "run_nonce"}, sort_keys=True))


@main.command("verify")
@click.argument("url")
@storage_option_flag
def verify_cmd(url: str, storage_option: tuple[str, ...]) -> None:
    """Re-read every committed shard and check it against the ledger; exit 1 on any mismatch."""
    from pipeline.verify import verify_output

    try:
        report = verify_output(url, parse_storage_options(storage_option))
    except USER_ERRORS as exc:
        fail(str(exc))
    for problem in report["problems"]:
        click.echo(f"PROBLEM: {problem}", err=True)
    click.echo(json.dumps(report, sort_keys=True))
    sys.exit(0 if report["ok"] else 1)


@main.command("train-tokenizer")
@click.option("--kind", required=True, type=click.Choice(["bpe", "sentencepiece", "lib"]))
@click.option("--input", "input_", multiple=True, required=True, metavar="GLOB")
@click.option("--vocab-size", type=int, required=True)
@click.option("--output", required=True, metavar="PATH")
@click.option(
    "--model-type",
    type=click.Choice(["bpe", "unigram"]),
    default="bpe",
    help="sentencepiece model type",
)
@click.option(
    "--lib-admit-after",
    type=click.IntRange(min=1),
    default=None,
    help="lib: a proposal becomes a unit the Nth time it is proposed within one document "
    "(default 1; 2 = the authors' 2023 code)",
)
@click.option(
    "--lib-new-on-probation",
    type=bool,
    default=None,
    help="lib: a new unit starts on probation (default true; false = the authors' 2023 code)",
)
@click.option(
    "--lib-doc-sentences",
    type=click.IntRange(min=1),
    default=None,
    help="lib: a training document is every N lines (default: one input text)",
)
@click.option("--max-docs", type=int, default=None, help="train on at most this many documents")
@click.option("--text-field", default="text")
@storage_option_flag
def train_tokenizer_cmd(
    kind,
    input_,
    vocab_size,
    output,
    model_type,
    lib_admit_after,
    lib_new_on_probation,
    lib_doc_sentences,
    max_docs,
    text_field,
    storage_option,
):
    """Train a tokenizer on a corpus (same input formats as `run`) and save it to PATH."""
    from jobs.corpus_text import iter_texts
    from tokenizers_impl.base import tokenizer_class

    try:
        storage = parse_storage_options(storage_option)
        cfg = load_config(
            input=list(input_),
            output=output,
            tokenizer=f"{kind}:{output}",
            text_field=text_field,
            storage_options=storage,
        )
        texts = iter_texts(cfg, max_docs=max_docs)
        cls = tokenizer_class(kind)
        extra = {"model_type": model_type} if kind == "sentencepiece" else {}
        if kind == "lib":
            extra = {"doc_sentences": lib_doc_sentences}
            if lib_admit_after is not None:
                extra["admit_after"] = lib_admit_after
            if lib_new_on_probation is not None:
                extra["new_on_probation"] = lib_new_on_probation
        tokenizer = cls.train(texts, vocab_size=vocab_size, **extra)
        tokenizer.save(output, storage_options=storage)
    except USER_ERRORS as exc:
        fail(str(exc))
    click.echo(json.dumps({"output": output, **tokenizer.describe()}, sort_keys=True))


@main.command("demo")
@click.option("--output", default="out/demo", show_default=True, metavar="DIR")
@click.option("--actors", type=int, default=None)
def demo_cmd(output: str, actors: int | None) -> None:
    """Train a byte-level BPE on the bundled sample corpus, tokenize it, verify, and summarise."""
    from jobs.demo import run_demo

    try:
        run_demo(output, actors=actors, sample_glob=SAMPLE_GLOB)
    except USER_ERRORS as exc:
        fail(str(exc))


def _load_command_modules() -> None:
    """Add every click command exposed by a `jobs/cmd_*.py` module (`command` or `commands`)."""
    package = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda m: m.name):
        if not info.name.startswith("cmd_"):
            continue
        module = importlib.import_module(f"jobs.{info.name}")
        commands = getattr(module, "commands", None) or [module.command]
        for command in commands:
            main.add_command(command)


_load_command_modules()

if __name__ == "__main__":
    main()
