"""Where documents become tokens: process one WorkUnit end to end (read -> tokenize -> shard ->
rejects -> ledger entry, written last). Plain Python, so the Ray actor and tests share it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.ledger import UnitNames
from pipeline.shards import ShardWriter, file_checksum, list_array, token_column
from pipeline.sources import DocBatch, ReadOptions, UnitReader, WorkUnit
from pipeline.storage import Output
from pipeline.textstats import batch_stats
from pipeline.unigrams import UnigramCounter
from schemas.shards import REJECTS_SCHEMA, SCHEMA_VERSION, TOKENMILL_VERSION, shard_schema


@dataclass(frozen=True)
class UnitTask:
    """What a worker needs besides its tokenizer: read options, output options, the config hash."""

    read: ReadOptions
    config_hash: str
    token_offsets: bool
    word_stats: bool
    storage_options: dict[str, Any]


class _RejectsWriter:
    """Streams rejects into an Arrow IPC file so a unit full of garbage stays in bounded memory."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._sink = None
        self._writer = None

    def write(self, batch: DocBatch) -> None:
        if not batch.rejects:
            return
        if self._writer is None:
            self._sink = pa.OSFile(self.path, "wb")
            self._writer = pa.ipc.new_file(self._sink, REJECTS_SCHEMA)
        rejects = batch.rejects
        self._writer.write_batch(
            pa.record_batch(
                [
                    pa.array([r.source for r in rejects], pa.string()),
                    pa.array([r.offset for r in rejects], pa.int64()),
                    pa.array([r.line for r in rejects], pa.int64()),
                    pa.array([r.row for r in rejects], pa.int64()),
                    pa.array([r.reason for r in rejects], pa.string()),
                    pa.array([r.raw for r in rejects], pa.binary()),
                ],
                schema=REJECTS_SCHEMA,
            )
        )
        self.count += len(rejects)

    def close(self) -> bool:
        if self._writer is None:
            return False
        self._writer.close()
        self._sink.close()
        return True


def process_unit(unit: WorkUnit, tokenizer: Any, task: UnitTask, output: Output) -> dict[str, Any]:
    """Tokenize one unit and commit it; returns its ledger entry. Idempotent: a committed unit is
    returned as is, and a re-run of an uncommitted one rewrites the same object names and bytes."""
    names = UnitNames.of(unit.unit_id, task.config_hash)
    if output.exists(names.ledger):
        entry = output.read_json(names.ledger)
        entry["already_committed"] = True
        return entry
    t0 = time.perf_counter()
    read_opts = task.read
    if getattr(tokenizer, "preferred_batch_docs", None):
        read_opts = ReadOptions(
            **{**read_opts.__dict__, "batch_docs": tokenizer.preferred_batch_docs}
        )
    describe = tokenizer.describe()
    metadata = {
        "tokenmill.tokenizer.kind": str(describe["kind"]),
        "tokenmill.tokenizer.name": str(describe["name"]),
        "tokenmill.tokenizer.fingerprint": str(describe["fingerprint"]),
        "tokenmill.tokenizer.vocab_size": str(describe["vocab_size"]),
        "tokenmill.unit_id": unit.unit_id,
        "tokenmill.config_hash": task.config_hash,
    }
    extra = dict(getattr(tokenizer, "shard_columns", {}) or {})
    schema = shard_schema(
        tokenizer.vocab_size, with_offsets=task.token_offsets, extra_fields=extra, metadata=metadata
    )
    byte_lengths = tokenizer.token_byte_lengths()
    counts = {
        "docs_read": 0,
        "documents": 0,
        "rejected": 0,
        "tokens": 0,
        "bytes": 0,
        "chars": 0,
        "words": 0,
        "blank_lines": 0,
    }
    timings = {"read_s": 0.0, "tokenize_s": 0.0, "stats_s": 0.0, "write_s": 0.0}
    sidecar_writer = sidecar_sink = None
    unigrams = UnigramCounter(tokenizer.vocab_size)
    with (
        output.spool() as shard_tmp,
        output.spool() as rejects_tmp,
        output.spool() as sidecar_tmp,
        output.spool() as unigrams_tmp,
    ):
        writer = ShardWriter(shard_tmp, schema)
        rejects = _RejectsWriter(rejects_tmp)
        batch_index = 0
        reader = iter(UnitReader(unit, read_opts, task.storage_options))
        while True:
            t_read = time.perf_counter()
            batch = next(reader, None)
            timings["read_s"] += time.perf_counter() - t_read
            if batch is None:
                break
            counts["docs_read"] += batch.records
            counts["rejected"] += len(batch.rejects)
            counts["blank_lines"] += batch.blank
            rejects.write(batch)
            if not batch.texts:
                continue
            t_tok = time.perf_counter()
            encoded = tokenizer.encode_for_shard(batch.texts, batch_index)
            t_stats = time.perf_counter()
            timings["tokenize_s"] += t_stats - t_tok
            n_bytes = np.asarray(batch.byte_lengths, dtype=np.int64)
            stats = batch_stats(
                batch.texts,
                encoded.flat,
                encoded.offsets,
                byte_lengths if encoded.byte_lengths is None else encoded.byte_lengths,
                words=task.word_stats,
                want_ends=task.token_offsets,
                n_bytes=n_bytes,
            )
            t_write = time.perf_counter()
            timings["stats_s"] += t_write - t_stats
            n_tokens = np.diff(encoded.offsets).astype(np.int32)
            columns = {
                "doc_id": pa.array(batch.doc_ids, pa.string()),
                "source": pa.array(batch.sources, pa.string()),
                "lang": pa.array(batch.langs, pa.string()),
                "tokens": token_column(encoded.flat, encoded.offsets, tokenizer.vocab_size),
                "n_tokens": pa.array(n_tokens),
                "n_bytes": pa.array(stats.n_bytes),
                "n_chars": pa.array(stats.n_chars),
                "n_words": pa.array(stats.n_words),
                "n_continued_words": (
                    pa.array(stats.n_continued_words, mask=stats.n_continued_words < 0)
                    if stats.n_continued_words is not None
                    else pa.nulls(len(batch.texts), pa.int32())
                ),
                **encoded.columns,
            }
            if task.token_offsets:
                columns["token_offsets"] = list_array(
                    stats.token_ends, encoded.offsets, pa.uint32()
                )
            writer.write(columns)
            unigrams.add(encoded.flat, encoded.offsets, batch.sources, batch.langs)
            if encoded.sidecar is not None and encoded.sidecar.num_rows:
                if sidecar_writer is None:
                    sidecar_sink = pa.OSFile(sidecar_tmp, "wb")
                    sidecar_writer = pa.ipc.new_file(sidecar_sink, tokenizer.sidecar_schema)
                sidecar_writer.write_table(encoded.sidecar)
            counts["documents"] += len(batch.texts)
            counts["tokens"] += int(encoded.offsets[-1])
            counts["bytes"] += int(stats.n_bytes.sum())
            counts["chars"] += int(stats.n_chars.sum())
            counts["words"] += int(stats.n_words.sum())
            batch_index += 1
            timings["write_s"] += time.perf_counter() - t_write
        t_commit = time.perf_counter()
        writer.close()
        has_rejects = rejects.close()
        if sidecar_writer is not None:
            sidecar_writer.close()
            sidecar_sink.close()
        unigrams.write(unigrams_tmp)
        entry = {
            "unit_id": unit.unit_id,
            "unit": unit.describe(),
            "config_hash": task.config_hash,
            "shard": names.shard,
            "shard_checksum": file_checksum(shard_tmp),
            "rejects": names.rejects if has_rejects else None,
            "rejects_checksum": file_checksum(rejects_tmp) if has_rejects else None,
            "sidecar": names.sidecar if sidecar_writer is not None else None,
            "sidecar_checksum": file_checksum(sidecar_tmp) if sidecar_writer is not None else None,
            "unigrams": names.unigrams,
            "unigrams_checksum": file_checksum(unigrams_tmp),
            **counts,
            "batches": batch_index,
            "tokenizer": describe,
            "schema_version": SCHEMA_VERSION,
            "tokenmill_version": TOKENMILL_VERSION,
        }
        if counts["docs_read"] != counts["documents"] + counts["rejected"]:
            raise AssertionError(f"unit {unit.unit_id}: accounting broken: {counts}")
        output.commit_file(shard_tmp, names.shard)
        if has_rejects:
            output.commit_file(rejects_tmp, names.rejects)
        if sidecar_writer is not None:
            output.commit_file(sidecar_tmp, names.sidecar)
        output.commit_file(unigrams_tmp, names.unigrams)
        timings["write_s"] += time.perf_counter() - t_commit
        timings["total_s"] = time.perf_counter() - t0
        entry["timings"] = {k: round(v, 4) for k, v in timings.items()}
        output.write_json(names.ledger, entry)  # the commit point: written last
    return entry
