"""Committed shards as an input (re-tokenization through bytes): one WorkUnit per ledger entry of the
input output, documents decoded back to their exact UTF-8 bytes with the tokenizer that wrote them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipeline.ledger import committed_entries, read_manifest
from pipeline.sources import InputError, WorkUnit
from pipeline.storage import Output


def plan_shard_units(inputs: list[str], storage_options: dict | None = None) -> list[WorkUnit]:
    """One unit per committed shard of each input output URL (ids include the shard checksum)."""
    units: list[WorkUnit] = []
    for url in inputs:
        output = Output(url, storage_options)
        entries = committed_entries(output)
        if not entries:
            raise InputError(f"input {url!r} has no committed shards (no ledger entries)")
        for entry in entries:
            units.append(
                WorkUnit(
                    url=f"{output.url}/{entry['shard']}",
                    fmt="shards",
                    compression=None,
                    start=0,
                    end=-1,
                    size=int(entry["bytes"]),
                    etag=entry["shard_checksum"],
                )
            )
    return units


def source_tokenizer_spec(input_url: str, storage_options: dict | None = None) -> str:
    """The KIND:PATH of the tokenizer that wrote an output (from its job manifest)."""
    manifest = read_manifest(Output(input_url, storage_options))
    spec = (manifest or {}).get("tokenizer_spec")
    if not spec:
        raise InputError(
            f"{input_url!r} has no job manifest naming its tokenizer; pass --source-tokenizer"
        )
    return f"{spec['kind']}:{spec['path']}"


@lru_cache(maxsize=4)
def _load(spec: str, storage_key: str) -> Any:
    import json

    from tokenizers_impl import load_tokenizer

    return load_tokenizer(spec, storage_options=json.loads(storage_key) or None)


def decoder_for(spec: str, storage_options: dict | None) -> Any:
    """The source tokenizer (loaded once per process); it must be lossless to re-tokenize."""
    import json

    tokenizer = _load(spec, json.dumps(storage_options or {}, sort_keys=True))
    if not tokenizer.lossless:
        raise InputError(
            f"source tokenizer {spec!r} is not lossless: its tokens do not give back the text"
        )
    return tokenizer
