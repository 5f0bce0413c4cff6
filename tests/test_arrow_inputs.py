"""Arrow IPC inputs (file and stream formats) and `datasets` save_to_disk folders (issue 16): the
same records give the same documents and tokens as JSONL, every unit accounts for what it read,
bad rows are rejects with their row and reason, and truncated, corrupt, compressed or
index-mapped inputs are clear InputErrors."""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import InputError
from pipeline.output import Output, iter_committed
from pipeline.tokenize.engine import run_job
from pipeline.tokenize.inputs import ReadOptions, arrow, plan_units, read_unit
from pipeline.tokenize.inputs.batching import BatchBuilder

from .helpers import job_config, shard_rows

LANGS_USED = ("de", "zh", "code")  # three scripts, about 1.2 MB: several units at UNIT_BYTES
UNIT_BYTES = 200_000
BATCH_ROWS = 16


@pytest.fixture(scope="module")
def records(sample_records) -> list[dict]:
    return [r for lang in LANGS_USED for r in sample_records[lang]]


def write_ipc(path, table: pa.Table, kind: str, rows: int = BATCH_ROWS) -> str:
    """`table` as an Arrow IPC file ("file") or stream ("stream"), in batches of `rows` rows."""
    new = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
    with new(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=rows)
    return str(path)


def run(inputs, out, bpe_path, **fields) -> list[dict]:
    """Run a job in the driver; the committed rows. Every ledger entry must account for what its
    unit read."""
    summary = run_job(job_config(inputs, out, f"bpe:{bpe_path}", **fields))
    assert summary.complete
    entries = list(iter_committed(Output(str(out))))
    assert entries and all(e.docs_read == e.documents + e.rejected for e in entries)
    assert sum(e.docs_read for e in entries) == summary.docs_read
    return shard_rows(str(out))


def tokens_by_id(rows: list[dict]) -> dict[str, tuple]:
    return {r["doc_id"]: (tuple(r["tokens"]), r["lang"], r["source"]) for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, records, bpe_path) -> dict[str, tuple]:
    """doc id -> (tokens, lang, source) of the records given as JSONL."""
    folder = tmp_path_factory.mktemp("jsonl")
    with open(folder / "in.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    rows = run(folder / "in.jsonl", folder / "out", bpe_path, unit_bytes=UNIT_BYTES)
    assert len(rows) == len(records)
    return tokens_by_id(rows)


def read_all(inputs: list[str], opts: ReadOptions, storage_options=None):
    """(units, documents as (id, text, source), rejects) of planning and reading the inputs."""
    units = plan_units(inputs, opts, storage_options)
    arrow._WALKS.clear()  # read as an actor does: walk the headers again
    docs, rejects = [], []
    for unit in units:
        for batch in read_unit(unit, opts, storage_options):
            docs.extend(zip(batch.doc_ids, batch.texts, batch.sources, strict=True))
            rejects.extend(batch.rejects)
    return units, docs, rejects


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_ipc_file_and_stream_give_the_documents_and_tokens_of_the_same_jsonl(
    tmp_path, records, reference, bpe_path, kind
):
    path = write_ipc(tmp_path / f"in.{kind}.arrow", pa.Table.from_pylist(records), kind)
    units = plan_units([path], ReadOptions(unit_bytes=UNIT_BYTES))
    assert len(units) > 3 and all(u.fmt == "arrow" for u in units)
    assert [u.start for u in units[1:]] == [u.end for u in units[:-1]]  # whole batches, in order
    rows = run(path, tmp_path / "out", bpe_path, unit_bytes=UNIT_BYTES)
    assert [r["doc_id"] for r in rows] == [r["id"] for r in records]
    assert tokens_by_id(rows) == reference


def test_saved_dataset_folder_is_its_data_files_in_order(tmp_path, records, reference, bpe_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_list(records).save_to_disk(str(folder), num_shards=3)
    units = plan_units([str(folder)], ReadOptions(unit_bytes=UNIT_BYTES))
    names = [f["filename"] for f in json.loads((folder / "state.json").read_text())["_data_files"]]
    assert list(dict.fromkeys(os.path.basename(u.url) for u in units)) == names
    rows = run(folder, tmp_path / "out", bpe_path, unit_bytes=UNIT_BYTES)
    assert [r["doc_id"] for r in rows] == [r["id"] for r in records]
    assert tokens_by_id(rows) == reference


def test_dataset_dict_folder_reads_every_split_with_the_split_as_default_source(tmp_path, records):
    datasets = pytest.importorskip("datasets")
    plain = [{k: v for k, v in r.items() if k != "source"} for r in records]
    folder = tmp_path / "dd"
    splits = {"train": plain[:-20], "validation": plain[-20:]}
    datasets.DatasetDict(
        {k: datasets.Dataset.from_list(v) for k, v in splits.items()}
    ).save_to_disk(str(folder))
    units, docs, rejects = read_all([str(folder)], ReadOptions(unit_bytes=UNIT_BYTES))
    assert rejects == [] and {os.path.basename(os.path.dirname(u.url)) for u in units} == set(
        splits
    )
    got = {(doc_id, source) for doc_id, _, source in docs}
    assert got == {(r["id"], name) for name, rows in splits.items() for r in rows}
    assert [d[1] for d in docs if d[2] == "validation"] == [r["text"] for r in splits["validation"]]
    # as `datasets` < 2.8 saved it: one dataset.arrow per split (its name was every source)
    for name in splits:
        split = folder / name
        data = sorted(split.glob("data-*.arrow"))
        assert len(data) == 1
        data[0].rename(split / "dataset.arrow")
        state = json.loads((split / "state.json").read_text())
        state["_data_files"] = [{"filename": "dataset.arrow"}]
        (split / "state.json").write_text(json.dumps(state))
    old_docs = read_all([str(folder)], ReadOptions(unit_bytes=UNIT_BYTES))[1]
    assert {(doc_id, source) for doc_id, _, source in old_docs} == got
    # a plain .arrow file keeps its own name as the default source
    path = write_ipc(tmp_path / "plain.arrow", pa.Table.from_pylist(plain[:3]), "stream")
    assert {d[2] for d in read_all([path], ReadOptions())[1]} == {"plain.arrow"}


def test_bad_rows_are_rejects_with_their_row_and_reason(tmp_path, bpe_path):
    folder = tmp_path / "in"
    folder.mkdir()
    texts = ["Guten Tag", None, "", "x" * 200, "Hallo", "Welt"]
    ids = [f"d{i}" for i in range(len(texts))]
    write_ipc(folder / "a.arrow", pa.table({"id": ids, "text": texts}), "stream", rows=2)
    write_ipc(folder / "b.arrow", pa.table({"id": ["i0", "i1"], "text": [1, 2]}), "file")
    write_ipc(folder / "c.arrow", pa.table({"id": ["m0"], "body": ["no text"]}), "file")
    rows = run(folder / "*.arrow", tmp_path / "out", bpe_path, max_doc_bytes=100, unit_bytes=1)
    assert [r["doc_id"] for r in rows] == ["d0", "d4", "d5"]
    output = Output(str(tmp_path / "out"))
    entries = list(iter_committed(output))
    assert len(entries) == 3 + 1 + 1  # one unit per batch at unit_bytes=1
    rejects = []
    for entry in entries:
        if entry.rejects:
            with pa.memory_map(str(tmp_path / "out" / entry.rejects)) as source:
                rejects += pa.ipc.open_file(source).read_all().to_pylist()
    got = [(os.path.basename(r["source"]), r["row"], r["reason"]) for r in rejects]
    assert sorted(got) == [
        ("a.arrow", 1, "text field 'text' is NoneType, expected string"),
        ("a.arrow", 2, "empty text"),
        ("a.arrow", 3, "document too large: 200 bytes > max_doc_bytes 100"),
        ("b.arrow", 0, "text field 'text' is int, expected string"),
        ("b.arrow", 1, "text field 'text' is int, expected string"),
        ("c.arrow", 0, "missing text field 'text'"),
    ]
    assert all(r["offset"] is None and r["line"] is None for r in rejects)
    assert json.loads(rejects[0]["raw"]) in ({"id": "d1", "text": None}, {"id": "d2", "text": ""})


def test_only_the_needed_columns_are_read_and_messages_pass_through(tmp_path, monkeypatch):
    messages = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "ho"}]]
    table = pa.table({"text": ["a", "b"], "messages": messages, "other": [b"\0" * 10, b"\1" * 10]})
    path = write_ipc(tmp_path / "chat.arrow", table, "stream")
    seen = []
    original = BatchBuilder.record

    def spy(self, record, position, key, raw):
        seen.append((dict(record), position, key))
        return original(self, record, position, key, raw)

    monkeypatch.setattr(BatchBuilder, "record", spy)
    read_all([path], ReadOptions())
    assert seen == [
        ({"text": "a", "messages": messages[0]}, (None, None, 0), 0),
        ({"text": "b", "messages": messages[1]}, (None, None, 1), 1),
    ]


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_a_truncated_arrow_file_is_an_input_error_naming_the_file(tmp_path, kind):
    table = pa.table({"text": [f"document {i}" for i in range(100)]})
    data = Path(write_ipc(tmp_path / "whole.arrow", table, kind, rows=10)).read_bytes()
    eos = data.rindex(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    # inside the last batch's body, inside the 5th batch, at the last batch's end (the stream has
    # no end-of-stream marker, the file no footer), and the first bytes only
    for cut in (eos - 3, len(data) // 2, eos, 7):
        path = tmp_path / f"cut-{cut}.arrow"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match=rf"cut-{cut}\.arrow: .*(truncated|cut short)"):
            plan_units([str(path)], ReadOptions())


def test_a_corrupt_batch_body_is_an_input_error_naming_file_batch_and_offset(tmp_path):
    table = pa.table({"text": [f"document {i}" for i in range(40)]})
    data = bytearray(Path(write_ipc(tmp_path / "ok.arrow", table, "stream", 10)).read_bytes())
    opts = ReadOptions(unit_bytes=1)
    third = plan_units([str(tmp_path / "ok.arrow")], opts)[2]  # one batch per unit
    offsets = struct.pack("<11i", *range(0, 111, 11))  # of "document 20" .. "document 29"
    at = data.index(offsets, third.start)
    assert at < third.end
    data[at + 4 : at + 8] = b"\xff" * 4  # the headers are intact: planning cannot tell
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(bytes(data))
    units = plan_units([str(bad)], opts)
    assert list(read_unit(units[1], opts))[0].texts[0] == "document 10"
    where = rf"bad\.arrow: Arrow IPC record batch 2 at byte {third.start} is corrupt"
    with pytest.raises(InputError, match=where):
        list(read_unit(units[2], opts))


def test_compressed_and_non_arrow_files_are_refused_clearly(tmp_path):
    data = Path(write_ipc(tmp_path / "a.arrow", pa.table({"text": ["x"]}), "stream")).read_bytes()
    (tmp_path / "a.arrow.gz").write_bytes(gzip.compress(data))
    with pytest.raises(InputError, match="gzip-compressed Arrow file is not supported"):
        plan_units([str(tmp_path / "a.arrow.gz")], ReadOptions())
    (tmp_path / "j.arrow").write_text('{"text": "not arrow"}\n')
    with pytest.raises(InputError, match=r"j\.arrow: not Arrow IPC"):
        plan_units([str(tmp_path / "j.arrow")], ReadOptions())


def test_a_dataset_saved_with_an_indices_mapping_is_refused(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}]).save_to_disk(str(folder))
    state = json.loads((folder / "state.json").read_text())
    state["_indices_data_files"] = [{"filename": "indices.arrow"}]
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match=r"indices mapping .*flatten_indices\(\)"):
        plan_units([str(folder)], ReadOptions())
    state["_indices_data_files"] = None
    state["_data_files"] = [{"filename": "../elsewhere.arrow"}]
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match="not a file name in the folder"):
        plan_units([str(folder)], ReadOptions())
    with pytest.raises(InputError, match="is a directory: name its files"):  # any other folder
        plan_units([str(tmp_path)], ReadOptions())


def test_saved_dataset_dict_on_s3_reads_as_locally(tmp_path, s3, records):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    few = records[:40]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(few[:30]),
            "test": datasets.Dataset.from_list(few[30:]),
        }
    ).save_to_disk(str(folder), num_shards={"train": 2, "test": 1})
    s3.create_bucket("arrow-in")
    s3.filesystem().put(str(folder), "arrow-in/dd", recursive=True)
    opts = ReadOptions(unit_bytes=50_000)
    local_units, local_docs, _ = read_all([str(folder)], opts)
    units, docs, rejects = read_all(["s3://arrow-in/dd"], opts, s3.storage_options)
    assert rejects == [] and docs == local_docs
    assert [u.url.split("/dd/")[1] for u in units] == [u.url.split("/dd/")[1] for u in local_units]
    assert all(u.url.startswith("s3://arrow-in/dd/") and u.etag for u in units)


def test_a_file_cut_after_planning_fails_its_unit_naming_the_file(tmp_path):
    path = write_ipc(tmp_path / "late.arrow", pa.table({"text": ["x" * 50] * 40}), "stream", 10)
    opts = ReadOptions(unit_bytes=1)
    units = plan_units([path], opts)
    Path(path).write_bytes(Path(path).read_bytes()[: units[-1].end - 20])
    assert [len(b.texts) for u in units[:-1] for b in read_unit(u, opts)] == [10, 10, 10]
    with pytest.raises(InputError, match=r"late\.arrow: .*truncated\?"):
        list(read_unit(units[-1], opts))


def test_a_file_that_is_no_parquet_or_holds_a_column_twice_is_an_input_error_naming_it(tmp_path):
    """It was pyarrow's traceback (ArrowInvalid, KeyError), exit 1, naming no file."""
    import pyarrow.parquet as pq

    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all " * 20)
    table = pa.table({"text": ["a", "b"]})
    pq.write_table(table, tmp_path / "good.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "good.parquet").read_bytes()[:40])
    twice = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    pq.write_table(twice, tmp_path / "twice.parquet")
    for name, message in [
        ("empty", "not a readable Parquet file (Parquet file size is 0 bytes)"),
        ("garbage", "not a readable Parquet file (Parquet magic bytes not found"),
        ("cut", "not a readable Parquet file ("),
        ("twice", "column 'text' appears 2 times in its schema"),
    ]:
        with pytest.raises(InputError, match=rf"{name}\.parquet: {re.escape(message)}"):
            plan_units([str(tmp_path / f"{name}.parquet")], ReadOptions())
    # an Arrow IPC file read its first copy without a word
    path = write_ipc(tmp_path / "twice.arrow", twice, "file")
    with pytest.raises(InputError, match=r"twice\.arrow: column 'text' appears 2 times"):
        read_all([path], ReadOptions())


@pytest.mark.parametrize("kind", ["parquet", "file"])
def test_values_python_cannot_hold_are_a_wrong_type_not_a_crash(tmp_path, bpe_path, kind):
    """A timestamp past the year 9999 in the source or text column: OverflowError, a traceback
    (exit 1) in the driver and a failed unit on actors. Now the column's rows are what a value
    of a wrong type makes them: the default source, a text rejected naming the Arrow type."""
    import pyarrow.parquet as pq

    far = pa.array([10**17, 10**17], pa.timestamp("ms"))
    good = pa.table({"text": ["first text", "second text"], "source": far})
    bad = pa.table({"text": far, "id": ["x", "y"]})
    paths = []
    for name, table in (("good", good), ("bad", bad)):
        path = tmp_path / f"{name}.{'parquet' if kind == 'parquet' else 'arrow'}"
        if kind == "parquet":
            pq.write_table(table, path)
        else:
            write_ipc(path, table, "file")
        paths.append(str(path))
    summary = run_job(job_config(paths, tmp_path / "out", f"bpe:{bpe_path}"))
    assert summary.complete and summary.documents == 2 and summary.rejected == 2
    rows = shard_rows(str(tmp_path / "out"))
    assert sorted(r["source"] for r in rows) == [os.path.basename(paths[0])] * 2
    reasons = {r["reason"] for r in reject_rows(tmp_path / "out")}
    assert reasons == {
        "text field 'text' is timestamp[ms] value out of Python's range, expected string"
    }


@pytest.mark.parametrize("kind", ["parquet", "file"])
def test_an_input_with_no_rows_to_plan_is_a_complete_run_that_verify_calls_ok(
    tmp_path, bpe_path, kind
):
    """An Arrow file without record batches, a Parquet file without row groups: the run
    completed with nothing to commit and `verify` then failed ("nothing committed")."""
    import pyarrow.parquet as pq

    from pipeline.output.verify import verify_output

    schema = pa.schema([("text", pa.string())])
    path = tmp_path / ("empty.parquet" if kind == "parquet" else "empty.arrow")
    if kind == "parquet":
        pq.ParquetWriter(path, schema).close()
    else:
        pa.ipc.new_file(str(path), schema).close()
    summary = run_job(job_config(str(path), tmp_path / "out", f"bpe:{bpe_path}"))
    assert summary.complete and summary.units_planned == 0 and summary.documents == 0
    report = verify_output(str(tmp_path / "out"))
    assert report.ok and report.units == 0, report.problems
    assert not verify_output(str(tmp_path / "nothing")).ok  # no output there at all


def reject_rows(output) -> list[dict]:
    rows = []
    for path in sorted((Path(output) / "rejects").glob("*.arrow")):
        rows += pa.ipc.open_file(str(path)).read_all().to_pylist()
    return rows


def test_find_names_the_unit_of_a_parquet_document(tmp_path, bpe_path):
    """`find` gave a Parquet document `offset: null` and a row among its shard's accepted rows,
    with nothing saying which row group: `unit_start` is now the unit's first row group."""
    import pyarrow.parquet as pq

    from pipeline.loader import find_documents
    from pipeline.tokenize import run_job
    from tests.helpers import job_config

    rows = [{"id": f"doc-{i}", "text": f"document number {i} " * 20} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=10)
    out = tmp_path / "out"
    run_job(job_config(tmp_path / "t.parquet", out, f"bpe:{bpe_path}", unit_bytes=1))
    (place,), missing = find_documents(str(out), ["doc-15"])
    assert missing == [] and place["offset"] is None
    assert (place["unit_start"], place["row"]) == (1, 5)  # row group 1, its 6th row
