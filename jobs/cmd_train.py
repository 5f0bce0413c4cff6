"""`tokenmill train-tokenizer`: train any registered tokenizer kind on a corpus and save it."""

from __future__ import annotations

import json
from typing import Any

import click

from jobs.common import parse_pairs, parse_storage_options, reports_user_errors, storage_option_flag
from pipeline.errors import RunInterrupted, TokenmillError
from tokenizers_impl import known_kinds

MAX_VOCAB = 1 << 24  # (the largest vocabularies in use are under a million tokens)
NOT_TRAINED = {
    "tiktoken": " (it reads a .tiktoken ranks file made elsewhere, such as OpenAI's published "
    "encodings; a byte-level BPE trained with --kind bpe encodes on the same fast backends)",
    "dynamic_merge": " (its merges are decided per batch while running: its config file is "
    "written by hand, see docs/dynamic_merge.md)",
}


@click.command("train-tokenizer")
@click.option("--kind", required=True, type=click.Choice(known_kinds()))
@click.option("--input", "input_", multiple=True, required=True, metavar="GLOB")
@click.option(
    "--vocab-size",
    type=click.IntRange(min=1, max=MAX_VOCAB),
    required=True,
    help="tokens in the trained vocabulary (the kind's base vocabulary is the floor)",
)
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
@click.option(
    "--max-docs",
    type=click.IntRange(min=1),
    default=None,
    help="train on at most this many documents",
)
@click.option("--text-field", default="text", help="the JSON field / column holding the text")
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
    from jobs.corpus_text import Rejected, iter_texts
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
    extra = _options(
        kind, option, model_type, lib_admit_after, lib_new_on_probation, lib_doc_sentences
    )
    _check_output(output)
    seen, rejected = {"documents": 0, "chars": 0}, Rejected()

    def texts():  # noqa: ANN202
        for text in iter_texts(cfg, max_docs=max_docs, rejected=rejected):
            seen["documents"] += 1
            seen["chars"] += len(text)
            yield text

    tokenizer = _train(cls, kind, texts(), vocab_size, extra)
    if rejected.count:
        click.echo(f"note: {rejected.describe()}: not trained on", err=True)
    if not seen["documents"]:
        reason = f" ({rejected.describe()})" if rejected.count else ""
        raise TokenizerError(
            f"no documents to train on in {', '.join(input_)}{reason}: nothing saved"
        )
    _save(tokenizer, output, storage)
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


def _check_output(output: str) -> None:
    """Refuse, before training, a local output path that cannot be written: a directory, or a
    file in a folder that does not exist or where no file can be created (tried); an object
    store's answer comes when the file is written."""
    import os

    from tokenizers_impl.base import TokenizerError

    scheme, sep, _ = output.partition("://")
    if sep and scheme != "file":
        return
    path = output.removeprefix("file://")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise TokenizerError(f"--output {output} is a directory: give a file path")
    if not os.path.isdir(folder):
        raise TokenizerError(f"--output {output}: its folder {folder} does not exist")
    probe = os.path.join(folder, f".tokenmill-write-probe-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise TokenizerError(f"--output {output}: cannot write in {folder}: {exc}") from None


def _options(kind: str, option: tuple[str, ...], model_type: Any, *lib: Any) -> dict[str, Any]:
    """The trainer's options: the named flags (refused with another kind), then --option pairs."""
    from tokenizers_impl.base import TokenizerError

    flags = {
        "--model-type": (model_type, "sentencepiece", "model_type"),
        "--lib-admit-after": (lib[0], "lib", "admit_after"),
        "--lib-new-on-probation": (lib[1], "lib", "new_on_probation"),
        "--lib-doc-sentences": (lib[2], "lib", "doc_sentences"),
    }
    for flag, (value, owner, _) in flags.items():
        if value is not None and kind != owner:
            raise TokenizerError(f"{flag} is an option of --kind {owner}, not of {kind}")
    extra = {key: value for value, _, key in flags.values() if value is not None}
    extra.update(parse_pairs(option, "--option"))
    return extra


def _train(cls: Any, kind: str, texts: Any, vocab_size: int, extra: dict[str, Any]) -> Any:
    """cls.train; a trainer's error of any type (it refused an option or a value) is one line."""
    from tokenizers_impl.base import TokenizerError

    try:
        return cls.train(texts, vocab_size=vocab_size, **extra)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted while training: nothing was saved") from None
    except TokenmillError:
        raise
    except Exception as exc:  # noqa: BLE001
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TokenizerError(
            f"training a {kind} tokenizer (vocab size {vocab_size}, options {extra}) failed: "
            f"{type(exc).__name__}: {said}"
        ) from None


def _save(tokenizer: Any, output: str, storage: dict[str, Any]) -> None:
    """Save the trained tokenizer; a store's refusal or an OS error is one line."""
    from pipeline.output.storage import access_problem
    from tokenizers_impl.base import TokenizerError

    try:
        tokenizer.save(output, storage_options=storage)
    except Exception as exc:  # noqa: BLE001 (the store's own error types: no credentials, ...)
        problem = access_problem(exc) or (str(exc) if isinstance(exc, OSError) else None)
        if problem is None:
            raise
        raise TokenizerError(
            f"could not write the trained tokenizer to {output}: {problem}"
        ) from None
