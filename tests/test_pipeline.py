"""The streaming job end to end on real Ray: accounting, exact decoding, determinism, resume, S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from jobs.cli import main as cli
from pipeline.errors import ConfigError
from pipeline.output.verify import verify_output
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job
from schemas.records import LedgerEntry
from tokenizers_impl import load_tokenizer

from .helpers import LANGS, REPO, job_config, shard_files, shard_rows


def job(sample_dir, output, tokenizer, **kw):
    return job_config(sample_dir / "*.jsonl", output, tokenizer, **kw)


@pytest.fixture(scope="module")
def reference_run(ray_session, tmp_path_factory, sample_dir, bpe_path):
    """An uninterrupted 2-actor run with small units (many units per file)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run_job(job(sample_dir, out, f"bpe:{bpe_path}", actors=2, unit_bytes=100_000))
    return out, summary


def test_every_document_is_accounted_for_and_decodes_to_its_exact_text(
    reference_run, sample_records, bpe_path
):
    out, summary = reference_run
    expected = {r["id"]: r for lang in LANGS for r in sample_records[lang]}
    assert summary.complete and summary.units_committed == summary.units_planned > 5
    assert summary.docs_read == summary.documents + summary.rejected == len(expected)
    assert summary.rejected == 0
    rows = shard_rows(str(out))
    assert sorted(r["doc_id"] for r in rows) == sorted(expected)
    tok = load_tokenizer(f"bpe:{bpe_path}")
    for row in rows:
        record = expected[row["doc_id"]]
        assert tok.decode(row["tokens"]) == record["text"]
        assert (row["source"], row["lang"]) == (record["source"], record["lang"])
        assert row["n_tokens"] == len(row["tokens"])
        assert row["n_bytes"] == len(record["text"].encode("utf-8"))
        assert row["n_chars"] == len(record["text"])
    assert summary.tokens == sum(r["n_tokens"] for r in rows)


def test_shards_carry_schema_v2_metadata_and_compact_token_type(reference_run, bpe_path):
    out, summary = reference_run
    name = next(iter(shard_files(out)))
    with pa.memory_map(str(out / name)) as source:
        schema = pa.ipc.open_file(source).schema
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    tok = load_tokenizer(f"bpe:{bpe_path}")
    assert meta["tokenmill.schema_version"] == "2"
    assert schema.field("input_offset").type == pa.int64()
    assert meta["tokenmill.tokenizer.fingerprint"] == tok.fingerprint
    assert meta["tokenmill.tokenizer.vocab_size"] == "8000"
    assert schema.field("tokens").type == pa.list_(pa.field("item", pa.uint16(), nullable=False))
    assert summary.encoder == "gigatoken"  # the fastest backend that reproduces the reference
    assert summary.tokenizer["encoder_version"] == "0.10.0"


def test_one_actor_and_two_actors_write_byte_identical_shards(
    reference_run, sample_dir, bpe_path, tmp_path
):
    out, _ = reference_run
    run_job(job(sample_dir, tmp_path / "one", f"bpe:{bpe_path}", actors=1, unit_bytes=100_000))
    assert shard_files(tmp_path / "one") == shard_files(out)


def test_rerun_skips_committed_units_and_overwrite_redoes_them(reference_run, sample_dir, bpe_path):
    out, first = reference_run
    again = run_job(job(sample_dir, out, f"bpe:{bpe_path}", actors=2, unit_bytes=100_000))
    assert again.units_skipped == first.units_planned and again.units_run == 0
    before = shard_files(out)
    redo = run_job(
        job(sample_dir, out, f"bpe:{bpe_path}", actors=2, unit_bytes=100_000, overwrite=True)
    )
    assert redo.units_run == first.units_planned
    assert shard_files(out) == before


def test_driver_killed_mid_run_then_rerun_gives_identical_shards_without_duplicates(
    reference_run, sample_dir, bpe_path, tmp_path
):
    ref_out, _ = reference_run
    out = tmp_path / "crash"
    cmd = [
        sys.executable,
        "-m",
        "jobs.tokenize",
        "--input",
        str(sample_dir / "*.jsonl"),
        "--output",
        str(out),
        "--tokenizer",
        f"bpe:{bpe_path}",
        "--actors",
        "2",
        "--unit-bytes",
        "100000",
        "--no-progress",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ledger = out / "ledger"
    deadline = time.time() + 300
    while time.time() < deadline and not (
        ledger.exists() and len(list(ledger.glob("*.json"))) >= 2
    ):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    partial = len(list(ledger.glob("*.json")))
    planned = len(shard_files(ref_out))
    assert 2 <= partial < planned, (
        f"kill landed after {partial}/{planned} units: {err.decode()[-2000:]}"
    )
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # actors of the killed driver may still commit a unit or two before Ray reaps them: never a duplicate
    assert summary["units_skipped"] >= partial and summary["complete"]
    assert shard_files(out) == shard_files(ref_out)
    ids = [r["doc_id"] for r in shard_rows(str(out))]
    assert len(ids) == len(set(ids)) == summary["documents"]


def test_bad_input_goes_to_rejects_and_counts_reconcile(ray_session, tmp_path, bpe_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "mixed.jsonl").write_bytes(
        b"\n".join(
            [
                b'{"id": "a", "text": "Guten Tag"}',
                b'{"id": "b", "text": "caf\xe9"}',
                b"{not json",
                b'{"id": "c"}',
                b'{"id": "d", "text": ["x"]}',
                b'{"id": "e", "text": ""}',
                b'{"id": "f", "text": "' + b"z" * 64 + b'"}',
                b'{"id": "g", "text": "Hallo"}',
            ]
        )
        + b"\n"
    )
    out = tmp_path / "out"
    summary = run_job(
        load_config(
            input=[str(corpus / "*.jsonl")],
            output=str(out),
            tokenizer=f"bpe:{bpe_path}",
            max_doc_bytes=32,
            progress=False,
        )
    )
    assert (summary.docs_read, summary.documents, summary.rejected) == (8, 2, 6)
    entry = LedgerEntry.from_json(json.loads(next((out / "ledger").glob("*.json")).read_text()))
    assert entry.docs_read == entry.documents + entry.rejected
    with pa.memory_map(str(out / entry.rejects)) as source:
        rejects = pa.ipc.open_file(source).read_all().to_pylist()
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "invalid UTF-8 at byte 24 of the record"),
        (3, "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
        (4, "missing text field 'text'"),
        (5, "text field 'text' is list, expected string"),
        (6, "empty text"),
        (7, "document too large: 64 bytes > max_doc_bytes 32"),
    ]
    assert all(r["source"] == str(corpus / "mixed.jsonl") for r in rejects)
    assert [r["doc_id"] for r in shard_rows(str(out))] == ["a", "g"]
    assert verify_output(str(out)).ok


def test_bad_config_names_the_field_and_exits_before_any_work(tmp_path, bpe_path, sample_dir):
    with pytest.raises(ConfigError, match="actors: Input should be greater than 0"):
        load_config(input=["x"], output="o", tokenizer=f"bpe:{bpe_path}", actors=0)
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: ['{sample_dir}/*.jsonl']\noutput: {tmp_path / 'o'}\ntokenizer: bpe:{bpe_path}\n"
        "unit_byts: 10\n"
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "unit_byts: Extra inputs are not permitted" in result.output
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--input",
            str(sample_dir / "*.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--tokenizer",
            "bpe",
        ],
    )
    assert result.exit_code == 2 and "tokenizer" in result.output and "KIND:PATH" in result.output


def test_config_file_and_flags_are_equivalent_and_flags_win(
    ray_session, tmp_path, sample_dir, bpe_path
):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: ['{sample_dir}/zh.jsonl']\noutput: {tmp_path / 'from-file'}\n"
        f"tokenizer: bpe:{bpe_path}\nactors: 1\nprogress: false\n"
    )
    result = CliRunner().invoke(
        cli, ["run", "--config", str(config), "--output", str(tmp_path / "flag-wins")]
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "from-file").exists()
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["documents"] == 72
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "flag-wins")])
    report = json.loads(result.output.strip().splitlines()[-1])
    assert result.exit_code == 0 and report["documents"] == 72 and report["units"] == 1


def test_an_output_refuses_a_second_configuration(
    ray_session, tmp_path, sample_dir, bpe_path, sp_path
):
    run_job(
        load_config(
            input=[str(sample_dir / "ru.jsonl")],
            output=str(tmp_path / "o"),
            tokenizer=f"bpe:{bpe_path}",
            progress=False,
        )
    )
    from pipeline.errors import LedgerError

    with pytest.raises(LedgerError, match="another configuration"):
        run_job(
            load_config(
                input=[str(sample_dir / "ru.jsonl")],
                output=str(tmp_path / "o"),
                tokenizer=f"sentencepiece:{sp_path}",
                progress=False,
            )
        )


def test_full_job_from_and_to_s3_then_verify(ray_session, s3, s3_sample, bpe_path, sample_records):
    s3.create_bucket("tokens")
    storage = s3.storage_options
    summary = run_job(
        load_config(
            input=[s3_sample],
            output="s3://tokens/run1",
            tokenizer=f"bpe:{bpe_path}",
            storage_options=storage,
            unit_bytes=200_000,
            progress=False,
        )
    )
    total = sum(len(v) for v in sample_records.values())
    assert summary.complete and summary.documents == total
    opts = [f"--storage-option={k}={v}" for k, v in storage.items()]
    result = CliRunner().invoke(cli, ["verify", "s3://tokens/run1", *opts])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["units"], report["documents"], report["rejected"]) == (
        summary.units_committed,
        total,
        0,
    )
    assert report["tokens"] == summary.tokens
    fs = s3.filesystem()
    assert len(fs.ls("tokens/run1/shards")) == summary.units_committed
    assert storage["secret"] not in json.dumps(summary.to_json())


def test_verify_names_a_corrupted_shard(reference_run, tmp_path):
    import shutil

    out, _ = reference_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    name = sorted(shard_files(copy))[0]
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["verify", str(copy)])
    assert result.exit_code == 1
    assert f"shard {name} checksum mismatch" in result.output


def test_sentencepiece_job_decodes_back_to_input(
    ray_session, tmp_path, sample_dir, sp_path, sample_records
):
    out = tmp_path / "sp"
    summary = run_job(job(sample_dir, out, f"sentencepiece:{sp_path}", verify_sample=1.0))
    tok = load_tokenizer(f"sentencepiece:{sp_path}")
    expected = {r["id"]: r["text"] for lang in LANGS for r in sample_records[lang]}
    rows = shard_rows(str(out))
    assert len(rows) == summary.documents == len(expected)
    assert all(tok.decode(r["tokens"]) == expected[r["doc_id"]] for r in rows)
    import gigatoken.gigatoken_rs  # noqa: F401
    import sentencepiece

    from tokenizers_impl.encoders.base import package_version

    # a BPE model: gigatoken encodes it (exact on the probes), recorded as for the bpe backends;
    # the library is its reference, re-encoding the verification sample
    assert (summary.encoder, summary.encoder_version) == ("gigatoken", package_version("gigatoken"))
    assert summary.tokenizer["encoder_fallbacks"] == []
    assert summary.verified_documents == summary.documents  # (verify_sample=1: every document)
    ids = [r["tokens"] for r in rows]
    texts = [expected[r["doc_id"]] for r in rows]
    library = sentencepiece.SentencePieceProcessor(model_file=str(sp_path))
    assert ids == library.encode(texts, out_type=int)  # every document, not only the sample
    slow = run_job(
        job(sample_dir, tmp_path / "lib", f"sentencepiece:{sp_path}", encoder="sentencepiece")
    )
    assert slow.encoder == "sentencepiece" and slow.encoder_version == sentencepiece.__version__
    assert shard_files(tmp_path / "lib") == shard_files(out)  # the same bytes whichever encodes


def test_train_tokenizer_and_demo_commands(ray_session, tmp_path, sample_dir):
    path = tmp_path / "tok.json"
    result = CliRunner().invoke(
        cli,
        [
            "train-tokenizer",
            "--kind",
            "bpe",
            "--input",
            str(sample_dir / "*.jsonl"),
            "--vocab-size",
            "2000",
            "--output",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["vocab_size"] == 2000
    result = CliRunner().invoke(cli, ["demo", "--output", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    final = json.loads(result.output.strip().splitlines()[-1])
    assert final == {
        "shards": f"{tmp_path / 'demo'}/tokens/shards",
        "documents": 363,
        "tokens": final["tokens"],
        "ok": True,
    }
    assert Path(final["shards"]).is_dir()


def test_train_tokenizer_says_when_the_vocabulary_is_not_the_size_asked(tmp_path, sample_dir):
    """An empty corpus trained and saved a bytes-only tokenizer, and a vocabulary smaller or
    larger than asked came out without a word: no documents is now an error (nothing saved),
    and another size is a note on stderr with the corpus' size or the trainer's base."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "tiny.jsonl").write_text('{"text": "hello world"}\n{"text": "hello there"}\n')
    runner = CliRunner()  # (click 8.2+: stdout and stderr apart, output both)

    def train(corpus: str, size: int, out: str):
        args = ["train-tokenizer", "--kind", "bpe", "--input", str(tmp_path / corpus)]
        return runner.invoke(
            cli, [*args, "--vocab-size", str(size), "--output", str(tmp_path / out)]
        )

    result = train("empty.jsonl", 300, "e.json")
    assert result.exit_code == 2 and not (tmp_path / "e.json").exists()
    assert "no documents to train on in " in result.output
    result = train("tiny.jsonl", 300, "t.json")
    assert result.exit_code == 0
    assert json.loads(result.stdout.strip().splitlines()[-1])["vocab_size"] < 300
    assert "not the 300 asked: the corpus (2 documents, 22 characters)" in result.stderr
    result = train("tiny.jsonl", 100, "s.json")
    assert result.exit_code == 0
    assert "has 257 tokens, not the 100 asked: the trainer's base vocabulary" in result.stderr


def test_train_tokenizer_reports_rejects_and_refuses_bad_values_before_training(tmp_path):
    """A train-tokenizer hunt: bad lines were dropped without a word (an all-rejected corpus said
    only "no documents"); a negative or huge vocabulary, a negative option or a bad split
    regex were tracebacks (OverflowError, an abort in the trainer); an option of another kind
    was ignored; an output that is a directory or cannot be created failed after training."""
    lines = '{"text": "hello world"}\nnot json\n{"body": "no text field"}\n'
    (tmp_path / "c.jsonl").write_text(lines)
    (tmp_path / "bad.jsonl").write_text("not json\n")
    runner = CliRunner()

    def train(*extra: str, corpus: str = "c.jsonl", out: str = "t.json"):
        args = ["train-tokenizer", "--kind", "bpe", "--input", str(tmp_path / corpus)]
        return runner.invoke(cli, [*args, "--output", str(tmp_path / out), *extra])

    result = train("--vocab-size", "300")
    assert result.exit_code == 0
    assert (
        "2 record(s) rejected (" in result.stderr
        and "c.jsonl line 2: invalid JSON" in result.stderr
    )
    result = train("--vocab-size", "300", corpus="bad.jsonl", out="b.json")
    assert result.exit_code == 2 and "bad.jsonl line 1: invalid JSON" in result.output
    for extra, said in [
        (("--vocab-size", "-5"), "is not in the range"),
        (("--vocab-size", "10000000000"), "is not in the range"),
        (("--vocab-size", "300", "--max-docs", "0"), "is not in the range"),
        (("--vocab-size", "300", "--option", "min_frequency=-1"), "failed: OverflowError"),
        (("--vocab-size", "300", "--option", "split_pattern=(unclosed"), "unmatched parenthesis"),
        (("--vocab-size", "300", "--model-type", "unigram"), "--model-type is an option of"),
    ]:
        result = train(*extra, out="x.json")
        assert result.exit_code == 2 and said in result.output, (extra, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "x.json").exists()
    (tmp_path / "folder").mkdir()
    result = train("--vocab-size", "300", out="folder")
    assert result.exit_code == 2 and "is a directory" in result.output
    result = train("--vocab-size", "300", out="missing/t.json")
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.parametrize("kind", ["tiktoken", "dynamic_merge"])
def test_train_tokenizer_refuses_a_kind_that_does_not_train(tmp_path, sample_dir, kind):
    """A kind without training (a .tiktoken file or a dynamic_merge config come from elsewhere)
    is a one-line user error naming the kinds that train, not a traceback; nothing is written."""
    out = tmp_path / "tok.out"
    args = ["train-tokenizer", "--kind", kind, "--input", str(sample_dir / "*.jsonl")]
    result = CliRunner().invoke(cli, [*args, "--vocab-size", "300", "--output", str(out)])
    assert result.exit_code == 2, result.output
    assert f"tokenizer kind {kind!r} is not trained here" in result.output
    assert "kinds that train: bpe, lib, sentencepiece" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_scratch_files_a_killed_run_left_for_an_s3_output_are_removed_by_the_next(
    s3, bpe_path, sample_dir, tmp_path, monkeypatch
):
    """An object-store output's units are built in this machine's temporary folder, then
    uploaded. A run killed meanwhile left them there for good (a unit's worth per kill, found by
    a kill-at-random soak), and neither the next run nor `verify` saw them. Now they live in a
    folder per output and name their process; the first use in a process removes those of
    dead processes, and leaves a live one's alone."""
    import subprocess
    import sys

    from pipeline.output import storage

    monkeypatch.setattr(storage.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(storage, "_SWEPT", set())
    s3.create_bucket("spooled")
    url = "s3://spooled/out"
    scratch = storage.remote_spool_dir(url)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    left = os.path.join(scratch, f"spool-{dead}-{'0' * 32}")
    live = os.path.join(scratch, f"spool-{os.getppid()}-{'1' * 32}")
    for path in (left, live):
        with open(path, "wb") as handle:
            handle.write(b"half a shard")
    monkeypatch.setattr(storage, "_SWEPT", set())  # a new process, as far as the sweep knows
    summary = run_job(
        load_config(
            input=[str(sample_dir / "de.jsonl")],
            output=url,
            tokenizer=f"bpe:{bpe_path}",
            storage_options=s3.storage_options,
            progress=False,
        )
    )
    assert summary.complete
    assert sorted(os.listdir(scratch)) == [os.path.basename(live)]  # the run's own are gone too
