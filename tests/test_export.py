"""`tokenmill export` (issue 16): committed shards of data/sample exported to Megatron-LM's indexed
dataset, Hugging Face Parquet and LitData chunks, read back with each format's own reader (skipped
when `pip install '.[export-check]'` was not run) and with tokenmill's, document for document;
counts equal the ledger; orphan shards never travel; a killed export reruns to the same bytes;
an export to S3 holds the bytes of a local one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import main as cli
from pipeline.errors import ExportError
from pipeline.export import ExportOptions, export_output, get_format, verify_export
from pipeline.export.plan import Resolved
from pipeline.output import Output, iter_committed
from pipeline.output.shards import bytes_checksum
from pipeline.output.verify import verify_output
from pipeline.tokenize import run_job

from .helpers import REPO, SAMPLE_DIR, job_config, shard_rows


@pytest.fixture(scope="module")
def sample_output(tmp_path_factory, bpe_path) -> Path:
    """data/sample through the 8k BPE in units of 150 kB (17 committed shards)."""
    out = tmp_path_factory.mktemp("export") / "out"
    run_job(job_config(SAMPLE_DIR / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=150_000))
    return out


@pytest.fixture(scope="module")
def documents(sample_output) -> list[dict]:
    """Every committed document, in ledger order (what every export must hold)."""
    return shard_rows(str(sample_output))


def eos_of(output: Path) -> int:
    return json.loads((output / "job.json").read_text())["tokenizer"]["eos_id"]


LOCK = "_export/_lease.json.lock"  # a local destination's lease flock file (empty; not on S3)


def tree(root: Path) -> dict[str, bytes]:
    """The files under a local export, but the lease's lock file."""
    files = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    assert files.pop(LOCK, b"") == b""
    return files


def own_reader_documents(dest: Path) -> list[list[int]]:
    """Documents of an export as tokenmill's own reader gives them (EODs included)."""
    manifest = json.loads((dest / "export.json").read_text())
    fmt, resolved = get_format(manifest["format"]), Resolved.from_json(manifest["options"])
    return [
        ids.tolist()
        for record in manifest["files"]
        for ids in fmt.read(resolved, Output(str(dest)), record)
    ]


def test_megatron_pairs_hold_every_committed_document_and_megatron_core_reads_them(
    sample_output, documents, tmp_path
):
    dest = tmp_path / "megatron"
    options = ExportOptions("megatron", append_eod=True, max_tokens_per_file=100_000)
    report = export_output(str(sample_output), str(dest), options)
    assert report.ok, report.problems
    manifest = json.loads((dest / "export.json").read_text())
    eos = eos_of(sample_output)
    entries = list(iter_committed(Output(str(sample_output))))
    assert manifest["options"]["eos_id"] == eos and manifest["options"]["dtype"] == "uint16"
    assert manifest["source"]["config_hash"] == entries[0].config_hash
    assert [(u["unit_id"], u["shard_checksum"]) for u in manifest["units"]] == [
        (e.unit_id, e.shard_checksum) for e in entries
    ]
    assert manifest["documents"] == sum(e.documents for e in entries) == len(documents)
    assert manifest["tokens"] == sum(e.tokens for e in entries)
    assert manifest["tokens_written"] == manifest["tokens"] + manifest["documents"]
    assert len(manifest["files"]) >= 5  # pairs of at most 100k ids (whole shards)
    expected = [d["tokens"] + [eos] for d in documents]
    assert own_reader_documents(dest) == expected

    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    assert manifest["verified"]["format_reader"].startswith("megatron-core ")
    sequences = []
    for record in manifest["files"]:
        dataset = indexed.IndexedDataset(str(dest / record["prefix"]))
        assert dataset.index.dtype == np.uint16
        assert dataset.document_indices.tolist() == list(range(len(dataset) + 1))
        sequences += [dataset[i].tolist() for i in range(len(dataset))]
    assert sequences == expected

    # byte for byte what Megatron's own IndexedDatasetBuilder writes for the same documents
    first = manifest["files"][0]
    builder = indexed.IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for ids in expected[: first["documents"]]:
        builder.add_document(np.array(ids, dtype=np.int64), [len(ids)])
    builder.finalize(str(tmp_path / "ref.idx"))
    for suffix in (".bin", ".idx"):
        assert (dest / f"{first['prefix']}{suffix}").read_bytes() == (
            tmp_path / f"ref{suffix}"
        ).read_bytes()


def test_hf_parquet_read_by_datasets_holds_every_document_and_its_columns(
    sample_output, documents, tmp_path
):
    dest = tmp_path / "hf"
    result = CliRunner().invoke(
        cli,
        ["export", str(sample_output), str(dest), "--format", "hf"]
        + ["--max-tokens-per-file", "150000"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["documents"] == len(documents) and summary["files"] >= 3
    expected = [(d["doc_id"], d["source"], d["lang"], d["tokens"]) for d in documents]
    parts = sorted((dest / "data").glob("train-*.parquet"))
    assert [p.name for p in parts][:1] == [f"train-00000-of-{len(parts):05d}.parquet"]
    rows = pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
    assert [(r["doc_id"], r["source"], r["lang"], r["input_ids"]) for r in rows] == expected

    datasets = pytest.importorskip("datasets")
    assert summary["verified"]["format_reader"].startswith("datasets ")
    loaded = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == ["input_ids", "doc_id", "source", "lang"]
    assert loaded.features["input_ids"].feature.dtype == "int32"
    got = [(r["doc_id"], r["source"], r["lang"], r["input_ids"]) for r in loaded]
    assert got == expected


def test_litdata_chunks_stream_through_tokens_loader_and_equal_litdatas_own_writer(
    sample_output, documents, tmp_path, monkeypatch
):
    dest = tmp_path / "litdata"
    options = ExportOptions("litdata", append_eod=True, max_tokens_per_file=120_000)
    report = export_output(str(sample_output), str(dest), options)
    assert report.ok, report.problems
    manifest = json.loads((dest / "export.json").read_text())
    eos = eos_of(sample_output)
    expected = [d["tokens"] + [eos] for d in documents]
    assert own_reader_documents(dest) == expected
    index = json.loads((dest / "index.json").read_text())
    assert index["config"]["item_loader"] == "TokensLoader"
    assert [c["filename"] for c in index["chunks"]] == [f["names"][0] for f in manifest["files"]]
    assert sum(c["dim"] for c in index["chunks"]) == manifest["tokens_written"]

    litdata = pytest.importorskip("litdata")
    from litdata.streaming.item_loader import TokensLoader

    assert manifest["verified"]["format_reader"].startswith("litdata ")
    block = 256  # TokensLoader serves whole blocks within a chunk: each chunk's tail is dropped
    from pipeline.export.formats.litdata import no_version_check

    with no_version_check():  # no request to PyPI from a test
        dataset = litdata.StreamingDataset(str(dest), item_loader=TokensLoader(block_size=block))
    streamed = np.concatenate([np.asarray(dataset[i]) for i in range(len(dataset))]).tolist()
    want, at = [], 0
    for record in manifest["files"]:
        stream = [t for ids in expected[at : at + record["documents"]] for t in ids]
        want += stream[: len(stream) // block * block]
        at += record["documents"]
    assert streamed == want

    # without litdata installed the faithful writer gives the same bytes
    monkeypatch.setattr(type(get_format("litdata")), "library_version", lambda self: None)
    again = tmp_path / "faithful"
    assert export_output(str(sample_output), str(again), options).ok
    written, faithful = tree(dest), tree(again)
    assert written.pop("export.json") != faithful.pop("export.json")  # "verified" says how
    assert written == faithful


def test_an_export_to_s3_holds_the_bytes_of_a_local_one(sample_output, tmp_path, s3):
    s3.create_bucket("export-hf")
    options = ExportOptions("hf", append_eod=True, max_tokens_per_file=150_000)
    local = export_output(str(sample_output), str(tmp_path / "local"), options)
    remote = export_output(
        str(sample_output), "s3://export-hf/hf", options, dest_storage_options=s3.storage_options
    )
    assert local.ok and remote.ok, remote.problems
    assert remote.manifest["verified"] == local.manifest["verified"]
    fs = s3.filesystem()
    found = {p.split("export-hf/hf/", 1)[1]: fs.cat_file(p) for p in fs.find("export-hf/hf")}
    assert found == tree(tmp_path / "local")
    problems, manifest = verify_export("s3://export-hf/hf", s3.storage_options)
    assert problems == [] and manifest["documents"] == local.manifest["documents"]


def _progress(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    with contextlib.suppress(FileNotFoundError):
        return fs.ls(f"{prefix}/_export/files", detail=False)
    return []


def test_an_export_killed_midway_reruns_to_the_bytes_of_a_clean_one(sample_output, tmp_path, s3):
    s3.create_bucket("export-killed")
    flags = ["--format", "megatron", "--append-eod", "--max-tokens-per-file", "1"]
    flags += ["--verify", "tokenmill"]  # the readers are not what this test is about
    opts = [f"endpoint_url={s3.endpoint}", f"key={s3.storage_options['key']}"]
    opts += [f"secret={s3.storage_options['secret']}"]
    dest_flags = [x for o in opts for x in ("--dest-storage-option", o)]
    cmd = [sys.executable, "-m", "jobs.cli", "export", str(sample_output), "s3://export-killed/m"]
    cmd += flags + dest_flags
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fs = s3.filesystem()
    deadline = time.time() + 120
    while time.time() < deadline and not _progress(fs, "export-killed/m") and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # the fault: the export dies after its first file
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    finished = len(_progress(fs, "export-killed/m"))
    planned = len(list(iter_committed(Output(str(sample_output)))))  # one pair per shard
    assert 1 <= finished < planned and not fs.exists("export-killed/m/export.json")
    for torn in ("_export/files/00009.json.tmp-1f2e", "_export/plan.json.tmp-3d4c"):
        fs.pipe(f"export-killed/m/{torn}", b"{")  # (writes a kill cut: the rerun removes them)

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["files_resumed"] >= finished and summary["files"] == planned
    assert summary["files_written"] == planned - summary["files_resumed"]

    clean = CliRunner().invoke(cli, ["export", str(sample_output), str(tmp_path / "clean"), *flags])
    assert clean.exit_code == 0, clean.output
    fs.invalidate_cache()
    found = {p.split("export-killed/m/", 1)[1]: fs.cat_file(p) for p in fs.find("export-killed/m")}
    assert found == tree(tmp_path / "clean")


def test_orphan_shards_are_never_exported(sample_output, documents, tmp_path, bpe_path):
    out = tmp_path / "out"
    shutil.copytree(sample_output, out)
    stray = tmp_path / "stray"
    stray.mkdir()
    lines = [json.dumps({"id": f"orphan-{i}", "text": f"never committed {i}"}) for i in range(3)]
    (stray / "x.jsonl").write_text("\n".join(lines) + "\n")
    other = tmp_path / "other"
    run_job(job_config(stray / "x.jsonl", other, f"bpe:{bpe_path}"))
    (shard,) = (other / "shards").glob("*.arrow")
    config12 = json.loads((out / "job.json").read_text())["config_hash"][:12]
    shutil.copy(shard, out / "shards" / f"{'0' * 24}.{config12}.arrow")  # a crashed attempt's
    assert verify_output(str(out)).orphans == [f"shards/{'0' * 24}.{config12}.arrow"]

    report = export_output(str(out), str(tmp_path / "hf"), ExportOptions("hf"))
    assert report.ok, report.problems
    assert report.manifest["documents"] == len(documents)
    (part,) = (tmp_path / "hf" / "data").glob("*.parquet")
    assert pq.read_table(part)["doc_id"].to_pylist() == [d["doc_id"] for d in documents]


def _add_loss_mask(out: Path) -> None:
    """Give every committed shard a loss_mask column (1 on odd ids) and re-commit its entry."""
    for path in sorted((out / "ledger").glob("*.json")):
        entry = json.loads(path.read_text())
        table = pa.ipc.open_file(pa.memory_map(str(out / entry["shard"]))).read_all()
        masks = [[t % 2 for t in row] for row in table["tokens"].to_pylist()]
        table = table.append_column("loss_mask", pa.array(masks, pa.list_(pa.uint8())))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        (out / entry["shard"]).write_bytes(data)
        entry["shard_checksum"] = bytes_checksum(data)
        path.write_text(json.dumps(entry))


def test_a_loss_mask_column_goes_to_hf_with_the_eod_and_megatron_names_it_dropped(
    sample_output, documents, tmp_path
):
    out = tmp_path / "chat"
    shutil.copytree(sample_output, out)
    _add_loss_mask(out)
    options = ExportOptions("hf", append_eod=True, verify="tokenmill")
    report = export_output(str(out), str(tmp_path / "hf"), options)
    assert report.ok, report.problems
    (part,) = (tmp_path / "hf" / "data").glob("*.parquet")
    table = pq.read_table(part)
    assert table["loss_mask"].to_pylist() == [[t % 2 for t in d["tokens"]] + [1] for d in documents]
    megatron = export_output(str(out), str(tmp_path / "m"), ExportOptions("megatron"))
    assert megatron.ok and megatron.manifest["dropped_columns"] == ["loss_mask"]
    assert report.manifest["dropped_columns"] == []


def test_destination_rules_and_a_corrupted_file_is_named_then_rewritten(sample_output, tmp_path):
    dest = tmp_path / "d"
    options = ExportOptions("megatron", max_tokens_per_file=200_000, verify="tokenmill")
    first = export_output(str(sample_output), str(dest), options)
    again = export_output(str(sample_output), str(dest), options)  # nothing to do: re-verified
    assert first.ok and again.ok and again.files_written == 0
    assert again.files_resumed == len(first.manifest["files"]) >= 2
    before = tree(dest)

    other = ExportOptions("megatron", append_eod=True, verify="tokenmill")
    with pytest.raises(ExportError, match="holds another export"):
        export_output(str(sample_output), str(dest), other)
    replaced = export_output(str(sample_output), str(dest), replace(other, overwrite=True))
    assert replaced.ok and not (dest / "part-00001.bin").exists()  # the old pairs are gone
    shutil.rmtree(dest)
    assert export_output(str(sample_output), str(dest), options).ok
    assert tree(dest) == before

    data = bytearray((dest / "part-00001.bin").read_bytes())
    data[10] ^= 0xFF
    (dest / "part-00001.bin").write_bytes(bytes(data))
    problems, _ = verify_export(str(dest), mode="tokenmill")
    assert problems and all("part-00001" in p for p in problems)
    shutil.copytree(dest, tmp_path / "d-cli")  # the same damage, seen by the CLI
    flags = ["--format", "megatron", "--max-tokens-per-file", "200000", "--verify", "tokenmill"]
    cli_broken = CliRunner().invoke(
        cli, ["export", str(sample_output), str(tmp_path / "d-cli"), *flags]
    )
    assert cli_broken.exit_code == 1 and "PROBLEM: part-00001" in cli_broken.output
    assert "verification FAILED" in cli_broken.output and "; verified by" not in cli_broken.output
    broken = export_output(str(sample_output), str(dest), options)  # finds it, drops its record
    assert not broken.ok and not (dest / "export.json").exists()
    fixed = export_output(str(sample_output), str(dest), options)  # and rewrites it
    assert fixed.ok and fixed.files_written == 1 and tree(dest) == before

    for fmt in ("hf", "litdata"):  # files in a folder of their own (hf: data/)
        options = ExportOptions(fmt, verify="tokenmill")
        assert export_output(str(sample_output), str(tmp_path / fmt), options).ok
        # replaced: the old files went, and with them their folder; it read as foreign content
        # ("is not empty (data) and holds no tokenmill export": `make demo` failed the 2nd time)
        replaced = replace(options, append_eod=True, overwrite=True)
        assert export_output(str(sample_output), str(tmp_path / fmt), replaced).ok

    (tmp_path / "left" / "data").mkdir(parents=True)  # an empty folder is no foreign content
    assert export_output(str(sample_output), str(tmp_path / "left"), options).ok

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not empty"):
        export_output(str(sample_output), str(foreign), options)
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / "nothing"), str(tmp_path / "x"), "--format", "hf"]
    )
    assert result.exit_code == 2 and "has no committed units" in result.output


def test_overwrite_beside_foreign_files_is_refused_before_the_old_export_is_deleted(
    sample_output, tmp_path
):
    """`--overwrite` of an export with a user's file beside it deleted the old export, then
    refused ("holds no tokenmill export": false), leaving neither export."""
    dest = tmp_path / "d"
    assert export_output(str(sample_output), str(dest), ExportOptions("megatron")).ok
    before = tree(dest)
    (dest / "README.txt").write_text("notes")
    hf = ExportOptions("hf", overwrite=True)
    with pytest.raises(ExportError, match=r"is not empty \(README.txt\) and holds files that"):
        export_output(str(sample_output), str(dest), hf)
    assert tree(dest) == {**before, "README.txt": b"notes"}  # nothing deleted


def test_a_torn_shard_is_named_and_a_per_batch_vocabulary_output_is_refused(
    sample_output, tmp_path, bpe_path
):
    """A torn first shard gave pyarrow's traceback (exit 1, which means "verification found a
    problem"); a dynamic_merge output exported its batch-local ids as one vocabulary, without
    their sidecars, "verified"."""
    torn = tmp_path / "torn"
    shutil.copytree(sample_output, torn)
    first = next(iter_committed(Output(str(torn))))
    (torn / first.shard).write_bytes((torn / first.shard).read_bytes()[:1000])
    result = CliRunner().invoke(cli, ["export", str(torn), str(tmp_path / "x"), "--format", "hf"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"shard {torn}/{first.shard} is not a readable Arrow file" in result.output

    config = tmp_path / "merge.json"
    config.write_text(json.dumps({"base": f"bpe:{bpe_path}", "max_merges": 50, "batch_docs": 32}))
    merged = tmp_path / "dm"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", merged, f"dynamic_merge:{config}"))
    with pytest.raises(ExportError, match="holds ids local to each batch"):
        export_output(str(merged), str(tmp_path / "dm-export"), ExportOptions("megatron"))
    assert not (tmp_path / "dm-export").exists()


def test_an_export_into_a_destination_another_export_writes_is_refused(sample_output, tmp_path):
    """Two exports into one destination at once removed each other's scratch files (the loser
    failed with a FileNotFoundError traceback). The destination's lease refuses the second,
    naming the first; once it is released the export runs."""
    from pipeline.export.engine import DestinationLease

    dest = tmp_path / "dest"
    options = ExportOptions("megatron", append_eod=True)
    with DestinationLease(Output(str(dest))):  # (another export, writing now)
        result = CliRunner().invoke(
            cli, ["export", str(sample_output), str(dest), "--format", "megatron", "--append-eod"]
        )
    assert result.exit_code == 2, result.output
    assert "is leased by another export" in result.output and "Traceback" not in result.output
    assert export_output(str(sample_output), str(dest), options).ok


def test_two_exports_at_once_leave_one_good_export_and_no_traceback(sample_output, tmp_path):
    dest = tmp_path / "dest"
    cmd = [sys.executable, "-m", "jobs.cli", "export", str(sample_output), str(dest)]
    cmd += ["--format", "megatron", "--append-eod", "--max-tokens-per-file", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert 0 in [code for code, _ in results], results
    for code, err in results:
        assert code == 0 or (code == 2 and "is leased by another export" in err), err
        assert "Traceback" not in err
    problems, manifest = verify_export(str(dest))
    assert problems == [] and manifest["documents"] > 0


def test_a_refused_export_leaves_nothing_in_a_foreign_folder(sample_output, tmp_path):
    dest = tmp_path / "photos"
    dest.mkdir()
    (dest / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ExportError, match="holds no tokenmill export"):
        export_output(str(sample_output), str(dest), ExportOptions("megatron"))
    assert sorted(p.name for p in dest.iterdir()) == ["cat.jpg"]
