"""`tokenmill train-ngram`: count an n-gram token model from committed Arrow token shards."""

from __future__ import annotations

import logging
import posixpath
from typing import Any

import click

from jobs.common import parse_storage_options, reports_user_errors, storage_option_flag
from pipeline.errors import InputError
from pipeline.output import Output, iter_committed, url_to_fs
from schemas.layout import LEDGER_DIR, SHARDS_DIR

log = logging.getLogger("tokenmill")


def _committed_shards(output: Output) -> list[str]:
    return [f"{output.url}/{entry.shard}" for entry in iter_committed(output)]


def expand_shards(patterns: tuple[str, ...], storage_options: dict) -> list[str]:
    """Shard URLs for the patterns: a committed output gives the shards its ledger lists; a path
    or glob of shard files keeps, inside an output, only the shards its ledger lists (orphans of
    crashed attempts are skipped), and loose shard files as they are."""
    urls: list[str] = []
    for pattern in patterns:
        fs, path = url_to_fs(pattern, storage_options)
        if fs.isdir(posixpath.join(path, LEDGER_DIR)):
            urls += _committed_shards(Output(pattern, storage_options))
            continue
        matches = sorted(fs.glob(path)) if any(ch in path for ch in "*?[") else [path]
        if not matches or not all(fs.isfile(m) for m in matches):
            raise InputError(f"--shards {pattern!r} matches no shard file")
        for match in matches:
            url = fs.unstrip_protocol(match) if "://" in pattern else match
            folder, _ = posixpath.split(match)
            root = posixpath.dirname(folder)
            if posixpath.basename(folder) != SHARDS_DIR or not fs.isdir(f"{root}/{LEDGER_DIR}"):
                urls.append(url)
                continue
            base = fs.unstrip_protocol(root) if "://" in pattern else root
            if url in set(_committed_shards(Output(base, storage_options))):
                urls.append(url)
            else:
                log.warning("train-ngram: skipping %s: not in its output's ledger", url)
    if not urls:
        raise InputError(f"--shards {', '.join(patterns)}: no committed shard")
    return urls


def check_written_by(urls: list[str], tok: Any, spec: str, storage_options: dict) -> None:
    """Refuse shards another tokenizer wrote (their footer's fingerprint; a model counted from
    them with this tokenizer's vocabulary size was meaningless, and `byte-probs` used it)."""
    import pyarrow as pa

    for url in urls:
        fs, path = url_to_fs(url, storage_options)
        try:
            with fs.open(path, "rb") as handle:
                meta = pa.ipc.open_file(handle).schema.metadata or {}
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"shard {url} is not a readable Arrow file: {exc}") from None
        wrote = meta.get(b"tokenmill.tokenizer.fingerprint", b"").decode()
        if wrote and wrote != tok.fingerprint:
            raise InputError(
                f"shard {url} was written by tokenizer fingerprint {wrote}, not by {spec} "
                f"(fingerprint {tok.fingerprint}): give the tokenizer that wrote the shards"
            )


@click.command("train-ngram")
@click.option(
    "--shards",
    multiple=True,
    required=True,
    metavar="URL_OR_GLOB",
    help="a committed output, or Arrow IPC token shards (repeatable), e.g. out/shards/*.arrow",
)
@click.option(
    "--tokenizer",
    required=True,
    metavar="KIND:PATH",
    help="the tokenizer the shards were written with (gives the vocabulary size)",
)
@click.option("--order", type=click.IntRange(1, 6), default=2, show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="model file (.npz)")
@storage_option_flag
@reports_user_errors
def train_ngram_cmd(
    shards: tuple[str, ...],
    tokenizer: str,
    order: int,
    output: str,
    storage_option: tuple[str, ...],
) -> None:
    """Estimate an interpolated Kneser-Ney n-gram token model (end-of-text counted per document)."""
    from tokenizers_impl import load_tokenizer
    from tokenizers_impl.ngram_model import NgramModel

    options = parse_storage_options(storage_option)
    tok = load_tokenizer(tokenizer, storage_options=options)
    urls = expand_shards(shards, options)
    check_written_by(urls, tok, tokenizer, options)
    model = NgramModel.train_from_shards(
        urls, tok.vocab_size, order, tokenizer=tokenizer, storage_options=options
    )
    model.save(output)
    n_grams = len(model.orders[-1].words)
    click.echo(
        f"wrote {output}: order {order}, vocab {tok.vocab_size}, {len(urls)} shards, "
        f"{n_grams} distinct {order}-grams"
    )
