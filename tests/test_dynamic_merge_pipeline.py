"""`tokenmill run` with a dynamic_merge tokenizer: batch_id column, sidecar vocabularies that decode
every document exactly, and per-batch L0/Lm/Lword readable with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.output.ledger import committed_entries
from pipeline.output.shards import read_ipc
from pipeline.output.storage import Output
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job
from tokenizers_impl import load_tokenizer
from tokenizers_impl.dynamic_merge import vocab_from_sidecar

from .helpers import LANGS


def test_run_writes_batch_ids_and_sidecars_that_decode_every_document(
    ray_session, sample_dir, sample_records, bpe_path, tmp_path
):
    config = tmp_path / "merge.json"
    config.write_text(json.dumps({"base": f"bpe:{bpe_path}", "max_merges": 40, "batch_docs": 16}))
    out = tmp_path / "out"
    cfg = load_config(
        input=[str(sample_dir / "*.jsonl")],
        output=str(out),
        tokenizer=f"dynamic_merge:{config}",
        actors=2,
        unit_bytes=400_000,
        token_offsets=True,
        progress=False,
    )
    summary = run_job(cfg)
    assert summary.complete and summary.rejected == 0

    tok = load_tokenizer(f"dynamic_merge:{config}")
    expected = {r["id"]: r["text"] for lang in LANGS for r in sample_records[lang]}
    output = Output(str(out))
    seen, sidecars = set(), []
    for entry in committed_entries(output):
        shard = read_ipc(output, entry.shard).to_pylist()
        sidecar = read_ipc(output, entry.sidecar)
        sidecars.append(sidecar)
        stats = sidecar.filter(pa.compute.is_null(sidecar["new_id"]))
        assert stats["batch_id"].to_pylist() == list(range(entry.batches))
        assert sum(stats["lm"].to_pylist()) == sum(row["n_tokens"] for row in shard)
        for row in shard:
            vocab = vocab_from_sidecar(sidecar, row["batch_id"])
            text = expected[row["doc_id"]]
            data = tok.decode_bytes(row["tokens"], vocab)
            assert data == text.encode("utf-8")
            ends = [len(tok.decode_bytes(row["tokens"][: k + 1], vocab)) for k in range(3)]
            assert row["token_offsets"][:3] == ends[: len(row["token_offsets"][:3])]
            assert row["token_offsets"][-1] == len(data)
            seen.add(row["doc_id"])
    assert seen == set(expected)
    assert any(max(row["tokens"]) >= 8000 for row in shard)

    sidecar = pa.concat_tables(sidecars)  # noqa: F841 (read by DuckDB below)
    l0, lm, lword = duckdb.sql(
        "SELECT sum(l0), sum(lm), sum(lword) FROM sidecar WHERE new_id IS NULL"
    ).fetchall()[0]
    assert lword < lm < l0 and lm == summary.tokens
    assert Path(out, entry.sidecar).exists()


def test_its_batch_local_ids_are_refused_by_retokenize_and_train_ngram(
    ray_session, sample_dir, bpe_path, tmp_path
):
    """Merged ids mean something only with their batch's sidecar vocabulary: retokenize failed
    mid-job with 'merged ids need their batch vocabulary' (job.json already written), and
    train-ngram counted them as one vocabulary (exit 0). Both now refuse up front, naming why."""
    from click.testing import CliRunner

    from jobs.cli import main as cli

    config = tmp_path / "merge.json"
    config.write_text(json.dumps({"base": f"bpe:{bpe_path}", "max_merges": 20}))
    out = tmp_path / "out"
    run_job(
        load_config(
            input=[str(sample_dir / "de.jsonl")],
            output=str(out),
            tokenizer=f"dynamic_merge:{config}",
            progress=False,
        )
    )
    again = tmp_path / "re"
    flags = ["--input", str(out), "--output", str(again), "--tokenizer", f"bpe:{bpe_path}"]
    result = CliRunner().invoke(cli, ["retokenize", *flags, "--no-progress"])
    assert result.exit_code == 2 and "writes ids local to each batch" in result.output
    assert not (again / "job.json").exists()
    result = CliRunner().invoke(
        cli,
        [
            "train-ngram",
            "--shards",
            str(out),
            "--tokenizer",
            f"dynamic_merge:{config}",
            "--output",
            str(tmp_path / "m.npz"),
        ],
    )
    assert result.exit_code == 2 and "merged ids are local to their batch" in result.output
