"""`tokenmill byte-probs`: exact next-byte probabilities after a prompt, beside naive prompting
and token healing."""

from __future__ import annotations

import os

import click

from jobs.common import reports_user_errors
from pipeline.errors import TokenizerError
from tokenizers_impl import load_tokenizer
from tokenizers_impl.byte_token import (
    EOT,
    CanonicalModel,
    naive_next_byte_distribution,
    next_byte_distribution,
    token_healing_distribution,
)
from tokenizers_impl.ngram_model import NgramModel


def byte_label(key: int | str) -> str:
    if key == EOT:
        return EOT
    char = bytes([key]).decode("latin-1")
    return repr(char) if 0x20 <= key < 0x7F else f"0x{key:02x}"


@click.command("byte-probs")
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="n-gram token model (.npz from train-ngram)",
)
@click.option("--tokenizer", required=True, metavar="KIND:PATH")
@click.option(
    "--prompt",
    required=True,
    help="prompt text; its bytes as given, so it may end inside a UTF-8 character",
)
@click.option("--top", type=click.IntRange(1, 257), default=10, show_default=True)
@click.option(
    "--canonical/--raw",
    default=True,
    show_default=True,
    help="condition the model on canonical encodings (exact) or use it as is",
)
@reports_user_errors
def byte_probs_cmd(model_path: str, tokenizer: str, prompt: str, top: int, canonical: bool) -> None:
    """Print the top next bytes after PROMPT by the byte-token lemma, naive prompting and healing."""
    tok = load_tokenizer(tokenizer)
    model = NgramModel.load(model_path)
    if model.vocab_size != tok.vocab_size:
        raise TokenizerError(
            f"model vocabulary {model.vocab_size} != tokenizer vocabulary {tok.vocab_size}"
        )
    token_model = CanonicalModel(model, tok) if canonical else model
    data = os.fsencode(prompt)  # (the argument's own bytes: a cut character stays as it is)
    exact = next_byte_distribution(tok, token_model, data)
    try:
        naive = naive_next_byte_distribution(tok, token_model, data)
        healed = token_healing_distribution(tok, token_model, data)
    except ValueError:  # both encode the prompt: bytes that are not UTF-8 need `encode_bytes`
        naive = healed = None
    click.echo(f"{'next byte':>10}  {'exact':>9}  {'naive':>9}  {'healing':>9}")
    for key in sorted(exact, key=lambda k: -exact[k])[:top]:
        others = "  ".join(
            f"{'n/a':>9}" if d is None else f"{d[key]:9.6f}" for d in (naive, healed)
        )
        click.echo(f"{byte_label(key):>10}  {exact[key]:9.6f}  {others}")
    if naive is None:
        click.echo(
            f"naive and healing: n/a (tokenizer {tokenizer} encodes text only, and the prompt "
            "ends inside a UTF-8 character; the exact column needs no encoding of it)",
            err=True,
        )
