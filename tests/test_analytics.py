"""Analytics: DuckDB views over committed outputs, every metric exactly on hand-made shards, reports
with charts over local and s3:// outputs, `compare` through the engine, and quoting of odd names."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from jobs.cli import main as cli
from pipeline.analytics import (
    AnalyticsError,
    build_report,
    connect,
    export_database,
    metrics_sql,
    render,
    report_tables,
)
from pipeline.output.shards import ShardWriter, file_checksum, token_column
from schemas.records import LedgerEntry, WorkUnit
from schemas.shards import SCHEMA_VERSION, TOKENMILL_VERSION, shard_schema

from .helpers import LANGS, REPO

INJECTION = "x'; DROP TABLE documents; --"
ODD_NAME = "b\"'; DROP VIEW documents; --"


def write_output(
    root: Path,
    name: str,
    vocab_size: int,
    docs: list[dict],
    sidecar: pa.Table | None = None,
    batch_ids: list[int] | None = None,
) -> str:
    """A committed output with one shard holding `docs` (known tokens and counts) and its ledger
    entry."""
    import numpy as np

    tok = {"kind": "test", "name": name, "fingerprint": f"fp-{name}", "vocab_size": vocab_size}
    meta = {f"tokenmill.tokenizer.{k}": str(v) for k, v in tok.items()}
    extra = {"batch_id": pa.int64()} if batch_ids is not None else None
    schema = shard_schema(vocab_size, extra_fields=extra, metadata=meta)
    (root / "shards").mkdir(parents=True)
    (root / "ledger").mkdir()
    flat = np.array([t for d in docs for t in d["tokens"]], dtype=np.int64)
    offsets = np.cumsum([0] + [len(d["tokens"]) for d in docs])
    cont = [d.get("cont") for d in docs]
    columns = {
        "doc_id": pa.array([d["id"] for d in docs]),
        "source": pa.array([d["source"] for d in docs]),
        "lang": pa.array([d["lang"] for d in docs]),
        "tokens": token_column(flat, offsets, vocab_size),
        "n_tokens": pa.array([len(d["tokens"]) for d in docs], pa.int32()),
        "n_bytes": pa.array([d["bytes"] for d in docs], pa.int64()),
        "n_chars": pa.array([d["chars"] for d in docs], pa.int64()),
        "n_words": pa.array([d["words"] for d in docs], pa.int32()),
        "n_continued_words": pa.array(cont, pa.int32()),
    }
    if batch_ids is not None:
        columns["batch_id"] = pa.array(batch_ids, pa.int64())
    writer = ShardWriter(str(root / "shards" / "u1.arrow"), schema)
    writer.write(columns)
    writer.close()
    files = {}
    if sidecar is not None:
        (root / "sidecar").mkdir()
        with (
            pa.OSFile(str(root / "sidecar" / "u1.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, sidecar.schema) as w,
        ):
            w.write_table(sidecar)
        files = {"sidecar": "sidecar/u1.arrow"}
        files["sidecar_checksum"] = file_checksum(str(root / files["sidecar"]))
    entry = LedgerEntry(
        unit_id="u1",
        unit=WorkUnit(url="mem://corpus", fmt="jsonl", compression=None, start=0, end=-1, size=0),
        config_hash="c0ffee",
        shard="shards/u1.arrow",
        shard_checksum=file_checksum(str(root / "shards" / "u1.arrow")),
        docs_read=len(docs),
        documents=len(docs),
        rejected=0,
        tokens=int(offsets[-1]),
        bytes=sum(d["bytes"] for d in docs),
        chars=sum(d["chars"] for d in docs),
        words=sum(d["words"] for d in docs),
        tokenizer=tok,
        schema_version=SCHEMA_VERSION,
        tokenmill_version=TOKENMILL_VERSION,
        **files,
    )
    (root / "ledger" / "u1.json").write_text(json.dumps(entry.to_json()))
    return str(root)


def doc(id_, source, lang, tokens, nbytes, chars, words, cont):
    return {
        "id": id_,
        "source": source,
        "lang": lang,
        "tokens": tokens,
        "bytes": nbytes,
        "chars": chars,
        "words": words,
        "cont": cont,
    }


@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory):
    """The same four documents under tokenizer A (vocab 8, uint16) and B (vocab 70000, uint32)."""
    root = tmp_path_factory.mktemp("fixed")
    a = write_output(
        root / "a",
        "A",
        8,
        [
            doc("d1", "web", "en", [1, 2, 1, 3], 12, 12, 3, 1),
            doc("d2", "web", "en", [1, 1], 6, 6, 2, 0),
            doc("d3", INJECTION, "de", [4, 5, 6], 10, 9, 2, None),
            doc("d4", "news", "en", [2], 2, 2, 1, 0),
        ],
    )
    b = write_output(
        root / "b",
        ODD_NAME,
        70000,
        [
            doc("d1", "web", "en", [65536, 7], 12, 12, 3, 0),
            doc("d2", "web", "en", [9], 6, 6, 2, 0),
            doc("d3", INJECTION, "de", [100, 100], 10, 9, 2, None),
            doc("d4", "news", "en", [7, 7], 2, 2, 1, 1),
        ],
    )
    return a, b


def rows_by_group(table: pa.Table, keys: tuple[str, ...]) -> dict[tuple, dict]:
    return {tuple(r[k] for k in ("tokenizer", *keys)): r for r in table.to_pylist()}


def entropy(counts):
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts)


def renyi(counts, a):
    n = sum(counts)
    return math.log(sum((c / n) ** a for c in counts)) / (1 - a)


def test_renyi_reference_stream_gives_the_published_efficiencies(tmp_path):
    # "pick @@ed pick @@l @@ed pick @@les": pick=1, @@ed=2, @@l=3, @@les=4
    url = write_output(
        tmp_path / "ref", "ref", 10, [doc("r", "s", "en", [1, 2, 1, 3, 2, 1, 4], 29, 29, 3, 2)]
    )
    row = connect(url).query("SELECT * FROM metrics").to_pylist()[0]
    assert row["renyi_efficiency_observed"] == pytest.approx(0.826506, abs=1e-6)
    assert row["shannon_efficiency_observed"] == pytest.approx(0.921185, abs=1e-6)
    assert row["types"] == 4 and row["vocab_size"] == 10
    assert row["renyi_efficiency"] == pytest.approx(renyi([3, 2, 1, 1], 2.5) / math.log(10))
    assert row["shannon_efficiency"] == pytest.approx(entropy([3, 2, 1, 1]) / math.log(10))
    row3 = connect(url, alpha=3.0).query("SELECT * FROM metrics").to_pylist()[0]
    assert row3["renyi_efficiency_observed"] == pytest.approx(
        renyi([3, 2, 1, 1], 3.0) / math.log(4)
    )


def test_every_metric_per_tokenizer_source_and_language_matches_hand_computation(two_tokenizers):
    session = connect(list(two_tokenizers), baseline="A")
    got = rows_by_group(session.query("SELECT * FROM metrics"), ("source", "lang"))
    assert len(got) == 6
    a = got[("A", "web", "en")]
    assert (a["documents"], a["bytes"], a["chars"], a["words"], a["tokens"]) == (2, 18, 18, 5, 6)
    assert a["fertility"] == pytest.approx(6 / 5)
    assert a["continued_word_share"] == pytest.approx(1 / 5)
    assert (a["bytes_per_token"], a["chars_per_token"]) == (3.0, 3.0)
    assert a["normalized_length"] == 1.0 and a["baseline_documents"] == 2
    assert (a["vocab_size"], a["types"]) == (8, 3)
    assert a["shannon_efficiency"] == pytest.approx(entropy([4, 1, 1]) / math.log(8))
    assert a["shannon_efficiency_observed"] == pytest.approx(entropy([4, 1, 1]) / math.log(3))
    assert a["renyi_efficiency"] == pytest.approx(renyi([4, 1, 1], 2.5) / math.log(8))
    assert a["renyi_efficiency_observed"] == pytest.approx(renyi([4, 1, 1], 2.5) / math.log(3))
    assert a["bits_per_byte"] == pytest.approx((4 * math.log2(6 / 4) + 2 * math.log2(6)) / 18)
    assert a["vocab_share"] == pytest.approx(3 / 8)
    assert a["types_per_million"] == pytest.approx(3 / 6 * 1e6)
    assert (a["p50_tokens"], a["p90_tokens"], a["p99_tokens"], a["max_tokens"]) == pytest.approx(
        (3.0, 3.8, 3.98, 4)
    )

    b = got[(ODD_NAME, "web", "en")]
    assert (b["tokens"], b["types"], b["vocab_size"]) == (3, 3, 70000)
    assert b["normalized_length"] == pytest.approx(3 / 6)
    assert b["fertility"] == pytest.approx(3 / 5) and b["continued_word_share"] == 0
    assert b["shannon_efficiency_observed"] == pytest.approx(1.0)
    assert b["renyi_efficiency_observed"] == pytest.approx(1.0)
    assert b["shannon_efficiency"] == pytest.approx(math.log(3) / math.log(70000))
    assert b["bits_per_byte"] == pytest.approx(3 * math.log2(3) / 18)

    odd_a = got[("A", INJECTION, "de")]  # n_continued_words unknown (null) for every document
    assert odd_a["continued_word_share"] is None
    assert odd_a["bytes_per_token"] == pytest.approx(10 / 3) and odd_a["chars_per_token"] == 3.0
    odd_b = got[(ODD_NAME, INJECTION, "de")]  # one token type: observed |V| = 1 has no log
    assert odd_b["types"] == 1 and odd_b["shannon_efficiency"] == 0.0
    assert odd_b["shannon_efficiency_observed"] is None and odd_b["bits_per_byte"] == 0.0
    assert odd_b["normalized_length"] == pytest.approx(2 / 3)


def test_language_rollup_pools_sources_and_the_baseline_can_change(two_tokenizers):
    session = connect(list(two_tokenizers))
    got = rows_by_group(session.query("SELECT * FROM metrics_by_lang"), ("lang",))
    a_en = got[("A", "en")]  # d1, d2, d4: token counts 1->4, 2->2, 3->1
    assert (a_en["documents"], a_en["tokens"], a_en["words"], a_en["types"]) == (3, 7, 6, 3)
    assert a_en["shannon_efficiency"] == pytest.approx(entropy([4, 2, 1]) / math.log(8))
    assert a_en["normalized_length"] is None  # no baseline chosen
    session.set_parameters(baseline=ODD_NAME)
    got = rows_by_group(session.query("SELECT * FROM metrics_by_lang"), ("lang",))
    assert got[("A", "en")]["normalized_length"] == pytest.approx(7 / 5)
    assert got[(ODD_NAME, "en")]["normalized_length"] == 1.0


def test_normalized_length_matches_documents_whose_ids_repeat_across_files(tmp_path):
    """Per-file row numbers as ids: the same doc_id in two files. Joined on doc_id alone, each
    took an arbitrary baseline count (the baseline against itself: 1.64, not 1.0). Documents
    match on doc_id, source (a file's name by default) and text bytes; a key the baseline holds
    twice with two token counts matches nothing rather than a wrong one."""

    def docs(a: list[int], b: list[int], c: list[int], c2: list[int]) -> list[dict]:
        return [
            doc("0", "a.jsonl", "en", a, 26, 26, 6, 0),
            doc("0", "b.jsonl", "en", b, 71, 71, 13, 0),
            doc("7", "c.jsonl", "en", c, 5, 5, 1, 0),
            doc("7", "c.jsonl", "en", c2, 5, 5, 1, 0),  # (ambiguous in the baseline: excluded)
        ]

    base = write_output(tmp_path / "base", "base", 100, docs([1] * 6, [2] * 30, [3], [3, 4]))
    other = write_output(tmp_path / "other", "other", 100, docs([1] * 7, [2] * 31, [3], [3]))
    session = connect([base, other], baseline="base")
    got = rows_by_group(session.query("SELECT * FROM metrics_by_lang"), ("lang",))
    assert got[("base", "en")]["normalized_length"] == 1.0
    assert got[("other", "en")]["normalized_length"] == pytest.approx(38 / 36)
    assert got[("other", "en")]["baseline_documents"] == 2


def test_two_outputs_of_the_baseline_holding_the_same_documents_still_match(tmp_path):
    """Two outputs of one tokenizer (one label) over the same documents: every key of the
    baseline was held twice, so normalized_length went NULL for every tokenizer without a word.
    A key whose baseline documents agree on their token count matches; the report says the
    outputs are counted together, and a baseline that matches nothing says 0, not NULL."""
    from pipeline.analytics.report import build_report

    def docs(n: int) -> list[dict]:
        return [doc("1", "a.jsonl", "en", [1] * n, 20, 20, 4, 0)]

    base1 = write_output(tmp_path / "b1", "base", 100, docs(5))
    base2 = write_output(tmp_path / "b2", "base", 100, docs(5))
    other = write_output(tmp_path / "o", "other", 100, docs(4))
    stray = write_output(tmp_path / "s", "stray", 100, [doc("9", "z.jsonl", "en", [1], 3, 3, 1, 0)])
    report = build_report([base1, base2, other, stray], baseline="base", charts=False)
    got = rows_by_group(report.tables["by_lang"], ("lang",))
    assert got[("other", "en")]["normalized_length"] == pytest.approx(4 / 5)
    assert got[("base", "en")]["documents"] == 2 and got[("base", "en")]["normalized_length"] == 1
    assert got[("stray", "en")]["baseline_documents"] == 0
    assert any(f"{base1}, {base2}" in note and "'base'" in note for note in report.notes())
    empty = write_output(tmp_path / "e", "empty", 100, [doc("5", "e.jsonl", "en", [], 0, 0, 0, 0)])
    got = rows_by_group(build_report([empty], charts=False).tables["by_lang"], ("lang",))
    assert (got[("empty", "en")]["types"], got[("empty", "en")]["vocab_share"]) == (0, 0)


def test_names_with_quotes_are_plain_strings_never_sql(two_tokenizers):
    session = connect(list(two_tokenizers), baseline=ODD_NAME)
    con = session.con
    assert con.execute(
        "SELECT count(*) FROM documents WHERE source = ?", [INJECTION]
    ).fetchone() == (2,)
    with pytest.raises(AnalyticsError, match="not in these outputs"):
        session.set_parameters(baseline="A'; DROP VIEW documents; --")
    with pytest.raises(AnalyticsError, match="cannot group"):
        metrics_sql(("source; DROP VIEW documents",))
    assert con.execute("SELECT count(*) FROM documents").fetchone() == (8,)
    result = CliRunner().invoke(
        cli,
        [
            "sql",
            *two_tokenizers,
            "--format",
            "json",
            "SELECT DISTINCT source FROM documents ORDER BY source",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [r["source"] for r in json.loads(result.output)] == ["news", "web", INJECTION]


def test_views_expose_documents_tokens_units_rejects_runs_lazily(two_tokenizers):
    con = connect(list(two_tokenizers)).con
    assert con.execute("SELECT count(*), sum(n_tokens) FROM documents").fetchone() == (8, 17)
    assert con.execute("SELECT count(*) FROM tokens").fetchone() == (17,)
    assert con.execute(
        "SELECT list(token_id ORDER BY position) FROM tokens WHERE doc_id = 'd1' "
        "AND tokenizer = 'A'"
    ).fetchone() == ([1, 2, 1, 3],)
    assert con.execute("SELECT max(token_id) FROM tokens").fetchone() == (65536,)  # uint16+uint32
    assert con.execute("SELECT count(*), sum(tokens) FROM units").fetchone() == (2, 17)
    assert con.execute("SELECT count(*) FROM rejects").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM merge_batches").fetchone() == (0,)


def test_dynamic_merge_batch_statistics_come_from_the_sidecar(tmp_path):
    sidecar = pa.table(
        {
            "batch_id": [0, 0, 1],
            "new_id": pa.array([None, 8, None], pa.uint32()),
            "base_ids": pa.array([None, [1, 2], None], pa.list_(pa.uint32())),
            "l0": [10, None, 6],
            "lm": [7, None, 6],
            "lword": [4, None, 3],
            "n_docs": [1, None, 1],
            "n_merges": [1, None, 0],
        }
    )
    url = write_output(
        tmp_path / "dm",
        "dm",
        9,
        [doc("d1", "s", "en", [8, 8, 3], 9, 9, 2, 1), doc("d2", "s", "en", [1, 2], 5, 5, 1, 1)],
        sidecar=sidecar,
        batch_ids=[0, 1],
    )
    con = connect(url).con
    rows = con.execute(
        "SELECT batch_id, l0, lm, lword, reduction_pct, absolute_reduction_pct "
        "FROM merge_batches ORDER BY batch_id"
    ).fetchall()
    assert rows == [(0, 10, 7, 4, 50.0, 30.0), (1, 6, 6, 3, 0.0, 0.0)]
    assert con.execute("SELECT list(batch_id ORDER BY doc_id) FROM documents").fetchone() == (
        [0, 1],
    )
    merge = build_report(url, charts=False).tables["merge"].to_pylist()[0]
    assert (merge["l0"], merge["lm"], merge["lword"]) == (16, 13, 7)
    assert merge["reduction_pct"] == pytest.approx(100 * 3 / 9)


def test_empty_or_missing_output_is_a_clear_error(tmp_path):
    with pytest.raises(AnalyticsError, match="nothing does not exist"):
        connect(str(tmp_path / "nothing"))
    (tmp_path / "empty" / "ledger").mkdir(parents=True)
    with pytest.raises(AnalyticsError, match="no committed units"):
        connect(str(tmp_path / "empty"))


@pytest.fixture(scope="module")
def compared(ray_session, tmp_path_factory, sample_dir, bpe_path, sp_path):
    """`tokenmill compare` with BPE and SentencePiece over the sample corpus."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = CliRunner().invoke(
        cli,
        [
            "compare",
            "--input",
            str(sample_dir / "*.jsonl"),
            "--tokenizer",
            f"bpe:{bpe_path}",
            "--tokenizer",
            f"sentencepiece:{sp_path}",
            "--output",
            str(out),
            "--format",
            "json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_compare_of_two_tokenizer_files_of_one_name_reports_against_the_first(
    ray_session, tmp_path, sample_dir, bpe_path
):
    """Two `tokenizer.json` from two model folders: together they are labelled name#fingerprint,
    and the default baseline was the first one's label worked out alone (its plain name), so
    compare did all the work and then failed without a report."""
    from tokenizers_impl import load_tokenizer

    for folder, size in (("a", 300), ("b", 400)):
        (tmp_path / folder).mkdir()
        texts = [json.loads(line)["text"] for line in (sample_dir / "de.jsonl").open()]
        trained = load_tokenizer(f"bpe:{bpe_path}").train(texts, vocab_size=size)
        trained.save(str(tmp_path / folder / "tokenizer.json"))
    out = tmp_path / "cmp"
    flags = ["compare", "--input", str(sample_dir / "de.jsonl"), "--output", str(out)]
    for folder in ("a", "b"):
        flags += ["--tokenizer", f"bpe:{tmp_path / folder / 'tokenizer.json'}"]
    result = CliRunner().invoke(cli, [*flags, "--format", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    labels = sorted({r["tokenizer"] for r in report["by_lang"]})
    assert len(labels) == 2 and all(t.startswith("tokenizer.json#") for t in labels)
    first = next(r for r in report["by_lang"] if r["normalized_length"] == 1.0)
    assert report["baseline"] == first["tokenizer"]


def test_compare_gives_one_row_per_tokenizer_and_language(compared):
    out, report = compared
    rows = report["by_lang"]
    assert sorted((r["tokenizer"], r["lang"]) for r in rows) == sorted(
        (t, lang) for t in ("bpe-8k.json", "sp-4k.model") for lang in LANGS
    )
    assert report["baseline"] == "bpe-8k.json"
    for row in rows:
        assert row["documents"] > 0 and row["tokens"] > 0 and row["words"] > 0
        assert row["bytes_per_token"] == pytest.approx(row["bytes"] / row["tokens"])
        if row["tokenizer"] == "bpe-8k.json":
            assert row["normalized_length"] == 1.0
        else:
            assert 0.3 < row["normalized_length"] < 3
    assert sorted(p.name for p in out.iterdir()) == [
        "0-bpe-bpe-8k",
        "1-sentencepiece-sp-4k",
        "report",
    ]


def test_html_report_of_a_local_output_embeds_its_charts(compared, tmp_path):
    out, _ = compared
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(out / "0-bpe-bpe-8k"),
            str(out / "1-sentencepiece-sp-4k"),
            "--baseline",
            "sp-4k.model",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Per tokenizer x language" in result.stdout and "sp-4k.model" in result.stdout
    page = (tmp_path / "r" / "report.html").read_text()
    images = page.count("src='data:image/png;base64,")
    assert images == 3
    first = page.split("data:image/png;base64,", 1)[1].split("'", 1)[0]
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "r" / "report.md").read_text()
    for chart in ("bytes_per_token.png", "length_histogram.png", "vocab_use.png"):
        assert f"]({chart})" in markdown and (tmp_path / "r" / chart).read_bytes()[:4] == b"\x89PNG"


def test_report_over_an_s3_output_matches_the_local_one(compared, s3):
    out, report = compared
    s3.create_bucket("analytics")
    fs = s3.filesystem()
    local = out / "1-sentencepiece-sp-4k"
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"analytics/sp/{path.relative_to(local)}")
    remote = build_report("s3://analytics/sp", s3.storage_options, charts=False)
    local_rows = [
        {**r, "normalized_length": None, "baseline_documents": None}
        for r in report["by_lang"]
        if r["tokenizer"] == "sp-4k.model"
    ]
    remote_rows = remote.tables["by_lang"].to_pylist()
    assert [sorted(r) for r in remote_rows] == [sorted(r) for r in local_rows]
    for got, want in zip(remote_rows, local_rows, strict=True):  # float sums may differ in order
        assert got == {
            k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in want.items()
        }
    assert json.loads(render(remote, "json"))["outputs"] == ["s3://analytics/sp"]
    runner = CliRunner()
    opts = [
        x
        for k, v in s3.storage_options.items()
        for x in ("--storage-option", f"{k}={json.dumps(v)}")
    ]
    result = runner.invoke(
        cli,
        [
            "report",
            "s3://analytics/sp",
            *opts,
            "--format",
            "markdown",
            "--out",
            "s3://analytics/report",
        ],
    )
    assert result.exit_code == 0, result.output
    assert fs.cat_file("analytics/report/report.html").count(b"data:image/png;base64,") == 3


def test_views_open_from_a_plain_duckdb_database_file(two_tokenizers, tmp_path):
    path = export_database(list(two_tokenizers), str(tmp_path / "tm.duckdb"))
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT count(*) FROM tokens").fetchall() == [(17,)]
    got = rows_by_group(con.sql("SELECT * FROM metrics").to_arrow_table(), ("source", "lang"))
    assert got[("A", "web", "en")]["types"] == 3


def test_report_of_a_database_file_reads_its_own_views(two_tokenizers, tmp_path):
    """report_tables over an exported database (no files) == over the outputs themselves."""
    path = export_database(list(two_tokenizers), str(tmp_path / "tm.duckdb"))
    want = report_tables(connect(list(two_tokenizers)))
    with duckdb.connect(path) as con:
        got = report_tables(con)
    for key in ("by_lang", "by_source", "length_histogram"):
        assert len(got[key]) == len(want[key]) > 0
        for w, g in zip(want[key].to_pylist(), got[key].to_pylist(), strict=True):
            assert g == {
                k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in w.items()
            }


def test_analytics_imports_neither_the_engine_nor_the_loader_nor_the_cli():
    code = (
        "import sys, pipeline.analytics; "
        "print([m for m in sys.modules if m.startswith(('pipeline.tokenize', 'pipeline.loader', "
        "'jobs', 'ray', 'torch'))])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_report_fast_token_count_equals_the_metrics_views(two_tokenizers):
    session = connect(list(two_tokenizers), baseline="A")
    tables = report_tables(session)  # counts keyed by (group hash << 32 | token id)
    for key, view in (("by_source", "metrics"), ("by_lang", "metrics_by_lang")):
        want = session.query(f"SELECT * FROM {view}").to_pylist()  # summation order may differ
        assert tables[key].to_pylist() == [
            {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in row.items()}
            for row in want
        ]


def test_report_from_unit_token_counts_equals_unnesting_the_shards(compared, tmp_path):
    """The engine's per-unit counts (unigrams/) and the shards' token lists give the same report."""
    import shutil

    out, _ = compared
    urls = sorted(str(p) for p in out.iterdir() if p.name != "report")
    stripped = []
    for url in urls:
        copy = tmp_path / Path(url).name
        shutil.copytree(url, copy)
        for entry_path in (copy / "ledger").glob("*.json"):
            entry = json.loads(entry_path.read_text())
            entry["unigrams"] = None  # as written before the engine counted tokens per unit
            entry_path.write_text(json.dumps(entry))
        stripped.append(str(copy))
    mixed = []  # the same counts with several (source, lang) groups in one record batch
    for url in urls:
        copy = tmp_path / f"mixed-{Path(url).name}"
        shutil.copytree(url, copy)
        for path in (copy / "unigrams").glob("*.arrow"):
            table = pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all().combine_chunks()
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
        mixed.append(str(copy))
    counted, unnested = connect(urls), connect(stripped)
    assert counted.has_precounted_unigrams and not unnested.has_precounted_unigrams
    want = report_tables(counted)
    for got in (report_tables(unnested), report_tables(connect(mixed))):
        for key in ("by_lang", "by_source", "length_histogram"):
            assert len(want[key]) == len(got[key]) > 0
            for w, g in zip(want[key].to_pylist(), got[key].to_pylist(), strict=True):
                assert g == {
                    k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
                    for k, v in w.items()
                }


@pytest.mark.parametrize("alpha", [0, -1, 1, 16.5, float("nan")])
def test_renyi_alpha_outside_the_exact_range_is_refused(two_tokenizers, alpha):
    with pytest.raises(AnalyticsError, match="Renyi alpha must be in"):
        connect(list(two_tokenizers), alpha=alpha)


def test_report_is_the_same_with_chunked_and_hashed_counting(compared, monkeypatch):
    """Many small chunks folded by DuckDB's hash aggregate == one dense chunk (the default)."""
    from pipeline.analytics import counting

    out, _ = compared
    urls = sorted(str(p) for p in out.iterdir() if p.name != "report")
    want = report_tables(connect(urls))
    monkeypatch.setattr(counting, "KEYED_CHUNK_ROWS", 1000)
    monkeypatch.setattr(counting, "DOC_CHUNK_ROWS", 50)
    monkeypatch.setattr(counting, "DENSE_CELLS", 0)
    for unit_counts in (True, False):
        got = report_tables(connect(urls, unit_counts=unit_counts))
        for key in ("by_lang", "by_source", "length_histogram"):
            for w, g in zip(want[key].to_pylist(), got[key].to_pylist(), strict=True):
                assert g == {
                    k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
                    for k, v in w.items()
                }


def test_a_torn_shard_is_named_by_report_and_sql_not_a_traceback(compared, tmp_path):
    """A shard torn after its commit gave pyarrow's "Not an Arrow file" traceback (exit 1) in
    `report` and `sql`, whether it was the first file (read for the schema) or a later one
    (scanned lazily by the query)."""
    import shutil

    from pipeline.output import Output, iter_committed

    out, _ = compared
    url = next(p for p in sorted(out.iterdir()) if p.name != "report")
    entries = list(iter_committed(Output(str(url))))
    assert len(entries) >= 2
    for k in (0, -1):
        copy = tmp_path / f"torn{k}"
        shutil.copytree(url, copy)
        torn = copy / entries[k].shard
        torn.write_bytes(torn.read_bytes()[:200])
        for args in (["report", str(copy)], ["sql", str(copy), "SELECT count(*) FROM documents"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2, (args, result.output)
            assert str(torn) in result.output and "Traceback" not in result.output


def test_table_cells_keep_decimals_drop_negative_zero_and_escape_line_breaks():
    from pipeline.analytics.report import _cell

    assert [_cell(v) for v in (2153.6, 123456789.5, 2154.0, -0.0, 0.01234, None)] == [
        "2153.6", "123456789.5", "2154", "0", "0.01234", "-",
    ]  # fmt: skip
    assert _cell("a\nb\tc|d") == "a\\nb\\tc|d" and _cell(float("inf")) == "inf"
    assert _cell("x\x0by\u2028z") == "x\\x0by\\u2028z"


def test_sql_says_when_several_statements_ran(two_tokenizers):
    import subprocess

    from tests.helpers import REPO

    proc = subprocess.run(
        [str(REPO / ".venv/bin/tokenmill"), "sql", *two_tokenizers, "SELECT 1 AS a; SELECT 2 AS b"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == ["b", "-", "2"]
    assert "2 statements ran; this is the last one's result" in proc.stderr
    # DuckDB answered a string of statements with the last one that had rows: here the SELECT,
    # under a note saying it was the SET's
    proc = subprocess.run(
        [str(REPO / ".venv/bin/tokenmill"), "sql", *two_tokenizers, "SELECT 1 AS a; SET threads=1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "a" not in proc.stdout.split() and "2 statements ran" in proc.stderr


def test_a_job_without_word_statistics_reads_as_words_unknown(tmp_path, sample_dir, bpe_path):
    """`--no-word-stats` writes n_words 0: the views read it as NULL (not as documents of no
    words), and fertility counts only the tokens of documents whose words are known, so a
    report over that output beside a counted one gives the counted one's fertility."""
    from pipeline.tokenize.engine import run_job

    from .helpers import job_config

    counted, wordless = tmp_path / "counted", tmp_path / "wordless"
    run_job(job_config(sample_dir / "de.jsonl", counted, f"bpe:{bpe_path}"))
    run_job(job_config(sample_dir / "de.jsonl", wordless, f"bpe:{bpe_path}", word_stats=False))
    alone = connect(str(counted)).query("SELECT * FROM metrics").to_pylist()
    session = connect([str(counted), str(wordless)])
    docs = session.query(
        "SELECT output, count(*) AS n, count(n_words) AS known, sum(n_words) AS words "
        "FROM documents GROUP BY ALL ORDER BY output"
    ).to_pylist()
    assert [(d["n"], d["known"]) for d in docs] == [
        (alone[0]["documents"], alone[0]["documents"])
    ] + [(alone[0]["documents"], 0)]
    assert docs[0]["words"] == alone[0]["words"] > 0
    units = session.query("SELECT output, words FROM units ORDER BY output").to_pylist()
    assert all((u["words"] is None) == (u["output"] == str(wordless)) for u in units)
    both = session.query("SELECT * FROM metrics").to_pylist()
    assert len(both) == 1  # one tokenizer: the two outputs' documents counted together
    assert both[0]["documents"] == 2 * alone[0]["documents"]
    assert both[0]["tokens"] == 2 * alone[0]["tokens"] and both[0]["words"] == alone[0]["words"]
    assert both[0]["fertility"] == pytest.approx(alone[0]["fertility"])
    files = report_tables(session)["by_source"].to_pylist()  # counted from the shard files
    assert files[0]["words"] == alone[0]["words"]
    assert files[0]["fertility"] == pytest.approx(alone[0]["fertility"])
    only = connect(str(wordless)).query("SELECT words, fertility FROM metrics").to_pylist()
    assert only == [{"words": None, "fertility": None}]
