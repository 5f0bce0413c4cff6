"""Committed shards as an input (re-tokenization through bytes): one WorkUnit per ledger entry of the
input output, documents decoded back to their exact UTF-8 bytes with the tokenizer that wrote them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from pipeline.errors import InputError
from pipeline.output import Output, iter_committed, read_manifest, url_to_fs, with_retries
from pipeline.tokenize.inputs.batching import BatchBuilder
from pipeline.tokenize.inputs.registry import InputFormat, register_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit
from schemas.shards import LOSS_MASK
from tokenizers_impl import TokenizerBase, load_tokenizer


class ShardsFormat(InputFormat):
    name = "shards"
    plans_inputs = True

    def plan_inputs(
        self, inputs: list[str], opts: ReadOptions, storage_options: dict | None
    ) -> list[WorkUnit]:
        """One unit per committed shard of each input output URL (ids include the checksum)."""
        units: list[WorkUnit] = []
        for url in inputs:
            output = Output(url, storage_options)
            entries = list(iter_committed(output))
            if not entries:
                raise InputError(f"input {url!r} has no committed shards (no ledger entries)")
            check_plain(url, output)
            if opts.source_tokenizer:
                check_source(opts.source_tokenizer, url, entries, storage_options)
            units.extend(
                WorkUnit(
                    url=f"{output.url}/{entry.shard}",
                    fmt=self.name,
                    compression=None,
                    start=0,
                    end=-1,
                    size=int(entry.bytes),
                    etag=entry.shard_checksum,
                )
                for entry in entries
            )
        return units

    def plan_file(self, file: InputFile, opts: ReadOptions) -> list[WorkUnit]:
        raise InputError("format 'shards' reads committed outputs, not files")

    def read(
        self, unit: WorkUnit, opts: ReadOptions, storage_options: dict | None
    ) -> Iterator[DocBatch]:
        """Documents of a committed shard, decoded to their exact bytes by the source tokenizer."""
        from pipeline.output.shards import values_view

        out = BatchBuilder(unit, opts)
        tokenizer = decoder_for(opts.source_tokenizer, storage_options)
        reader = open_checked(unit, storage_options)
        row = 0
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            ids, sources, langs = (rb.column(n).to_pylist() for n in ("doc_id", "source", "lang"))
            tokens = rb.column("tokens")
            flat, offsets = values_view(tokens.values), values_view(tokens.offsets)
            for j in range(rb.num_rows):
                raw = tokenizer.decode_bytes(flat[offsets[j] : offsets[j + 1]])
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    reason = f"tokens decode to invalid UTF-8 at byte {exc.start}"
                    out.reject(None, None, row, reason, raw)
                else:
                    out.accept(ids[j], text, len(raw), sources[j], langs[j])
                row += 1
                if out.full():
                    yield out.take()
        yield out.take()


def open_checked(unit: WorkUnit, storage_options: dict | None) -> Any:
    """The Arrow reader of a committed shard whose bytes match its ledger checksum (the unit's
    etag): a damaged or replaced shard is refused, naming it, instead of its documents being
    re-tokenized as they now read (or pyarrow's traceback on a torn file)."""
    import pyarrow as pa

    from pipeline.output.shards import bytes_checksum

    fs, path = url_to_fs(unit.url, storage_options)
    data = with_retries(lambda: fs.cat_file(path), f"read {path}")
    if unit.etag and bytes_checksum(data) != unit.etag:
        raise InputError(
            f"shard {unit.url} differs from its ledger entry (checksum): it was changed or "
            "damaged after its commit; run `tokenmill verify` on that output (and `tokenmill run "
            "--repair` to redo its unit) before re-tokenizing it"
        )
    try:
        reader = pa.ipc.open_file(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"shard {unit.url} is not a readable Arrow file: {exc}") from None
    if LOSS_MASK in reader.schema.names:
        raise InputError(chat_refusal(unit.url))
    return reader


def chat_refusal(where: str) -> str:
    return (
        f"{where} holds chat documents (a loss mask, and special ids that come from the chat "
        "template, not from the text): decoding them to text would lose both; re-tokenize "
        "from the original conversations (`tokenmill run --chat-template ...`) instead"
    )


def check_plain(url: str, output: Output) -> None:
    """Refuse, before anything is written, an output whose job rendered chat templates."""
    manifest = read_manifest(output) or {}
    read = (manifest.get("options") or {}).get("read") or {}
    if read.get("chat_template"):
        raise InputError(chat_refusal(f"input {url!r}"))


def check_source(spec: str, url: str, entries: list, storage_options: dict | None) -> None:
    """Refuse, before anything is written, a source tokenizer that did not write these shards
    (another fingerprint: a wrong --source-tokenizer, or a job.json path that now names another
    file, decoded them into other text with exit 0 and `verify` ok) or whose ids need each
    batch's vocabulary (dynamic_merge: its sidecars, which this reader does not use)."""
    tokenizer = decoder_for(spec, storage_options)
    if tokenizer.sidecar_schema is not None:
        raise InputError(
            f"input {url!r}: its tokenizer {spec!r} writes ids local to each batch (decoded "
            "only with the batch's vocabulary, in the output's sidecars); re-tokenize from the "
            "original input instead"
        )
    wrote = {e.tokenizer.get("fingerprint") for e in entries}
    if wrote != {tokenizer.fingerprint}:
        raise InputError(
            f"input {url!r} was written by tokenizer fingerprint(s) {sorted(map(str, wrote))}, "
            f"not by the source tokenizer {spec!r} (fingerprint {tokenizer.fingerprint}): its "
            "tokens would decode to other text; pass the tokenizer that wrote it "
            "(--source-tokenizer)"
        )


def source_tokenizer_spec(input_url: str, storage_options: dict | None = None) -> str:
    """The KIND:PATH of the tokenizer that wrote an output (from its job manifest)."""
    manifest = read_manifest(Output(input_url, storage_options))
    spec = (manifest or {}).get("tokenizer_spec")
    if not spec:
        raise InputError(
            f"{input_url!r} has no job manifest naming its tokenizer; pass --source-tokenizer"
        )
    return f"{spec['kind']}:{spec['path']}"


def shards_source(inputs: list[str], storage_options: dict | None = None) -> str:
    """The one tokenizer (KIND:PATH) that wrote every input output of a `shards` job, from their
    job manifests (what `--source-tokenizer` defaults to)."""
    specs = {url: source_tokenizer_spec(url, storage_options) for url in inputs}
    if len(set(specs.values())) > 1:
        raise InputError(
            "the input outputs were written by different tokenizers "
            f"({', '.join(f'{u}: {s}' for u, s in specs.items())}); re-tokenize them apart, or "
            "pass --source-tokenizer"
        )
    return next(iter(specs.values()))


@lru_cache(maxsize=4)
def _load(spec: str, storage_key: str) -> TokenizerBase:
    return load_tokenizer(spec, storage_options=json.loads(storage_key) or None)


def decoder_for(spec: str, storage_options: dict | None) -> TokenizerBase:
    """The source tokenizer (loaded once per process); it must be lossless to re-tokenize."""
    tokenizer = _load(spec, json.dumps(storage_options or {}, sort_keys=True))
    if not tokenizer.lossless:
        raise InputError(
            f"source tokenizer {spec!r} is not lossless: its tokens do not give back the text"
        )
    return tokenizer


register_format(ShardsFormat())
