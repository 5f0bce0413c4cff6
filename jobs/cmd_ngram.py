"""`tokenmill train-ngram`: count an n-gram token model from committed Arrow token shards."""

from __future__ import annotations

import click

from pipeline.storage import parse_storage_options, url_to_fs
from tokenizers_impl.base import load_tokenizer
from tokenizers_impl.ngram_model import NgramModel


def expand_shards(patterns: tuple[str, ...], storage_options: dict) -> list[str]:
    """Sorted shard URLs matching the patterns (plain paths, globs or fsspec URLs)."""
    urls: list[str] = []
    for pattern in patterns:
        fs, path = url_to_fs(pattern, storage_options)
        matches = sorted(fs.glob(path)) if any(ch in path for ch in "*?[") else [path]
        if not matches or not all(fs.isfile(m) for m in matches):
            raise click.ClickException(f"--shards {pattern!r} matches no shard file")
        urls += [fs.unstrip_protocol(m) if "://" in pattern else m for m in matches]
    return urls


@click.command("train-ngram")
@click.option(
    "--shards",
    multiple=True,
    required=True,
    metavar="URL_OR_GLOB",
    help="Arrow IPC token shards (repeatable), e.g. out/shards/*.arrow",
)
@click.option(
    "--tokenizer",
    required=True,
    metavar="KIND:PATH",
    help="the tokenizer the shards were written with (gives the vocabulary size)",
)
@click.option("--order", type=click.IntRange(1, 6), default=2, show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="model file (.npz)")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def command(
    shards: tuple[str, ...],
    tokenizer: str,
    order: int,
    output: str,
    storage_option: tuple[str, ...],
) -> None:
    """Estimate an interpolated Kneser-Ney n-gram token model (end-of-text counted per document)."""
    options = parse_storage_options(storage_option)
    tok = load_tokenizer(tokenizer, storage_options=options)
    urls = expand_shards(shards, options)
    model = NgramModel.train_from_shards(
        urls, tok.vocab_size, order, tokenizer=tokenizer, storage_options=options
    )
    model.save(output)
    n_grams = len(model.orders[-1].words)
    click.echo(
        f"wrote {output}: order {order}, vocab {tok.vocab_size}, {len(urls)} shards, "
        f"{n_grams} distinct {order}-grams"
    )
