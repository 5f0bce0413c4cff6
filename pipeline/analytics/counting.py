"""What a report reads itself, each input once, into DuckDB temporary tables keyed by integers:
token counts per (tokenizer, source, language, token id) folded from the per-unit count files or
the shards' token lists (`keyed_from_files`), or from a database's own `unigram_counts` view
(`keyed_from_relation`); the unigram statistics per group (`unigram_stats_tables`); and the
per-document counts, without token lists (`documents_from_files`)."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.analytics.relations import Files, damaged
from pipeline.analytics.sql import quote_ident, unigram_stats_sql

KEYED_CHUNK_ROWS = 1 << 22  # per-unit count rows gathered in memory before DuckDB folds them in
TOKEN_MASK = 0xFFFFFFFF
DENSE_CELLS = 1 << 23  # groups x token ids summed in a dense array (64 MB) rather than hashed
DOC_CHUNK_ROWS = 1 << 20  # per-document rows gathered in memory before DuckDB copies them in
DOC_COUNTS = ("n_tokens", "n_bytes", "n_chars", "n_words", "n_continued_words")
DOC_CACHE = ("tokenizer", "doc_id", "source", "lang", *DOC_COUNTS)
# (partial table, final table): by tokenizer x source x language group, by tokenizer x language
KEYED_TABLES = (
    ("_unigram_partial", "_unigram_keyed"),
    ("_unigram_partial_lang", "_unigram_keyed_lang"),
)


def read_columns(
    fs: pafs.FileSystem, path: str, wanted: Sequence[str]
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The record batches of an Arrow IPC file with only the `wanted` columns it has (in that
    order). Off the local disk only those columns' buffers are read (a remote shard's token lists
    are not fetched for its per-document columns); locally the file is memory-mapped, so the
    columns not selected are never touched anyway."""
    try:
        with fs.open_input_file(path) as handle:
            reader = pa.ipc.open_file(handle)
            schema = reader.schema
            cols = [c for c in wanted if c in schema.names]
            if len(cols) < len(schema.names) and not isinstance(fs, pafs.LocalFileSystem):
                fields = [schema.get_field_index(c) for c in cols]
                options = pa.ipc.IpcReadOptions(included_fields=fields)
                reader = pa.ipc.open_file(handle, options=options)
            batches = [reader.get_batch(i).select(cols) for i in range(reader.num_record_batches)]
    except (pa.ArrowInvalid, OSError) as exc:
        raise damaged(path, exc) from None
    return pa.schema([schema.field(c) for c in cols]), batches


def _constant(values: pa.Array, first: Any) -> bool:
    if first is None:
        return values.null_count == len(values)
    return values.null_count == 0 and pc.all(pc.equal(values, first)).as_py()


class KeyedCounts:
    """Token counts folded into `_unigram_keyed` (k = group id << 32 | token id, n),
    `_unigram_keyed_lang` (the same by tokenizer x language group) and `_unigram_group_names`.

    Grouping 4-tuples with two strings costs DuckDB several times more than one integer key, and
    the strings repeat within a file, so each batch's (source, lang) pairs are numbered here from
    their dictionaries; rows reach DuckDB in chunks of about KEYED_CHUNK_ROWS, which bounds memory,
    and DuckDB sums them by key."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.groups: dict[tuple[str, str | None, str | None], int] = {}
        self.lang_groups: dict[tuple[str, str | None], int] = {}
        self.keys: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.pending = self.flushes = 0
        for partial, _ in KEYED_TABLES:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {partial} (k UBIGINT, n DOUBLE)")

    def _insert(self, table: str, gid: np.ndarray, token: np.ndarray, n: np.ndarray) -> None:
        """Rows (gid << 32 | token, n) summed by key into `table`."""
        width = int(token.max()) + 1 if len(token) else 1
        if len(token) and (int(gid.max()) + 1) * width <= DENSE_CELLS:
            # few groups x a vocabulary: sum by direct addressing, as np.bincount does
            summed = np.bincount(gid.astype(np.int64) * width + token.astype(np.int64), weights=n)
            cells = np.flatnonzero(summed)
            high = (cells // width).astype(np.uint64) << np.uint64(32)
            chunk = pa.table({"k": high | (cells % width).astype(np.uint64), "n": summed[cells]})
            select = "SELECT k, n FROM _unigram_chunk"
        else:
            chunk = pa.table({"k": (gid.astype(np.uint64) << np.uint64(32)) | token, "count": n})
            select = "SELECT k, sum(count)::DOUBLE FROM _unigram_chunk GROUP BY k"
        self.con.register("_unigram_chunk", chunk)
        self.con.execute(f"INSERT INTO {table} {select}")
        self.con.unregister("_unigram_chunk")

    def flush(self) -> None:
        """The gathered rows into both partial tables."""
        k, n = np.concatenate(self.keys), np.concatenate(self.counts)
        gid, token = k >> np.uint64(32), k & np.uint64(TOKEN_MASK)
        self._insert("_unigram_partial", gid, token, n)
        lang_of = np.array([self.lang_groups[(g[0], g[2])] for g in self.groups], dtype=np.uint64)
        lang_gid = lang_of[gid.astype(np.int64)] if len(gid) else gid
        self._insert("_unigram_partial_lang", lang_gid, token, n)
        self.keys, self.counts, self.pending = [], [], 0
        self.flushes += 1

    def group_ids(self, label: str, source: pa.Array, lang: pa.Array) -> np.ndarray | int:
        """The group id of every row, or one id when the batch holds a single (source, lang), as
        the engine writes them (one record batch per group)."""
        groups, lang_groups = self.groups, self.lang_groups
        s0, l0 = source[0].as_py(), lang[0].as_py()
        if _constant(source, s0) and _constant(lang, l0):
            lang_groups.setdefault((label, l0), len(lang_groups))
            return groups.setdefault((label, s0, l0), len(groups))
        src = pc.dictionary_encode(source, null_encoding="encode")
        lng = pc.dictionary_encode(lang, null_encoding="encode")
        src_names, lang_names = src.dictionary.to_pylist(), lng.dictionary.to_pylist()
        for l_name in lang_names:
            lang_groups.setdefault((label, l_name), len(lang_groups))
        gid = np.array(
            [
                [groups.setdefault((label, a, b), len(groups)) for b in lang_names]
                for a in src_names
            ],
            dtype=np.uint64,
        ).reshape(len(src_names), len(lang_names))
        return gid[src.indices.to_numpy(), lng.indices.to_numpy()]

    def add(self, gid: np.ndarray | int, tokens: np.ndarray, n: np.ndarray) -> None:
        self.keys.append(
            (np.asarray(gid, dtype=np.uint64) << np.uint64(32)) | tokens.astype(np.uint64)
        )
        self.counts.append(n)
        self.pending += len(n)

    def count_tokens(self, gid: np.ndarray | int, lists: pa.Array) -> None:
        """Token counts of one shard batch, per group, by direct addressing (np.bincount)."""
        flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
        if not len(flat):
            return
        width = int(flat.max()) + 1
        if isinstance(gid, int):
            n = np.bincount(flat, minlength=width)
            ids = np.flatnonzero(n)
            self.add(gid, ids, n[ids])
            return
        local, inverse = np.unique(gid, return_inverse=True)
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        n = np.bincount(np.repeat(inverse, lengths) * width + flat)
        cells = np.flatnonzero(n)
        self.add(local[cells // width], cells % width, n[cells])

    def read(self, label: str, fs: pafs.FileSystem, path: str, from_shards: bool) -> None:
        """One per-unit count file, or (`from_shards`) one shard's token lists."""
        wanted = (
            ("source", "lang", "tokens") if from_shards else ("source", "lang", "token_id", "count")
        )
        _, batches = read_columns(fs, path, wanted)
        for batch in batches:
            if not batch.num_rows:
                continue
            gid = self.group_ids(label, batch.column("source"), batch.column("lang"))
            if from_shards:
                self.count_tokens(gid, batch.column("tokens"))
            else:
                tokens, n = batch.column("token_id").to_numpy(), batch.column("count").to_numpy()
                self.add(gid, tokens, n)
        if self.pending >= KEYED_CHUNK_ROWS:
            self.flush()

    def finish(self) -> None:
        """The final keyed tables (summed by key) and `_unigram_group_names`."""
        con = self.con
        if self.pending or not self.flushes:
            if not self.keys:
                self.keys, self.counts = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
            self.flush()
        for partial, final in KEYED_TABLES:
            if self.flushes == 1:  # already summed by key
                con.execute(f"ALTER TABLE {partial} RENAME TO {final}")
            else:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {final} AS "
                    f"SELECT k, sum(n) AS n FROM {partial} GROUP BY k"
                )
                con.execute(f"DROP TABLE {partial}")
        groups, lang_groups = self.groups, self.lang_groups
        names = pa.table(
            {
                "gid": pa.array(list(groups.values()), pa.int64()),
                "tokenizer": [g[0] for g in groups],
                "source": [g[1] for g in groups],
                "lang": [g[2] for g in groups],
                "lang_gid": pa.array([lang_groups[(g[0], g[2])] for g in groups], pa.int64()),
            }
        )
        con.register("_unigram_names_arrow", names)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _unigram_group_names AS "
            "SELECT * FROM _unigram_names_arrow"
        )
        con.unregister("_unigram_names_arrow")


def keyed_from_files(
    con: duckdb.DuckDBPyConnection, sources: Files, from_shards: bool = False
) -> None:
    """The keyed count tables (see KeyedCounts) from the per-unit count files, or
    (`from_shards`) from the shards' token lists, counted per record batch."""
    counts = KeyedCounts(con)
    for label, fs, paths in sources:
        for path in paths:
            counts.read(label, fs, path, from_shards)
    counts.finish()


def keyed_from_relation(con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """`_unigram_keyed`, `_unigram_keyed_lang` and `_unigram_group_names` from a relation of
    (dataset_id, source, lang, token_id, n) rows (the `unigram_counts` view of a database written
    by export_database)."""
    rel = quote_ident(relation)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_group_names AS "
        "SELECT (row_number() OVER (ORDER BY tokenizer, source, lang) - 1)::BIGINT AS gid, "
        "tokenizer, source, lang, "
        "(dense_rank() OVER (ORDER BY tokenizer, lang) - 1)::BIGINT AS lang_gid "
        f"FROM (SELECT DISTINCT o.tokenizer, u.source, u.lang FROM {rel} u "
        "JOIN _outputs o USING (dataset_id))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_keyed AS "
        "SELECT (g.gid::UBIGINT << 32) | u.token_id::UBIGINT AS k, sum(u.n)::DOUBLE AS n "
        f"FROM {rel} u JOIN _outputs o USING (dataset_id) JOIN _unigram_group_names g "
        "ON g.tokenizer = o.tokenizer AND g.source IS NOT DISTINCT FROM u.source "
        "AND g.lang IS NOT DISTINCT FROM u.lang GROUP BY ALL"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_keyed_lang AS "
        f"SELECT (g.lang_gid::UBIGINT << 32) | (u.k & {TOKEN_MASK}) AS k, sum(u.n) AS n "
        "FROM _unigram_keyed u JOIN _unigram_group_names g ON g.gid = (u.k >> 32)::BIGINT "
        "GROUP BY 1"
    )


def unigram_stats_tables(con: duckdb.DuckDBPyConnection) -> None:
    """`_unigram_stats_source` and `_unigram_stats_lang` (tokenizer, [source,] lang, types,
    entropy, renyi_entropy, unigram_bits) from `_unigram_keyed` and `_unigram_keyed_lang`
    (k = language group id << 32 | token id), grouped on integer keys only."""
    by_gid = unigram_stats_sql("gid", "(SELECT (k >> 32)::BIGINT AS gid, n FROM _unigram_keyed)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_stats_source AS "
        "SELECT g.tokenizer, g.source, g.lang, s.* EXCLUDE (gid) "
        f"FROM ({by_gid}) s JOIN _unigram_group_names g USING (gid)"
    )
    by_lang = unigram_stats_sql(
        "lang_gid", "(SELECT (k >> 32)::BIGINT AS lang_gid, n FROM _unigram_keyed_lang)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _unigram_stats_lang AS "
        "SELECT g.tokenizer, g.lang, s.* EXCLUDE (lang_gid) "
        f"FROM ({by_lang}) s JOIN (SELECT DISTINCT lang_gid, tokenizer, lang "
        "FROM _unigram_group_names) g USING (lang_gid)"
    )


def documents_from_files(
    con: duckdb.DuckDBPyConnection, sources: Files, wordless: AbstractSet[str] = frozenset()
) -> None:
    """`_documents_cache` (DOC_CACHE columns) from the shards, read with pyarrow (the per-document
    columns only; token lists are never touched; n_words NULL in the `wordless` shards, whose
    jobs counted no words). The repeating strings reach DuckDB
    dictionary-encoded, which DuckDB ingests several times faster than plain strings, in chunks of
    about DOC_CHUNK_ROWS rows."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _documents_cache (tokenizer VARCHAR, doc_id VARCHAR, "
        "source VARCHAR, lang VARCHAR, " + ", ".join(f"{c} BIGINT" for c in DOC_COUNTS) + ")"
    )
    pending: list[pa.Table] = []
    rows = 0
    wanted = ("doc_id", "source", "lang", *DOC_COUNTS)
    for label, fs, paths in sources:
        for path in paths:
            schema, batches = read_columns(fs, path, wanted)
            table = pa.Table.from_batches(batches, schema)
            if path in wordless:
                table = table.drop_columns(["n_words"])
            for name in wanted:
                if name not in table.schema.names:
                    table = table.append_column(name, pa.nulls(table.num_rows, pa.int64()))
            pending.append(table.append_column("tokenizer", pa.repeat(label, table.num_rows)))
            rows += table.num_rows
            if rows >= DOC_CHUNK_ROWS:
                _insert_documents(con, pending)
                pending, rows = [], 0
    _insert_documents(con, pending)


def _insert_documents(con: duckdb.DuckDBPyConnection, tables: list[pa.Table]) -> None:
    """Per-document rows into `_documents_cache`, the strings dictionary-encoded."""
    if not tables:
        return
    chunk = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    for name in ("tokenizer", "source", "lang"):
        index = chunk.schema.get_field_index(name)
        encoded = pc.dictionary_encode(chunk.column(name).cast(pa.string()))
        chunk = chunk.set_column(index, name, encoded)
    con.register("_documents_chunk", chunk)
    con.execute(f"INSERT INTO _documents_cache SELECT {', '.join(DOC_CACHE)} FROM _documents_chunk")
    con.unregister("_documents_chunk")
