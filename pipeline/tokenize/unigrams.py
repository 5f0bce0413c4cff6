"""Token counts per (source, language, token id) of one unit, counted while the tokens are in memory
and committed beside the shard, so that reports never have to unnest every token again."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

UNIGRAMS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("token_id", pa.uint32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ],
    metadata={"tokenmill.schema_version": "1"},
)


class UnigramCounter:
    """Dense per-group counts (vocab_size int64s per distinct (source, lang) of the unit)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.groups: dict[tuple[str | None, str | None], np.ndarray] = {}

    def add(
        self, flat: np.ndarray, offsets: np.ndarray, sources: Sequence, langs: Sequence
    ) -> None:
        keys = list(zip(sources, langs, strict=True))
        distinct = list(dict.fromkeys(keys))
        v = self.vocab_size
        if len(distinct) == 1:
            self._acc(distinct[0], np.bincount(flat, minlength=v))
            return
        index = {k: i for i, k in enumerate(distinct)}
        doc_group = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
        token_group = np.repeat(doc_group, np.diff(offsets))
        counts = np.bincount(token_group * v + flat, minlength=len(distinct) * v).reshape(
            len(distinct), v
        )
        for key, i in index.items():
            self._acc(key, counts[i])

    def _acc(self, key: tuple, counts: np.ndarray) -> None:
        if key in self.groups:
            self.groups[key] += counts
        else:
            self.groups[key] = counts.astype(np.int64, copy=True)

    def table(self) -> pa.Table:
        """Nonzero counts, groups in (source, lang) order, token ids ascending."""
        parts = []
        for source, lang in sorted(self.groups, key=lambda k: (k[0] or "", k[1] or "")):
            counts = self.groups[(source, lang)]
            ids = np.flatnonzero(counts)
            n = len(ids)
            parts.append(
                pa.table(
                    {
                        "source": pa.array([source] * n, pa.string()),
                        "lang": pa.array([lang] * n, pa.string()),
                        "token_id": pa.array(ids.astype(np.uint32)),
                        "count": pa.array(counts[ids]),
                    },
                    schema=UNIGRAMS_SCHEMA,
                )
            )
        return pa.concat_tables(parts) if parts else UNIGRAMS_SCHEMA.empty_table()

    def write(self, path: str) -> None:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, UNIGRAMS_SCHEMA) as writer:
            writer.write_table(self.table())
