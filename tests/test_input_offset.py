"""Every shard row records where its record starts in the input (`input_offset`): the byte offset
in the decompressed file, for plain, compressed and range-cut (streamed) files alike."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from pipeline.tokenize.engine import run_job
from schemas.shards import SCHEMA_VERSION
from tests.helpers import LANGS, SAMPLE_DIR, job_config, read_jsonl, shard_rows


def _records(copies: int) -> list[dict]:
    rows = []
    for copy in range(copies):
        for lang in LANGS:
            rows += [
                {**r, "id": f"{r['id']}-{copy}"} for r in read_jsonl(SAMPLE_DIR / f"{lang}.jsonl")
            ]
    return rows


def _check_offsets(rows: list[dict], data: bytes) -> None:
    assert rows
    for row in rows:
        at = row["input_offset"]
        line = data[at : data.index(b"\n", at)]
        assert (at == 0 or data[at - 1 : at] == b"\n") and json.loads(line)["id"] == row["doc_id"]


def test_offsets_point_at_the_records_of_plain_gz_and_streamed_zst_files(bpe_path, tmp_path):
    rows = _records(copies=2)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (tmp_path / "plain.jsonl").write_bytes(data)
    (tmp_path / "small.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
    (tmp_path / "big.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("plain.jsonl", "small.jsonl.gz", "big.jsonl.zst"):
        out = tmp_path / f"out-{name}"
        summary = run_job(job_config(tmp_path / name, out, f"bpe:{bpe_path}", unit_bytes=300_000))
        assert summary.units_committed > 1 and summary.documents == len(rows)
        _check_offsets(shard_rows(str(out)), data)


def test_text_lines_carry_offsets_and_row_formats_carry_none(bpe_path, tmp_path):
    lines = [r["text"].replace("\n", " ") for r in read_jsonl(SAMPLE_DIR / "de.jsonl")]
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "de.txt").write_bytes(data)
    run_job(job_config(tmp_path / "de.txt", tmp_path / "t", f"bpe:{bpe_path}"))
    rows = shard_rows(str(tmp_path / "t"))
    starts = {0} | {i + 1 for i, b in enumerate(data) if b == 10}
    assert len(rows) == len(lines) and all(r["input_offset"] in starts for r in rows)
    table = pa.Table.from_pylist(read_jsonl(SAMPLE_DIR / "en.jsonl"))
    pq.write_table(table, tmp_path / "en.parquet")
    run_job(job_config(tmp_path / "en.parquet", tmp_path / "p", f"bpe:{bpe_path}"))
    rows = shard_rows(str(tmp_path / "p"))
    assert len(rows) == table.num_rows and {r["input_offset"] for r in rows} == {None}


def test_an_output_of_another_schema_version_is_refused_not_mixed(bpe_path, tmp_path):
    from pipeline.errors import LedgerError

    src = SAMPLE_DIR / "ru.jsonl"
    out = tmp_path / "out"
    run_job(job_config(src, out, f"bpe:{bpe_path}"))
    manifest = json.loads((out / "job.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    (out / "job.json").write_text(json.dumps({**manifest, "schema_version": SCHEMA_VERSION - 1}))
    try:
        run_job(job_config(src, out, f"bpe:{bpe_path}"))
    except LedgerError as exc:
        assert f"schema version {SCHEMA_VERSION - 1}" in str(exc) and "--overwrite" in str(exc)
    else:
        raise AssertionError("a run on an output of another schema version was not refused")
