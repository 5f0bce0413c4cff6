"""Where a sample's tokens come from, recomputed from the ledger and the deterministic plan alone
(nothing is logged during training), and the documents a run skips.

A sample's segments: for each document slice in its seq_len + 1 window, the document (doc_id, its
shard and row), the output it came from (`source`, its index in the mixture), the input file
(`url`) and `offset`, the token range within the document's token list in the shard
(`doc_tokens`, [start, end)), the window range ([start, end) of the seq_len + 1 window, BOS and
EOS included: `bos`/`eos` say whether the slice holds them) and the pass (`repeat`).

`offset` is the byte offset of the document's record in its input file when the shard has an
`input_offset` column (int64: the record's first byte in the decompressed file, the same number a
rejects file's `offset` holds). Shards written without it give the byte offset of the document's
*unit* (the ledger's unit start; the row group for Parquet), and `row` (the document's row in its
shard: the row-th document the unit accepted) locates it within the unit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.shards import ShardStore, committed_shards, id_matches
from pipeline.loader.stream import Segments
from pipeline.loader.windows import Epoch, read_windows

OFFSET_COLUMN = "input_offset"  # a shard column of record byte offsets, when the engine writes one
FILE_COLUMN = "input_file"  # a pack's shard: each record's file, an index into its members


def load_skip(skip: str | os.PathLike | Iterable[str] | None) -> frozenset[str] | None:
    """Document ids to skip: an iterable of ids, or a file with one id per line."""
    if skip is None:
        return None
    if isinstance(skip, (str, os.PathLike)):
        try:
            with open(skip, encoding="utf-8") as handle:
                ids = frozenset(line.strip() for line in handle if line.strip())
        except OSError as exc:
            raise LoaderError(f"skip_documents file {skip}: {exc}") from exc
    else:
        ids = frozenset(str(i) for i in skip)
    return ids or None


def record_url(store: Any, shard: Any, row: int) -> str:
    """The input file of a shard's record: its unit's file, or in a pack the member its
    `input_file` names."""
    if not shard.members:
        return shard.url
    files = store.column(shard, FILE_COLUMN)
    return shard.members[files[row].as_py()] if files is not None else shard.url


def sample_segments(epoch: Epoch, index: int) -> list[dict[str, Any]]:
    """The document segments of global sample `index` of `epoch`, in window order."""
    source0 = epoch.sources[0]
    tokens = np.empty((1, source0.window), dtype=np.int64)
    segments = Segments(skips=False)
    read_windows(epoch, index, index + 1, tokens, tokens[:, :0], segments)
    found = []
    for s, repeat, g, rows, _ in segments.parts:
        if g < 0:  # padding
            continue
        source = epoch.sources[s]
        group, lead = source.pass_(repeat).group(g), source.options.lead
        for _, c, n, d, q in rows.tolist():
            if d < 0:
                continue
            shard = group.shards[group.doc_file[d]]
            length, row = int(group.doc_len[d]), int(group.doc_row[d])
            doc_id = source.store.doc_ids(shard)[row].as_py()
            offsets = source.store.column(shard, OFFSET_COLUMN)
            offset = shard.start if offsets is None else offsets[row].as_py()
            found.append(
                {
                    "sample": index,
                    "doc_id": doc_id,
                    "source": s,
                    "url": record_url(source.store, shard, row),
                    "offset": offset,
                    "row": row,
                    "shard": shard.rel,
                    "doc_tokens": [max(q - lead, 0), min(q + n - lead, length)],
                    "window": [c, c + n],
                    "bos": bool(lead and q == 0),
                    "eos": q + n == length + lead + 1,
                    "repeat": repeat,
                    "skipped": bool(source.skip and doc_id in source.skip),
                }
            )
    return sorted(found, key=lambda seg: seg["window"][0])


def find_documents(
    urls: str | list[str],
    ids: str | os.PathLike | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Where documents are, by id (an iterable of ids, or a file of one id a line, as
    `skip_documents` takes them): one dict per copy found, in output then shard order (doc_id,
    source: the output's index, url and offset of its record, row and shard, tokens), and the
    ids found in no output, sorted. Check a skip list with it before training: an id that names
    nothing skips nothing. Reads every committed shard's doc_id column (a remote output's shards
    go through the loader's cache)."""
    wanted = load_skip(ids) or frozenset()
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for source, url in enumerate([urls] if isinstance(urls, str) else list(urls)):
        store = ShardStore(url, storage_options, cache_dir)
        for shard in committed_shards(url, storage_options)[0] if wanted else ():
            doc_ids = store.doc_ids(shard)
            rows = np.flatnonzero(id_matches(doc_ids, wanted))
            if not len(rows):
                continue
            offsets, lengths = store.column(shard, OFFSET_COLUMN), store.lengths(shard)
            for row in rows.tolist():
                doc_id = doc_ids[row].as_py()
                seen.add(doc_id)
                found.append(
                    {
                        "doc_id": doc_id,
                        "source": source,
                        "url": record_url(store, shard, row),
                        "offset": shard.start if offsets is None else offsets[row].as_py(),
                        "row": row,
                        "unit_start": shard.start,  # (Parquet: its first row group; Arrow: the
                        # byte offset of its first record batch; offset is null for both)
                        "shard": shard.rel,
                        "tokens": int(lengths[row]),
                    }
                )
    return found, sorted(wanted - seen)
