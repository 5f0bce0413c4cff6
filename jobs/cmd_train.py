"""`tokenmill train-tokenizer`: train any registered tokenizer kind on a corpus and save it."""

from __future__ import annotations

import json

import click

from jobs.common import parse_pairs, parse_storage_options, reports_user_errors, storage_option_flag
from tokenizers_impl import known_kinds

NOT_TRAINED = {
    "tiktoken": " (it reads a .tiktoken ranks file made elsewhere, such as OpenAI's published "
    "encodings; a byte-level BPE trained with --kind bpe encodes on the same fast backends)",
    "dynamic_merge": " (its merges are decided per batch while running: its config file is "
    "written by hand, see docs/dynamic_merge.md)",
}


@click.command("train-tokenizer")
@click.option("--kind", required=True, type=click.Choice(known_kinds()))
@click.option("--input", "input_", multiple=True, required=True, metavar="GLOB")
@click.option("--vocab-size", type=int, required=True)
@click.option("--output", required=True, metavar="PATH")
@click.option(
    "--option",
    "option",
    multiple=True,
    metavar="KEY=VALUE",
    help="training option of the kind (repeatable; JSON values), e.g. model_type=unigram",
)
@click.option(
    "--model-type",
    type=click.Choice(["bpe", "unigram"]),
    default=None,
    help="sentencepiece model type (same as --option model_type=...; default bpe)",
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
@reports_user_errors
def train_tokenizer_cmd(
    kind,
    input_,
    vocab_size,
    output,
    option,
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
    from pipeline.tokenize.config import load_config
    from tokenizers_impl.base import TokenizerError, tokenizer_class

    cls = tokenizer_class(kind)
    if not callable(getattr(cls, "train", None)):
        trainable = [
            k for k in known_kinds() if callable(getattr(tokenizer_class(k), "train", None))
        ]
        raise TokenizerError(
            f"tokenizer kind {kind!r} is not trained here{NOT_TRAINED.get(kind, '')}; "
            f"kinds that train: {', '.join(trainable)}"
        )
    storage = parse_storage_options(storage_option)
    cfg = load_config(
        input=list(input_),
        output=output,
        tokenizer=f"{kind}:{output}",
        text_field=text_field,
        storage_options=storage,
    )
    named = {
        "model_type": model_type if kind == "sentencepiece" else None,
        "admit_after": lib_admit_after if kind == "lib" else None,
        "new_on_probation": lib_new_on_probation if kind == "lib" else None,
        "doc_sentences": lib_doc_sentences if kind == "lib" else None,
    }
    extra = {k: v for k, v in named.items() if v is not None}
    extra.update(parse_pairs(option, "--option"))
    seen = {"documents": 0, "chars": 0}

    def texts():  # noqa: ANN202
        for text in iter_texts(cfg, max_docs=max_docs):
            seen["documents"] += 1
            seen["chars"] += len(text)
            yield text

    try:
        tokenizer = cls.train(texts(), vocab_size=vocab_size, **extra)
    except (TypeError, ValueError, RuntimeError) as exc:  # the trainer refused an option
        if isinstance(exc, TokenizerError):
            raise
        raise TokenizerError(f"training a {kind} tokenizer with options {extra}: {exc}") from None
    if not seen["documents"]:
        raise TokenizerError(f"no documents to train on in {', '.join(input_)}: nothing saved")
    tokenizer.save(output, storage_options=storage)
    described = tokenizer.describe()
    got = described.get("vocab_size")
    if got is not None and got != vocab_size:  # (the trainer's own floor or ceiling)
        click.echo(
            f"note: the trained vocabulary has {got} tokens, not the {vocab_size} asked: "
            + (
                f"the corpus ({seen['documents']:,} documents, {seen['chars']:,} characters) "
                "has nothing more frequent enough to add"
                if got < vocab_size
                else "the trainer's base vocabulary (bytes or characters and special tokens) "
                "is larger"
            ),
            err=True,
        )
    click.echo(json.dumps({"output": output, **described}, sort_keys=True))
