"""Where documents become tokens: process one WorkUnit end to end (read -> tokenize -> shard ->
rejects -> ledger entry, written last). Plain Python, so the Ray actor and tests share it."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError, VerificationFailed
from pipeline.output.lease import check_fence
from pipeline.output.shards import (
    RejectsWriter,
    ShardWriter,
    file_checksum,
    list_array,
    numeric_array,
    optional_ints,
    string_array,
    token_column,
)
from pipeline.output.storage import Output
from pipeline.tokenize.chat_encode import ChatEncoded, encode_chat
from pipeline.tokenize.contract import check_encoded, encoding
from pipeline.tokenize.feed import todo_bytes
from pipeline.tokenize.inputs import DocBatch, ReadOptions, WorkUnit, read_unit
from pipeline.tokenize.textstats import batch_stats
from pipeline.tokenize.unigrams import UnigramCounter
from schemas.layout import UnitNames
from schemas.records import LedgerEntry
from schemas.shards import LOSS_MASK, SCHEMA_VERSION, TOKENMILL_VERSION, shard_schema
from tokenizers_impl import EncodedBatch, TokenizerBase
from tokenizers_impl.texts import Utf8Texts, as_str_list, joined, utf8_of

GROUP_DOCS = 4096  # documents of consecutive engine batches encoded in one call, at most

# A unit runs on one core: the tokenizer libraries' own thread pools would only compete with the
# other workers (Ray actors set this at start; `tokenmill run` sets it for its driver's threads,
# unless the environment already says otherwise)
WORKER_ENV = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class UnitTask:
    """What a worker needs besides its tokenizer: read options, output options, the config hash."""

    read: ReadOptions
    config_hash: str
    token_offsets: bool
    word_stats: bool
    storage_options: dict[str, Any]
    fence: dict[str, Any] | None = None  # the run's lease (owner, generation): commits check it
    verify_sample: float = 0.0  # share of documents re-encoded with the tokenizer's reference
    tokenizer_fingerprint: str = ""  # what the driver loaded: a worker that loads another refuses


def check_fingerprint(tokenizer: TokenizerBase, task: UnitTask, spec: str, where: str) -> None:
    """Refuse a worker's tokenizer whose fingerprint is not the one the driver loaded (its shards
    would be written under the driver's tokenizer record)."""
    wanted, got = task.tokenizer_fingerprint, tokenizer.fingerprint
    if wanted and got != wanted:
        raise ConfigError(
            f"tokenizer {spec} loaded {where} has fingerprint {got}, not the driver's {wanted}: "
            "another file under that path (changed since the run began, or another node's), or "
            "a plugin whose fingerprint is not the same at every load"
        )


@dataclass(frozen=True)
class UnitOutcome:
    """A unit's ledger entry, and whether it was already committed before this call."""

    entry: LedgerEntry
    already_committed: bool = False


@dataclass
class UnitCounts:
    """Documents, tokens and text measures of one unit; read = documents + rejected."""

    docs_read: int = 0
    documents: int = 0
    rejected: int = 0
    tokens: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    blank_lines: int = 0
    verified_documents: int = 0
    verified_bytes: int = 0


@dataclass
class StageTimes:
    """Seconds spent per stage of one unit (recorded in its ledger entry)."""

    read_s: float = 0.0
    tokenize_s: float = 0.0
    verify_s: float = 0.0
    stats_s: float = 0.0
    write_s: float = 0.0


class UnitFiles:
    """The spool files of one unit and their writers. Nothing is visible in the output until
    `commit`, which publishes the files in a fixed order; the caller writes the ledger entry last."""

    def __init__(self, output: Output, schema: pa.Schema, tokenizer: TokenizerBase):
        self.output = output
        self.tokenizer = tokenizer
        self._stack = ExitStack()
        spool = [self._stack.enter_context(output.spool()) for _ in range(4)]
        self._shard_tmp, self._rejects_tmp, self._sidecar_tmp, self._unigrams_tmp = spool
        self.shard = ShardWriter(self._shard_tmp, schema)
        self.rejects = RejectsWriter(self._rejects_tmp)
        self.unigrams = UnigramCounter(tokenizer.vocab_size)
        self._sidecar_sink = self._sidecar = None

    def __enter__(self) -> UnitFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()  # removes whatever spool files were not committed

    def write_sidecar(self, table: pa.Table) -> None:
        if self._sidecar is None:
            self._sidecar_sink = pa.OSFile(self._sidecar_tmp, "wb")
            self._sidecar = pa.ipc.new_file(self._sidecar_sink, self.tokenizer.sidecar_schema)
        self._sidecar.write_table(table)

    def close(self, names: UnitNames) -> dict[str, Any]:
        """Finish every file; returns the ledger's file fields (names and checksums)."""
        self.shard.close()
        has_rejects = self.rejects.close()
        has_sidecar = self._sidecar is not None
        if has_sidecar:
            self._sidecar.close()
            self._sidecar_sink.close()
        self.unigrams.write(self._unigrams_tmp)
        self._commits = [
            (self._shard_tmp, names.shard),
            *([(self._rejects_tmp, names.rejects)] if has_rejects else []),
            *([(self._sidecar_tmp, names.sidecar)] if has_sidecar else []),
            (self._unigrams_tmp, names.unigrams),
        ]
        return {
            "shard": names.shard,
            "shard_checksum": file_checksum(self._shard_tmp),
            "rejects": names.rejects if has_rejects else None,
            "rejects_checksum": file_checksum(self._rejects_tmp) if has_rejects else None,
            "sidecar": names.sidecar if has_sidecar else None,
            "sidecar_checksum": file_checksum(self._sidecar_tmp) if has_sidecar else None,
            "unigrams": names.unigrams,
            "unigrams_checksum": file_checksum(self._unigrams_tmp),
        }

    def commit(self) -> None:
        """Publish the finished files (shard, rejects, sidecar, unigrams), each atomically."""
        for tmp, rel in self._commits:
            self.output.commit_file(tmp, rel)


def process_unit(
    unit: WorkUnit,
    tokenizer: TokenizerBase,
    task: UnitTask,
    output: Output,
    data: bytes | None = None,
) -> UnitOutcome:
    """Tokenize one unit and commit it (`data`: the bytes of a stream's range, handed over by the
    reader that cut it). Idempotent: a committed unit is returned as it is, and a
    re-run of an uncommitted one rewrites the same object names and bytes."""
    names = UnitNames.of(unit.unit_id, task.config_hash)
    if output.exists(names.ledger):
        return UnitOutcome(LedgerEntry.from_json(output.read_json(names.ledger)), True)
    t0 = time.perf_counter()
    read_opts = task.read
    if tokenizer.preferred_batch_docs:
        read_opts = replace(read_opts, batch_docs=tokenizer.preferred_batch_docs)
    describe = tokenizer.describe()
    counts, times = UnitCounts(), StageTimes()
    planned = len(data) if data is not None else todo_bytes([unit])
    if planned >= KERNELS_FROM_BYTES:  # (loaded, every batch takes them)
        import pipeline.tokenize.inputs.jsonscan
        import pipeline.tokenize.textkernels  # noqa: F401
    with UnitFiles(output, _schema(unit, tokenizer, task, describe), tokenizer) as files:
        reader = iter(read_unit(unit, read_opts, task.storage_options, data))
        batches = _tokenize_batches(unit, reader, tokenizer, task, files, counts, times)
        t_commit = time.perf_counter()
        entry = LedgerEntry(
            unit_id=unit.unit_id,
            unit=unit,
            config_hash=task.config_hash,
            **files.close(names),
            **asdict(counts),
            batches=batches,
            tokenizer=describe,
            schema_version=SCHEMA_VERSION,
            tokenmill_version=TOKENMILL_VERSION,
        )
        if counts.docs_read != counts.documents + counts.rejected:
            raise AssertionError(f"unit {unit.unit_id}: accounting broken: {counts}")
        check_fence(output, task.fence, f"unit {unit.unit_id}")
        files.commit()
        times.write_s += time.perf_counter() - t_commit
        timings = {**asdict(times), "total_s": time.perf_counter() - t0}
        entry = replace(
            entry, timings={k: round(v, 4) for k, v in timings.items()}, lease=task.fence
        )
        check_fence(output, task.fence, f"unit {unit.unit_id}")
        output.write_json(names.ledger, entry.to_json())  # the commit point: written last
    release_freed_memory()
    return UnitOutcome(entry)


# a unit of at least this many input bytes loads the compiled kernels (statistics, unigram
# counts) before its first batch: without them a unit of short documents, whose batches
# (batch_docs of them) are each under the kernels' own thresholds, went through the numpy
# reference code batch after batch (5x slower statistics). Smaller units decide batch by batch,
# so that a job of a few documents never imports numba (about a second).
KERNELS_FROM_BYTES = 1 << 20


def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()
TRIM_EVERY_S = 2.0  # at most one trim in this many seconds per process
_last_trim = [0.0]


def release_freed_memory() -> None:
    """Hand the heap memory freed since the last trim back to the system, at most once every
    TRIM_EVERY_S seconds per process. glibc keeps freed heap pages, and the encoder's caches and
    a unit's batches come and go in big pieces: without this the resident size creeps up unit
    after unit although nothing is kept. Not after every unit: the next unit then page-faults all
    its memory in again (measured: 10% slower)."""
    now = time.monotonic()
    if _TRIM is not None and now - _last_trim[0] >= TRIM_EVERY_S:
        _last_trim[0] = now
        _TRIM(0)


def _schema(
    unit: WorkUnit, tokenizer: TokenizerBase, task: UnitTask, describe: dict[str, Any]
) -> pa.Schema:
    metadata = {
        "tokenmill.tokenizer.kind": str(describe["kind"]),
        "tokenmill.tokenizer.name": str(describe["name"]),
        "tokenmill.tokenizer.fingerprint": str(describe["fingerprint"]),
        "tokenmill.tokenizer.vocab_size": str(describe["vocab_size"]),
        "tokenmill.unit_id": unit.unit_id,
        "tokenmill.config_hash": task.config_hash,
    }
    return shard_schema(
        tokenizer.vocab_size,
        with_offsets=task.token_offsets,
        with_loss_mask=bool(task.read.chat_template),
        with_input_file=bool(unit.members),
        extra_fields=dict(tokenizer.shard_columns),
        metadata=metadata,
    )


def _tokenize_batches(
    unit: WorkUnit,
    reader: Iterator[DocBatch],
    tokenizer: TokenizerBase,
    task: UnitTask,
    files: UnitFiles,
    counts: UnitCounts,
    times: StageTimes,
) -> int:
    """Stream the unit's batches through the tokenizer into the files; returns the batch count."""
    byte_lengths = tokenizer.token_byte_lengths()
    batch_index = 0
    for batch, encoded in _encoded_batches(unit, reader, tokenizer, task.read.batch_bytes, times):
        counts.docs_read += batch.records
        counts.rejected += len(batch.rejects)
        counts.blank_lines += batch.blank
        files.rejects.write(batch.rejects)
        if not batch.texts:
            continue
        t_tok = time.perf_counter()
        chat = encode_chat(tokenizer, batch) if batch.segments is not None else None
        if chat:
            encoded = chat.encoded
            check_encoded(unit, [batch], encoded, tokenizer)
        elif encoded is None:
            encoded = encoding(
                unit,
                [batch],
                tokenizer,
                lambda b=batch, i=batch_index: tokenizer.encode_for_shard(as_str_list(b.texts), i),
            )
            check_encoded(unit, [batch], encoded, tokenizer)
        t_verify = time.perf_counter()
        times.tokenize_s += t_verify - t_tok
        if task.verify_sample and tokenizer.verifiable:
            verify_sample(
                unit, batch, batch_index, encoded, tokenizer, task.verify_sample, counts, chat
            )
            times.verify_s += time.perf_counter() - t_verify
        if chat:
            encoded.columns[LOSS_MASK] = chat.loss_mask
        _write_batch(batch, encoded, tokenizer, task, byte_lengths, files, counts, times)
        batch_index += 1
    return batch_index


def _encoded_batches(
    unit: WorkUnit,
    reader: Iterator[DocBatch],
    tokenizer: TokenizerBase,
    group_bytes: int,
    times: StageTimes,
) -> Iterator[tuple[DocBatch, EncodedBatch | None]]:
    """(batch, its encoding or None) for each of the reader's batches, in their order. A call of
    the encoder has a fixed cost (gigatoken's about 1 ms) that small documents would pay every
    `batch_docs` of them, so the texts of consecutive plain batches (up to GROUP_DOCS documents or
    `group_bytes` of text) are encoded in one `encode_batch_flat` call and cut back per batch:
    shards are still written batch by batch, byte for byte as before. Only for a tokenizer that
    keeps the base `encode_for_shard` (ids depend on each document alone); None (encode it
    yourself) for its other batches: chats, batches without texts, and every batch of a tokenizer
    with its own `encode_for_shard`."""
    grouped = type(tokenizer).encode_for_shard is TokenizerBase.encode_for_shard
    pending: list[DocBatch] = []
    docs = nbytes = 0
    while True:
        t_read = time.perf_counter()
        batch = next(reader, None)
        times.read_s += time.perf_counter() - t_read
        joins = batch is not None and grouped and bool(batch.texts) and batch.segments is None
        if joins:
            pending.append(batch)
            docs, nbytes = docs + len(batch.texts), nbytes + batch.nbytes
            if docs < GROUP_DOCS and nbytes < group_bytes:
                continue
        if pending:  # full, or the next batch is not one to join, or the unit ends
            yield from _encode_group(unit, pending, tokenizer, times)
            pending, docs, nbytes = [], 0, 0
        if batch is None:
            return
        if not joins:
            yield batch, None


def _encode_group(
    unit: WorkUnit, batches: list[DocBatch], tokenizer: TokenizerBase, times: StageTimes
) -> Iterator[tuple[DocBatch, EncodedBatch]]:
    """The batches with their encodings, from one encoder call over all their texts."""
    t_tok = time.perf_counter()
    texts = joined([b.texts for b in batches])
    if not tokenizer.takes_utf8_texts:
        texts = as_str_list(texts)
    flat, offsets = encoding(unit, batches, tokenizer, lambda: tokenizer.encode_batch_flat(texts))
    check_encoded(unit, batches, EncodedBatch(flat, offsets), tokenizer)
    times.tokenize_s += time.perf_counter() - t_tok
    in_place = utf8_of(texts)  # (the encoder joined them: each batch's texts read from there)
    first = 0
    for batch in batches:
        end = first + len(batch.texts)
        if in_place is not None and isinstance(batch.texts, Utf8Texts):
            batch.texts = Utf8Texts.view(in_place[0], in_place[1][first : end + 1])
        lo, hi = offsets[first], offsets[end]
        yield batch, EncodedBatch(flat[lo:hi], offsets[first : end + 1] - lo)
        first = end


def verify_sample(
    unit: WorkUnit,
    batch: DocBatch,
    batch_index: int,
    encoded: EncodedBatch,
    tokenizer: TokenizerBase,
    share: float,
    counts: UnitCounts,
    chat: ChatEncoded | None = None,
) -> None:
    """Re-encode a deterministic sample of the batch's documents (each kept with probability
    `share`, drawn from a generator seeded by the unit and batch) with the tokenizer's reference;
    a difference fails the unit, naming the document, the first differing position and the
    encoder. A chat document is checked piece by piece (its plain-text pieces: special ids come
    from the template, not the encoder)."""
    seed = int.from_bytes(hashlib.blake2b(f"{unit.unit_id}:{batch_index}".encode()).digest()[:8])
    picked = np.flatnonzero(np.random.default_rng(seed).random(len(batch.texts)) < share)
    if not len(picked):
        return
    if chat is None:
        checks = [(batch.doc_ids[i], batch.texts[i], encoded, i) for i in picked]
    else:
        pieces = np.flatnonzero(np.isin(chat.piece_doc, picked))
        texts, doc_of = chat.pieces.texts, chat.piece_doc
        checks = [(batch.doc_ids[doc_of[j]], texts[j], chat.pieces_encoded, j) for j in pieces]
    reference = tokenizer.reference_encode_batch([text for _, text, _, _ in checks])
    for (doc_id, _, source, i), expected in zip(checks, reference, strict=True):
        got = source.flat[source.offsets[i] : source.offsets[i + 1]]
        if not np.array_equal(got, expected):
            n = min(len(got), len(expected))
            diff = np.flatnonzero(got[:n] != expected[:n])
            at = int(diff[0]) if len(diff) else n
            raise VerificationFailed(
                f"unit {unit.unit_id} ({unit.url}): document {doc_id!r} encoded by "
                f"{tokenizer.describe().get('encoder', tokenizer.kind)} differs from the reference "
                f"at token {at} (got {got[at : at + 3].tolist()}, reference "
                f"{np.asarray(expected)[at : at + 3].tolist()})"
            )
    counts.verified_documents += len(picked)
    counts.verified_bytes += sum(batch.byte_lengths[i] for i in picked)


def _write_batch(
    batch: DocBatch,
    encoded: EncodedBatch,
    tokenizer: TokenizerBase,
    task: UnitTask,
    byte_lengths: np.ndarray,
    files: UnitFiles,
    counts: UnitCounts,
    times: StageTimes,
) -> None:
    """Text statistics, the shard's record batch, unigram counts and sidecar rows of one batch."""
    t_stats = time.perf_counter()
    stats = batch_stats(
        batch.texts,
        encoded.flat,
        encoded.offsets,
        byte_lengths if encoded.byte_lengths is None else encoded.byte_lengths,
        words=task.word_stats,
        want_ends=task.token_offsets,
        n_bytes=np.asarray(batch.byte_lengths, dtype=np.int64),
    )
    t_write = time.perf_counter()
    times.stats_s += t_write - t_stats
    columns = {
        "doc_id": string_array(batch.doc_ids),
        "source": string_array(batch.sources),
        "lang": string_array(batch.langs),
        "tokens": token_column(encoded.flat, encoded.offsets, tokenizer.vocab_size),
        "n_tokens": numeric_array(np.diff(encoded.offsets), pa.int32()),
        "n_bytes": numeric_array(stats.n_bytes, pa.int64()),
        "n_chars": numeric_array(stats.n_chars, pa.int64()),
        "n_words": numeric_array(stats.n_words, pa.int32()),
        # unknown (null) where the tokens' bytes do not add up to the text, and for every
        # document of a lossy tokenizer (its token bytes are not the text's, even where the
        # totals happen to agree)
        "n_continued_words": (
            numeric_array(stats.n_continued_words, pa.int32(), stats.n_continued_words < 0)
            if stats.n_continued_words is not None and tokenizer.lossless
            else pa.nulls(len(batch.texts), pa.int32())
        ),
        "input_offset": optional_ints(batch.input_offsets, pa.int64()),
        **encoded.columns,
    }
    if batch.input_files is not None:
        columns["input_file"] = numeric_array(np.asarray(batch.input_files), pa.int32())
    if task.token_offsets:
        columns["token_offsets"] = list_array(stats.token_ends, encoded.offsets, pa.uint32())
    files.shard.write(columns)
    files.unigrams.add(encoded.flat, encoded.offsets, batch.sources, batch.langs)
    if encoded.sidecar is not None and encoded.sidecar.num_rows:
        files.write_sidecar(encoded.sidecar)
    counts.documents += len(batch.texts)
    counts.tokens += int(encoded.offsets[-1])
    counts.bytes += int(stats.n_bytes.sum())
    counts.chars += int(stats.n_chars.sum())
    counts.words += int(stats.n_words.sum())
    times.write_s += time.perf_counter() - t_write
