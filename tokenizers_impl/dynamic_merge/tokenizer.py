"""Dynamic batch-level merging plugin (`dynamic_merge`): wraps a base tokenizer and shortens each batch.

docs/algorithms.md section 3 ("Dynamic batch-level merging"); docs/dynamic_merge.md for users.
Merges are decided per batch, so merged ids (>= the base vocabulary size) only mean something
together with their batch's vocabulary, which `encode_for_shard` hands to the engine as sidecar
rows next to a `batch_id` shard column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from tokenizers_impl.base import (
    EncodedBatch,
    TokenizerBase,
    TokenizerError,
    fingerprint_of,
    load_tokenizer,
    parse_spec,
    register,
)
from tokenizers_impl.dynamic_merge.merging import BaseBatch, MergeResult, expand, merge_batch_ids
from tokenizers_impl.dynamic_merge.pretokens import batch_pretoken_starts
from tokenizers_impl.files import read_file, write_file

BOUNDARY_MODES = ("pretoken", "word")

# One table per shard under <output>/sidecar/. Per batch: one statistics row (new_id null) with
# l0/lm/lword/n_docs/n_merges, then one row per merge (new_id, base_ids, bytes, replaced).
SIDECAR_SCHEMA = pa.schema(
    [
        ("batch_id", pa.int64()),
        ("new_id", pa.uint32()),
        ("base_ids", pa.list_(pa.uint32())),
        ("bytes", pa.binary()),
        ("replaced", pa.int64()),
        ("l0", pa.int64()),
        ("lm", pa.int64()),
        ("lword", pa.int64()),
        ("n_docs", pa.int64()),
        ("n_merges", pa.int64()),
    ],
    metadata={b"tokenmill.sidecar": b"dynamic_merge/1"},
)


class DynamicMergeTokenizer(TokenizerBase):
    """A base tokenizer plus up to `max_merges` batch-local merges of frequent valid pairs.

    `boundary`: "pretoken" (GPT-2 byte-level pre-tokens) or "word" (whitespace-separated words).
    `target_reduction`: percent of the way from base to word level (100 (L0 - Lm) / (L0 - Lword));
    when set, each batch merges until it is reached, at most `max_merges` times.
    """

    kind: ClassVar[str] = "dynamic_merge"
    shard_columns: ClassVar[dict[str, pa.DataType]] = {"batch_id": pa.int64()}
    sidecar_schema: ClassVar[pa.Schema] = SIDECAR_SCHEMA

    def __init__(
        self,
        base: TokenizerBase,
        max_merges: int = 50,
        boundary: str = "pretoken",
        target_reduction: float | None = None,
        batch_docs: int = 32,
        base_spec: str | None = None,
        name: str = "dynamic_merge",
    ):
        if not isinstance(max_merges, int) or isinstance(max_merges, bool) or max_merges < 0:
            raise TokenizerError(f"max_merges must be an integer >= 0, got {max_merges!r}")
        if boundary not in BOUNDARY_MODES:
            raise TokenizerError(f"boundary must be one of {BOUNDARY_MODES}, got {boundary!r}")
        number = isinstance(target_reduction, (int, float)) and not isinstance(
            target_reduction, bool
        )
        if target_reduction is not None and not (number and 0 <= target_reduction <= 100):
            raise TokenizerError(
                f"target_reduction must be a percent in [0, 100], got {target_reduction!r}"
            )
        if not isinstance(batch_docs, int) or isinstance(batch_docs, bool) or batch_docs < 1:
            raise TokenizerError(f"batch_docs must be a positive integer, got {batch_docs!r}")
        self.base = base
        self.base_spec = base_spec
        self.max_merges = max_merges
        self.boundary = boundary
        self.target_reduction = target_reduction
        self.batch_docs = batch_docs
        self.preferred_batch_docs = batch_docs
        self.name = name
        self.base_vocab_size = int(base.vocab_size)
        self.vocab_size = self.base_vocab_size + max_merges
        self.eos_id = base.eos_id
        self.bos_id = base.bos_id
        self.lossless = bool(base.lossless)
        self.fingerprint = fingerprint_of(self.kind, base.fingerprint, self.config(with_base=False))
        self._unmergeable = self._unmergeable_ids()

    # -- configuration --------------------------------------------------------------------------
    def config(self, with_base: bool = True) -> dict[str, Any]:
        config: dict[str, Any] = {
            "max_merges": self.max_merges,
            "boundary": self.boundary,
            "batch_docs": self.batch_docs,
            "target_reduction": self.target_reduction,
        }
        return {"base": self.base_spec, **config} if with_base else config

    @classmethod
    def load(
        cls, path: str, storage_options: dict | None = None, **options: Any
    ) -> DynamicMergeTokenizer:
        """Load from a small JSON or YAML config: {"base": "bpe:tok.json", "max_merges": 50, ...}.

        A relative base path is resolved against the config file's folder."""
        try:
            config = yaml.safe_load(read_file(path, storage_options, limit=1 << 20).decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TokenizerError(
                f"dynamic_merge config {path!r} is not valid JSON/YAML: {exc}"
            ) from exc
        if not isinstance(config, dict):
            raise TokenizerError(f"dynamic_merge config {path!r} must be a mapping")
        config = {**config, **options}
        known = {"base", "max_merges", "boundary", "batch_docs", "target_reduction", "name"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise TokenizerError(f"dynamic_merge config {path!r}: unknown field(s) {unknown}")
        if not isinstance(config.get("base"), str):
            raise TokenizerError(f"dynamic_merge config {path!r}: field 'base' must be 'KIND:PATH'")
        kind, base_path = parse_spec(config["base"])
        if "://" not in base_path and not base_path.startswith("/") and "/" in path:
            base_path = f"{path.rsplit('/', 1)[0]}/{base_path}"
        base = load_tokenizer(f"{kind}:{base_path}", storage_options=storage_options)
        if base.sidecar_schema is not None:  # (e.g. another dynamic_merge)
            raise TokenizerError(
                f"dynamic_merge config {path!r}: base {config['base']!r} is a {base.kind} "
                "tokenizer, whose ids need their batch's vocabulary; the base must give global "
                "ids (bpe, tiktoken, sentencepiece, lib)"
            )
        return cls(
            base,
            max_merges=config.get("max_merges", 50),
            boundary=config.get("boundary", "pretoken"),
            target_reduction=config.get("target_reduction"),
            batch_docs=config.get("batch_docs", 32),
            base_spec=config["base"],
            name=config.get("name") or path.rsplit("/", 1)[-1],
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        """Write the config; a base without a known spec is saved next to it as `<url>.base`."""
        config = self.config()
        if self.base_spec is None:
            self.base.save(f"{url}.base", storage_options)
            config["base"] = f"{self.base.kind}:{url.rsplit('/', 1)[-1]}.base"
        write_file(url, json.dumps(config, indent=2).encode("utf-8"), storage_options)

    # -- merging --------------------------------------------------------------------------------
    def _unmergeable_ids(self) -> np.ndarray:
        ids = set(self.base.special_ids)
        ids.update(i for i in (self.eos_id, self.bos_id) if i is not None)
        return np.array(sorted(ids), dtype=np.int64)

    def base_batch(self, texts: Sequence[str]) -> BaseBatch:
        """Base-tokenize `texts` and find each document's pre-token (or word) boundaries in bytes."""
        flat, offsets = self.base.encode_batch_flat(texts)
        lengths = self.base.token_byte_lengths().astype(np.int64)[flat]
        mergeable = (lengths > 0) & ~np.isin(flat, self._unmergeable)
        # Boundaries are found on the bytes the base tokens spell; for a lossless base that is the
        # text itself (checked by byte count), otherwise the decoded bytes, raw bytes escaped.
        token_bytes = np.concatenate([[0], np.cumsum(lengths)])[offsets]
        doc_bytes = np.diff(token_bytes)
        texts = list(texts)
        for d, text in enumerate(texts):
            if not self.base.lossless or len(text.encode("utf-8", "surrogatepass")) != doc_bytes[d]:
                ids = flat[offsets[d] : offsets[d + 1]]
                texts[d] = self.base.decode_bytes(ids).decode("utf-8", "surrogateescape")
        boundaries = batch_pretoken_starts(texts, self.boundary)
        return BaseBatch(flat, offsets, lengths, boundaries, mergeable)

    def merge_batch(
        self, texts: Sequence[str], max_merges: int | None | str = "config"
    ) -> MergeResult:
        """Base-tokenize and merge one batch. `max_merges` overrides the configured limit (None: until
        word level); with `target_reduction` set, merging also stops once it is reached."""
        return self.merge_base_batch(self.base_batch(texts), max_merges)

    def merge_base_batch(
        self, batch: BaseBatch, max_merges: int | None | str = "config"
    ) -> MergeResult:
        limit = self.max_merges if max_merges == "config" else max_merges
        target_length = None
        if self.target_reduction is not None:
            gap = len(batch.ids) - batch.word_length()
            target_length = len(batch.ids) - math.ceil(self.target_reduction * gap / 100 - 1e-9)
        return merge_batch_ids(batch, self.base_vocab_size, limit, target_length)

    # -- contract -------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Merged ids per text; ids >= base vocab size are local to this call (see merge_batch)."""
        return self.merge_batch(texts).ids

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        result = self.merge_batch(texts)
        return result.flat, result.offsets

    def encode_for_shard(self, texts: Sequence[str], batch_index: int) -> EncodedBatch:
        result = self.merge_batch(texts)
        ids = np.full(len(texts), batch_index, dtype=np.int64)  # (not pa.array: imports pandas)
        batch_id = pa.Array.from_buffers(pa.int64(), len(ids), [None, pa.py_buffer(ids)])
        return EncodedBatch(
            result.flat,
            result.offsets,
            {"batch_id": batch_id},
            self.sidecar_rows(result, batch_index),
            self.batch_byte_lengths(result),
        )

    def sidecar_rows(self, result: MergeResult, batch_id: int) -> pa.Table:
        """One statistics row, then one row per new id of the batch (SIDECAR_SCHEMA)."""
        new_ids = list(result.vocab)
        rows = 1 + len(new_ids)
        nulls = [None] * len(new_ids)
        return pa.table(
            {
                "batch_id": [batch_id] * rows,
                "new_id": [None, *new_ids],
                "base_ids": [None, *(list(result.vocab[i]) for i in new_ids)],
                "bytes": [None, *(self.base.decode_bytes(result.vocab[i]) for i in new_ids)],
                "replaced": [None, *result.replaced],
                "l0": [result.l0, *nulls],
                "lm": [result.lm, *nulls],
                "lword": [result.lword, *nulls],
                "n_docs": [len(result.offsets) - 1, *nulls],
                "n_merges": [len(new_ids), *nulls],
            },
            schema=SIDECAR_SCHEMA,
        )

    def decode_bytes(
        self, ids: Sequence[int] | np.ndarray, batch_vocab: dict[int, tuple[int, ...]] | None = None
    ) -> bytes:
        base_ids = expand(ids, batch_vocab or {})
        if any(i >= self.base_vocab_size for i in base_ids):
            raise TokenizerError("merged ids need their batch vocabulary: decode(ids, batch_vocab)")
        return self.base.decode_bytes(base_ids)

    def decode(
        self, ids: Sequence[int] | np.ndarray, batch_vocab: dict[int, tuple[int, ...]] | None = None
    ) -> str:
        return self.decode_bytes(ids, batch_vocab).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= self.base_vocab_size:
            raise TokenizerError(
                f"id {token_id} is a batch-local merged id; its bytes are in the batch's sidecar rows"
            )
        return self.base.token_bytes(token_id)

    def token_byte_lengths(self) -> np.ndarray:
        """Byte length of every base id; batch-local merged ids (>= base vocab) are 0 here: their
        lengths come with each batch (`batch_byte_lengths`, EncodedBatch.byte_lengths)."""
        if self._byte_lengths is None:
            table = np.zeros(self.vocab_size, dtype=np.int32)
            table[: self.base_vocab_size] = self.base.token_byte_lengths()
            self._byte_lengths = table
        return self._byte_lengths

    def batch_byte_lengths(self, result: MergeResult) -> np.ndarray:
        """Byte length of every id for one batch: base ids, then that batch's merged ids."""
        table = self.token_byte_lengths().copy()
        for new_id, base_ids in result.vocab.items():
            table[new_id] = int(table[list(base_ids)].sum())
        return table

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base": self.base.describe(), **self.config(with_base=False)}


def vocab_from_sidecar(table: pa.Table, batch_id: int) -> dict[int, tuple[int, ...]]:
    """The batch vocabulary (new id -> base ids) of one batch, read back from sidecar rows."""
    rows = table.filter(pc.equal(table["batch_id"], batch_id)).to_pydict()
    return {
        new: tuple(base)
        for new, base in zip(rows["new_id"], rows["base_ids"], strict=True)
        if new is not None
    }


register("dynamic_merge", DynamicMergeTokenizer)
