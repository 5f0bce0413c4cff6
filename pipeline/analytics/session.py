"""`connect`: committed outputs opened as DuckDB views, in an `AnalyticsSession` that holds the
connection and the record of what it read (the datasets' shard files, and their per-unit token
counts when every unit has them), so a report reads each input itself, once; `export_database`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.analytics.relations import (
    RAW_RELATIONS,
    Files,
    RawRelations,
    runs_rows,
    tokenizer_labels,
)
from pipeline.analytics.sql import DEFAULT_ALPHA, create_views, query, set_parameters, tokenizers
from pipeline.errors import AnalyticsError
from pipeline.output import LedgerEntry, Output, iter_committed


@dataclass(frozen=True)
class AnalyticsSession:
    """A DuckDB connection (`con`) with the views over committed outputs, and what they read.

    `shards` and `unit_counts` are (tokenizer label, filesystem, paths) per dataset (output x
    tokenizer); `unit_counts` is None unless every unit carries its token counts (unigrams/) and
    `connect` was asked to use them. A session over a database file written by export_database
    (`AnalyticsSession(duckdb.connect(path))`) has no files: reports read its own views."""

    con: duckdb.DuckDBPyConnection
    urls: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # the tokenizer label of each dataset, by dataset_id
    shards: Files | None = None
    unit_counts: Files | None = None
    wordless: frozenset[str] = frozenset()  # shard paths of jobs that counted no words
    outputs: tuple[str, ...] = ()  # the output URL of each dataset, by dataset_id

    def shared_labels(self) -> dict[str, list[str]]:
        """Tokenizer labels that several outputs share (their documents are counted together
        under the label), with those outputs."""
        by_label: dict[str, list[str]] = defaultdict(list)
        for label, url in zip(self.labels, self.outputs, strict=False):
            if url not in by_label[label]:
                by_label[label].append(url)
        return {label: urls for label, urls in by_label.items() if len(urls) > 1}

    @property
    def has_precounted_unigrams(self) -> bool:
        """Whether every unit of the connected outputs carries its token counts (unigrams/)."""
        return self.unit_counts is not None

    def query(self, text: str) -> pa.Table:
        """`query(session.con, text)`: the result as an Arrow table."""
        return query(self.con, text)

    def tokenizers(self) -> list[str]:
        """The tokenizer labels, sorted."""
        return tokenizers(self.con)

    def set_parameters(self, *, alpha: float = DEFAULT_ALPHA, baseline: str | None = None) -> None:
        """Set the Renyi alpha and the baseline tokenizer (by label) of the metrics views."""
        set_parameters(self.con, alpha=alpha, baseline=baseline)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> AnalyticsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _datasets(
    urls: list[str], storage_options: dict[str, Any] | None
) -> tuple[list[tuple[Output, list[LedgerEntry]]], list[dict[str, Any]]]:
    """(output, committed entries of one tokenizer) per dataset, in URL then fingerprint order,
    and the rows of every output's run summaries."""
    datasets: list[tuple[Output, list[LedgerEntry]]] = []
    runs: list[dict[str, Any]] = []
    for url in urls:
        output = Output(url, storage_options)
        by_fingerprint: dict[str, list[LedgerEntry]] = defaultdict(list)
        for entry in iter_committed(output):
            by_fingerprint[entry.tokenizer["fingerprint"]].append(entry)
        if not by_fingerprint:
            if not output.exists(""):
                raise AnalyticsError(f"output {output.url} does not exist")
            raise AnalyticsError(
                f"no committed units under {output.url}/ledger: nothing to analyse"
            )
        datasets += [(output, group) for _, group in sorted(by_fingerprint.items())]
        runs += runs_rows(output)
    return datasets, runs


def connect(
    urls: str | Iterable[str],
    storage_options: dict[str, Any] | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    baseline: str | None = None,
    database: str = ":memory:",
    unit_counts: bool = True,
) -> AnalyticsSession:
    """A session whose connection (`.con`) has the views `documents`, `tokens`, `units`,
    `rejects`, `runs`, `merge_batches`, `unigram_counts`, `metrics` and `metrics_by_lang` over
    committed outputs.

    Token counts come from the per-unit counts the engine writes (unigrams/) when every unit has
    them and `unit_counts` is true, else from the shards' token lists (the views unnest them in
    DuckDB; report_tables counts them batch by batch with numpy)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise AnalyticsError("at least one output URL is required")
    con = duckdb.connect(database)
    try:
        datasets, runs = _datasets(urls, storage_options)
        labels = tokenizer_labels([entries[0].tokenizer for _, entries in datasets])
        relations = RawRelations(con, unit_counts=unit_counts)
        for (output, entries), label in zip(datasets, labels, strict=True):
            relations.add(output, label, entries)
        relations.finish(runs)
        create_views(con)
        if relations.complete:  # every unit carries its token counts: never unnest the tokens
            relations.count_views()
        set_parameters(con, alpha=alpha, baseline=baseline)
    except BaseException:
        con.close()
        raise
    return AnalyticsSession(
        con,
        urls=tuple(urls),
        labels=tuple(labels),
        outputs=tuple(output.url for output, _ in datasets),
        shards=relations.shards,
        unit_counts=relations.counted if relations.complete else None,
        wordless=frozenset(relations.wordless),
    )


def export_database(
    urls: str | Iterable[str], path: str, storage_options: dict[str, Any] | None = None
) -> str:
    """Copy the outputs' rows (token lists included) into a DuckDB database file with the same
    views, for the DuckDB CLI (`duckdb PATH`) or any DuckDB client; returns PATH."""
    with connect(urls, storage_options) as session:
        con = session.con
        con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS export_db")
        for name in RAW_RELATIONS:
            con.execute(f"CREATE OR REPLACE TABLE export_db.{name} AS SELECT * FROM {name}")
        con.execute("USE export_db")
        create_views(con)
    return path
