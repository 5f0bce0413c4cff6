"""Input planning and reading: formats, compression, newline-aligned units, rejects with locations."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.errors import InputError
from pipeline.tokenize.inputs import ReadOptions, plan_units, read_unit


def read_all(units, opts, storage_options=None):
    docs, rejects, blank = [], [], 0
    for unit in units:
        for batch in read_unit(unit, opts, storage_options):
            docs.extend(zip(batch.doc_ids, batch.texts, batch.sources, batch.langs, strict=True))
            rejects.extend(batch.rejects)
            blank += batch.blank
    return docs, rejects, blank


def test_units_are_newline_aligned_and_cover_every_line_exactly_once(sample_dir, sample_records):
    opts = ReadOptions(unit_bytes=50_000)
    units = plan_units([str(sample_dir / "en.jsonl")], opts)
    assert len(units) > 5
    assert [u.start for u in units[1:]] == [u.end for u in units[:-1]]
    raw = (sample_dir / "en.jsonl").read_bytes()
    assert all(raw[u.start - 1 : u.start] == b"\n" for u in units[1:])
    docs, rejects, _ = read_all(units, opts)
    assert rejects == []
    assert [d[0] for d in docs] == [r["id"] for r in sample_records["en"]]
    assert [d[1] for d in docs] == [r["text"] for r in sample_records["en"]]


def test_unit_ids_are_stable_and_distinct(sample_dir):
    opts = ReadOptions(unit_bytes=100_000)
    a = plan_units([str(sample_dir / "*.jsonl")], opts)
    b = plan_units([str(sample_dir / "*.jsonl")], opts)
    assert [u.unit_id for u in a] == [u.unit_id for u in b]
    assert len({u.unit_id for u in a}) == len(a)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_is_one_unit_and_reads_identically(
    tmp_path, sample_dir, sample_records, suffix
):
    raw = (sample_dir / "de.jsonl").read_bytes()
    data = gzip.compress(raw) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / f"de{suffix}"
    path.write_bytes(data)
    opts = ReadOptions(unit_bytes=10_000)
    units = plan_units([str(path)], opts)
    assert len(units) == 1 and units[0].compression in ("gzip", "zstd")
    docs, rejects, _ = read_all(units, opts)
    assert rejects == []
    assert [d[1] for d in docs] == [r["text"] for r in sample_records["de"]]


def test_text_inputs_one_document_per_line_or_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\r\nthird\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeffwhole file\nwith two lines\n", encoding="utf-8")
    per_line, _, blank = read_all(
        plan_units([str(tmp_path / "a.txt")], ReadOptions()), ReadOptions()
    )
    assert [d[1] for d in per_line] == ["first line", "second line", "third"]
    assert blank == 1
    opts = ReadOptions(text_mode="file")
    per_file, _, _ = read_all(plan_units([str(tmp_path / "*.txt")], opts), opts)
    assert [d[1] for d in per_file] == [
        "first line\n\nsecond line\r\nthird\n",
        "whole file\nwith two lines\n",
    ]
    assert [d[2] for d in per_file] == ["a.txt", "b.txt"]


def test_parquet_row_groups_are_units_with_configurable_fields(tmp_path):
    table = pa.table({"body": ["alpha", "beta", "", "delta", None], "key": [1, 2, 3, 4, 5]})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=2)
    opts = ReadOptions(text_field="body", id_field="key", unit_bytes=1)
    units = plan_units([str(path)], opts)
    assert [(u.start, u.end) for u in units] == [(0, 1), (1, 2), (2, 3)]
    packed = plan_units([str(path)], replace(opts, unit_bytes=1 << 20))
    assert [(u.start, u.end) for u in packed] == [(0, 3)]  # small row groups: one unit
    assert read_all(packed, opts)[:2] == read_all(units, opts)[:2]
    docs, rejects, _ = read_all(units, opts)
    assert [(d[0], d[1]) for d in docs] == [("1", "alpha"), ("2", "beta"), ("4", "delta")]
    assert [(r.row, r.reason) for r in rejects] == [
        (2, "empty text"),
        (4, "text field 'body' is NoneType, expected string"),
    ]


def test_a_binary_text_column_is_read_as_utf8(tmp_path):
    """Table formats may store text as bytes (a `binary` column): UTF-8 is decoded, anything
    else is a reject naming the byte, an empty or null value as for strings."""
    values = ["Grüße".encode(), b"plain", b"bad \xff byte", b"", None]
    pq.write_table(pa.table({"text": pa.array(values, pa.binary())}), tmp_path / "b.parquet")
    docs, rejects, _ = read_all(
        plan_units([str(tmp_path / "b.parquet")], ReadOptions()), ReadOptions()
    )
    assert [d[1] for d in docs] == ["Grüße", "plain"]
    assert [(r.row, r.reason) for r in rejects] == [
        (2, "text field 'text' is bytes, not UTF-8 (invalid at byte 4)"),
        (3, "empty text"),
        (4, "text field 'text' is NoneType, expected string"),
    ]


def test_bad_records_are_rejected_with_reason_file_offset_and_line(tmp_path):
    lines = [
        b'{"id": "ok1", "text": "fine"}',
        b'{"id": "bad-utf8", "text": "caf\xe9"}',
        b"this is not json",
        b'{"id": "no-text", "body": "x"}',
        b'{"id": "int-text", "text": 42}',
        b'{"id": "empty", "text": ""}',
        b'{"id": "big", "text": "' + b"x" * 200 + b'"}',
        b'["an", "array"]',
        b'{"id": "surrogate", "text": "a\\ud800b"}',
        b'{"id": "ok2", "text": "also fine"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    opts = ReadOptions(max_doc_bytes=100)
    docs, rejects, _ = read_all(plan_units([str(path)], opts), opts)
    assert [d[0] for d in docs] == ["ok1", "ok2"]
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    assert [(r.line, r.offset, r.reason) for r in rejects] == [
        (2, offsets[1], "invalid UTF-8 at byte 31 of the record"),
        (3, offsets[2], "invalid JSON: Expecting value at column 1"),
        (4, offsets[3], "missing text field 'text'"),
        (5, offsets[4], "text field 'text' is int, expected string"),
        (6, offsets[5], "empty text"),
        (7, offsets[6], "document too large: 200 bytes > max_doc_bytes 100"),
        (8, offsets[7], "record is a JSON list, expected an object"),
        (9, offsets[8], "text has a lone surrogate at character 1 (not encodable as UTF-8)"),
    ]
    assert all(r.source == str(path) for r in rejects)
    assert rejects[0].raw == lines[1]


def test_oversized_line_is_rejected_without_holding_it(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b'{"text": "a"}\n' + b'{"text": "' + b"y" * 5_000_000 + b'"}\n{"text": "b"}\n')
    opts = ReadOptions(max_record_bytes=1_000_000)
    docs, rejects, _ = read_all(plan_units([str(path)], opts), opts)
    assert [d[1] for d in docs] == ["a", "b"]
    assert len(rejects) == 1 and rejects[0].line == 2 and rejects[0].offset == 14
    assert rejects[0].reason == "record too large: more than max_record_bytes 1000000 bytes"
    assert len(rejects[0].raw) == 256


def test_missing_inputs_and_unknown_formats_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        plan_units([str(tmp_path / "nope.jsonl")], ReadOptions())
    with pytest.raises(InputError, match="matches no files"):
        plan_units([str(tmp_path / "*.jsonl")], ReadOptions())
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(InputError, match="cannot tell the format"):
        plan_units([str(tmp_path / "x.bin")], ReadOptions())


def test_records_without_ids_get_stable_ids_from_url_and_offset(tmp_path):
    path = tmp_path / "noid.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["one", "two"]) + "\n")
    a, _, _ = read_all(plan_units([str(path)], ReadOptions()), ReadOptions())
    b, _, _ = read_all(plan_units([str(path)], ReadOptions()), ReadOptions())
    assert [d[0] for d in a] == [d[0] for d in b]
    assert len({d[0] for d in a}) == 2


def test_symlinks_to_files_are_inputs_like_the_files(tmp_path, sample_dir, sample_records):
    (tmp_path / "link.jsonl").symlink_to(sample_dir / "ru.jsonl")
    opts = ReadOptions()
    units = plan_units([str(tmp_path / "*.jsonl")], opts)
    # a unit records the file's canonical (real) path, so one file reached two ways is one unit
    assert [u.url for u in units] == [os.path.realpath(sample_dir / "ru.jsonl")]
    docs, rejects, _ = read_all(units, opts)
    assert rejects == [] and [d[1] for d in docs] == [r["text"] for r in sample_records["ru"]]


def test_small_parquet_row_groups_are_packed_into_units_of_unit_bytes(tmp_path):
    """One unit per row group made a file of 13,679 one-row groups take 500 s (each unit parsed
    the whole footer and summed the rows before it: quadratic) and count the file's size once
    per unit in the bytes to do (1.26 TB for 74 MB, which also chose helper processes and Ray).
    Row groups are now packed up to unit_bytes of stored bytes; a big row group stays a unit
    alone, with the id it always had."""
    from pipeline.tokenize.feed import todo_bytes

    rows = [{"id": f"d{i}", "text": f"document {i} " + "word " * (i % 40)} for i in range(3000)]
    path = tmp_path / "many.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1)
    size = path.stat().st_size
    packed = plan_units([str(path)], ReadOptions())
    assert [(u.start, u.end) for u in packed] == [(0, 3000)]
    assert todo_bytes(packed) < size  # the row groups' stored bytes (the footer left out)
    small = ReadOptions(unit_bytes=todo_bytes(packed) // 4)
    quarters = plan_units([str(path)], small)
    assert 4 <= len(quarters) <= 6 and quarters[0].start == 0 and quarters[-1].end == 3000
    assert all(a.end == b.start for a, b in zip(quarters, quarters[1:], strict=False))
    assert sum(todo_bytes([u]) for u in quarters) == todo_bytes(packed)
    one = plan_units([str(path)], ReadOptions(unit_bytes=1))
    assert len(one) == 3000 and all(u.end == u.start + 1 for u in one)
    docs = read_all(packed, ReadOptions())[0]
    assert docs == read_all(quarters, small)[0] == read_all(one[:3000], ReadOptions())[0]
    assert [d[0] for d in docs] == [f"d{i}" for i in range(3000)]
    big = tmp_path / "big.parquet"  # row groups over unit_bytes: one unit each, as before
    pq.write_table(pa.Table.from_pylist(rows), big, row_group_size=1000)
    units = plan_units([str(big)], ReadOptions(unit_bytes=1000))
    assert [(u.start, u.end, u.size) for u in units] == [
        (i, i + 1, big.stat().st_size) for i in range(3)
    ]
