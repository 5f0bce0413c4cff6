"""Token counts per (source, language, token id) of one unit, counted while the tokens are in memory
and committed beside the shard, so that reports never have to unnest every token again."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.output.shards import numeric_array, repeated_string
from pipeline.tokenize.textstats import kernels_wanted

UNIGRAMS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("token_id", pa.uint32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
    ],
    metadata={"tokenmill.schema_version": "1"},
)


# batches with at least this many tokens are counted by the compiled kernel (textkernels.py), and
# all batches once it is loaded; a tiny job counts with numpy and never imports numba
KERNEL_MIN_TOKENS = 1 << 14


class UnigramCounter:
    """Dense per-group counts (vocab_size int64s per distinct (source, lang) of the unit), rows of
    one matrix in the order the groups first appeared."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self._rows: dict[tuple[str | None, str | None], int] = {}
        self._counts = np.zeros((0, vocab_size), dtype=np.int64)

    @property
    def groups(self) -> dict[tuple[str | None, str | None], np.ndarray]:
        return {key: self._counts[row] for key, row in self._rows.items()}

    def add(
        self, flat: np.ndarray, offsets: np.ndarray, sources: Sequence, langs: Sequence
    ) -> None:
        n = len(sources)
        if n != len(langs):
            raise ValueError(f"{n} sources for {len(langs)} langs")
        if not n:
            return
        if sources.count(sources[0]) == n and langs.count(langs[0]) == n:  # one group (usual)
            doc_row = [self._row((sources[0], langs[0]))] * n
        else:
            keys = list(zip(sources, langs, strict=True))
            rows = self._rows
            doc_row = [rows.get(key) for key in keys]
            if None in doc_row:
                doc_row = [self._row(key) for key in keys]
        v = self.vocab_size
        if kernels_wanted(len(flat), KERNEL_MIN_TOKENS):
            from pipeline.tokenize.textkernels import group_counts

            if len(flat) and int(flat.max()) >= v:
                raise ValueError(f"token id {int(flat.max())} >= vocab_size {v}")
            group_counts(
                flat,
                np.asarray(offsets, dtype=np.int64),
                np.asarray(doc_row, dtype=np.int64),
                self._counts,
            )
            return
        first = doc_row[0]
        if all(row == first for row in doc_row):
            self._counts[first] += np.bincount(flat, minlength=v)
            return
        token_row = np.repeat(np.asarray(doc_row, dtype=np.int64), np.diff(offsets))
        n = len(self._rows)
        self._counts[:n] += np.bincount(token_row * v + flat, minlength=n * v).reshape(n, v)

    def _row(self, key: tuple[str | None, str | None]) -> int:
        """The row of a group, added (zeros) when new."""
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._rows)
            if row >= len(self._counts):  # grow by doubling: rows are never moved otherwise
                grown = np.zeros((max(4, 2 * len(self._counts)), self.vocab_size), np.int64)
                grown[: len(self._counts)] = self._counts
                self._counts = grown
        return row

    def table(self) -> pa.Table:
        """Nonzero counts, groups in (source, lang) order, token ids ascending."""
        parts = []
        for source, lang in sorted(self._rows, key=lambda k: (k[0] or "", k[1] or "")):
            counts = self._counts[self._rows[(source, lang)]]
            ids = np.flatnonzero(counts)
            n = len(ids)
            parts.append(
                pa.table(
                    {
                        "source": repeated_string(source, n),
                        "lang": repeated_string(lang, n),
                        "token_id": numeric_array(ids, pa.uint32()),
                        "count": numeric_array(counts[ids], pa.int64()),
                    },
                    schema=UNIGRAMS_SCHEMA,
                )
            )
        return pa.concat_tables(parts) if parts else UNIGRAMS_SCHEMA.empty_table()

    def write(self, path: str) -> None:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, UNIGRAMS_SCHEMA) as writer:
            writer.write_table(self.table())
