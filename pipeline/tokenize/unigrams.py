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
# groups counted in dense rows (vocab_size int64s each); groups after these (a source per
# document, a pack of files each its own source) are counted sparsely, as (group, token) keys
DENSE_GROUPS = 16
SPARSE_MERGE = 1 << 22  # sparse keys held before they are merged (summed) again


class UnigramCounter:
    """Per-group counts of a unit, a group being a distinct (source, lang). The first
    DENSE_GROUPS groups are rows of one dense matrix (vocab_size int64s each, in the order the
    groups first appeared); later ones are sparse counts keyed by group row * vocab_size + token
    id, so memory stays bounded by the unit's tokens however many groups it has (a source per
    document would otherwise take vocab_size * 8 bytes per document)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self._rows: dict[tuple[str | None, str | None], int] = {}
        self._counts = np.zeros((0, vocab_size), dtype=np.int64)
        self._keys: list[np.ndarray] = []  # sparse: keys of each part ...
        self._key_counts: list[np.ndarray] = []  # ... and their counts
        self._merged = True  # the one part (if any) holds sorted unique keys
        self._pending = 0  # sparse keys added since the last merge
        self._held = 0  # keys the last merge left
        self._work: tuple[np.ndarray, np.ndarray] | None = None  # sparse_counts' working space

    @property
    def groups(self) -> dict[tuple[str | None, str | None], np.ndarray]:
        """Each group's dense counts (built for the sparse ones)."""
        return {key: self._dense(row) for key, row in self._rows.items()}

    def _dense(self, row: int) -> np.ndarray:
        if row < DENSE_GROUPS:
            return self._counts[row]
        ids, counts = self._sparse_row(row)
        out = np.zeros(self.vocab_size, dtype=np.int64)
        out[ids] = counts
        return out

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
        if max(doc_row) >= DENSE_GROUPS:
            self._add_split(flat, offsets, np.asarray(doc_row, dtype=np.int64))
            return
        if kernels_wanted(len(flat), KERNEL_MIN_TOKENS):
            from pipeline.tokenize.countkernels import group_counts

            bad = group_counts(  # (checks each id: no pass of its own for the largest)
                flat,
                np.asarray(offsets, dtype=np.int64),
                np.asarray(doc_row, dtype=np.int64),
                self._counts,
            )
            if bad >= 0:
                raise ValueError(f"token id {int(flat[bad])} outside the vocabulary of {v}")
            return
        first = doc_row[0]
        if all(row == first for row in doc_row):
            self._counts[first] += np.bincount(flat, minlength=v)
            return
        token_row = np.repeat(np.asarray(doc_row, dtype=np.int64), np.diff(offsets))
        n = min(len(self._rows), DENSE_GROUPS)  # (later groups are sparse: none in this batch)
        self._counts[:n] += np.bincount(token_row * v + flat, minlength=n * v).reshape(n, v)

    def _add_split(self, flat: np.ndarray, offsets: np.ndarray, doc_row: np.ndarray) -> None:
        """A batch with documents of sparse groups: dense rows by bincount, the rest as keys."""
        v = self.vocab_size
        if len(flat) and int(flat.max()) >= v:
            raise ValueError(f"token id {int(flat.max())} >= vocab_size {v}")
        offsets = np.asarray(offsets, dtype=np.int64)
        token_row = dense = None
        if (doc_row < DENSE_GROUPS).any():
            token_row = np.repeat(doc_row, np.diff(offsets))
            dense = token_row < DENSE_GROUPS
            keys = token_row[dense] * v + flat[dense].astype(np.int64)
            n = min(len(self._rows), DENSE_GROUPS)
            self._counts[:n] += np.bincount(keys, minlength=n * v).reshape(n, v)
        if kernels_wanted(len(flat), KERNEL_MIN_TOKENS):  # a pass with a vocab-sized scratch
            from pipeline.tokenize.countkernels import sparse_counts

            if self._work is None:
                self._work = (np.zeros(v, dtype=np.int64), np.empty(v, dtype=np.int64))
            sparse = np.where(doc_row >= DENSE_GROUPS, doc_row, -1)
            keys, counts = sparse_counts(flat, offsets, sparse, v, *self._work)
            self._merged = False
        else:  # (a sort)
            if token_row is None:
                token_row = np.repeat(doc_row, np.diff(offsets))
                dense = token_row < DENSE_GROUPS
            keys = token_row[~dense] * v + flat[~dense].astype(np.int64)
            keys, counts = np.unique(keys, return_counts=True)
            self._merged = self._merged and not self._keys
        self._keys.append(keys)
        self._key_counts.append(counts.astype(np.int64))
        self._pending += len(keys)
        if self._pending > max(SPARSE_MERGE, self._held):  # (amortized: a merge per doubling)
            self._merge()

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        """The sparse parts summed into one (sorted unique keys, counts)."""
        if len(self._keys) > 1 or not self._merged:
            keys, counts = np.concatenate(self._keys), np.concatenate(self._key_counts)
            order = np.argsort(keys, kind="stable")
            keys, counts = keys[order], counts[order]
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            self._keys, self._key_counts = [keys[starts]], [np.add.reduceat(counts, starts)]
            self._merged = True
        self._pending, self._held = 0, len(self._keys[0]) if self._keys else 0
        if not self._keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self._keys[0], self._key_counts[0]

    def _sparse_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids ascending, counts) of a sparse group."""
        keys, counts = self._merge()
        v = self.vocab_size
        lo, hi = np.searchsorted(keys, [row * v, (row + 1) * v])
        return keys[lo:hi] - row * v, counts[lo:hi]

    def _row(self, key: tuple[str | None, str | None]) -> int:
        """The row of a group, added (zeros) when new (a dense row for the first DENSE_GROUPS)."""
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._rows)
            if row < DENSE_GROUPS and row >= len(self._counts):  # grow by doubling
                size = min(max(4, 2 * len(self._counts)), DENSE_GROUPS)
                grown = np.zeros((size, self.vocab_size), np.int64)
                grown[: len(self._counts)] = self._counts
                self._counts = grown
        return row

    def table(self) -> pa.Table:
        """Nonzero counts, groups in (source, lang) order, token ids ascending."""
        parts = []
        for source, lang in sorted(self._rows, key=lambda k: (k[0] or "", k[1] or "")):
            row = self._rows[(source, lang)]
            if row < DENSE_GROUPS:
                counts = self._counts[row]
                ids = np.flatnonzero(counts)
                found = counts[ids]
            else:
                ids, found = self._sparse_row(row)
            n = len(ids)
            parts.append(
                pa.table(
                    {
                        "source": repeated_string(source, n),
                        "lang": repeated_string(lang, n),
                        "token_id": numeric_array(ids, pa.uint32()),
                        "count": numeric_array(found, pa.int64()),
                    },
                    schema=UNIGRAMS_SCHEMA,
                )
            )
        return pa.concat_tables(parts) if parts else UNIGRAMS_SCHEMA.empty_table()

    def write(self, path: str) -> None:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, UNIGRAMS_SCHEMA) as writer:
            writer.write_table(self.table())
