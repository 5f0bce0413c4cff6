"""Re-tokenization through bytes and per-token byte offsets in shards (issue: byte-token conversion)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from jobs.cli import main as cli
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job
from tokenizers_impl import load_tokenizer
from tokenizers_impl.byte_token import byte_span_to_tokens, token_end_offsets, tokens_to_byte_span

from .helpers import shard_rows


def _cli_json(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_bpe_to_sentencepiece_to_bpe_keeps_every_byte(
    ray_session, tmp_path, sample_dir, bpe_path, sp_path
):
    first = tmp_path / "bpe"
    run_job(
        load_config(
            input=[str(sample_dir / "*.jsonl")],
            output=str(first),
            tokenizer=f"bpe:{bpe_path}",
            unit_bytes=150_000,
            progress=False,
        )
    )
    bpe, sp = load_tokenizer(f"bpe:{bpe_path}"), load_tokenizer(f"sentencepiece:{sp_path}")
    original = {r["doc_id"]: r for r in shard_rows(str(first))}

    mid = _cli_json(
        [
            "retokenize",
            "--input",
            str(first),
            "--output",
            str(tmp_path / "sp"),
            "--tokenizer",
            f"sentencepiece:{sp_path}",
            "--no-progress",
        ]
    )
    assert mid["documents"] == len(original) and mid["rejected"] == 0
    assert (
        mid["units_planned"] == len({r["doc_id"] for r in original.values()})
        or mid["units_planned"] > 5
    )
    for row in shard_rows(str(tmp_path / "sp")):
        before = original[row["doc_id"]]
        assert sp.decode_bytes(row["tokens"]) == bpe.decode_bytes(before["tokens"])
        assert (row["source"], row["lang"], row["n_bytes"]) == (
            before["source"],
            before["lang"],
            before["n_bytes"],
        )

    back_args = [
        "retokenize",
        "--input",
        str(tmp_path / "sp"),
        "--output",
        str(tmp_path / "back"),
        "--tokenizer",
        f"bpe:{bpe_path}",
        "--no-progress",
    ]
    back = _cli_json(back_args)
    assert back["documents"] == len(original)
    for row in shard_rows(str(tmp_path / "back")):
        assert row["tokens"] == original[row["doc_id"]]["tokens"]

    again = _cli_json(back_args)  # the same run again: every unit is already committed
    assert again["units_run"] == 0 and again["units_skipped"] == back["units_planned"]


def test_token_offsets_column_maps_byte_spans_to_tokens(
    ray_session, tmp_path, sample_dir, sp_path, sample_records
):
    out = tmp_path / "offsets"
    run_job(
        load_config(
            input=[str(sample_dir / "*.jsonl")],
            output=str(out),
            tokenizer=f"sentencepiece:{sp_path}",
            token_offsets=True,
            progress=False,
        )
    )
    tok = load_tokenizer(f"sentencepiece:{sp_path}")
    texts = {r["id"]: r["text"].encode("utf-8") for recs in sample_records.values() for r in recs}
    for row in shard_rows(str(out)):
        offsets = np.array(row["token_offsets"], dtype=np.uint32)
        assert np.array_equal(offsets, token_end_offsets(tok, row["tokens"]))
        data = texts[row["doc_id"]]
        assert offsets[-1] == len(data) == row["n_bytes"]
        # a byte span in the middle maps to the tokens covering it and back to an enclosing span
        a, b = len(data) // 3, len(data) // 3 + 7
        i, j = byte_span_to_tokens(offsets, a, b)
        lo, hi = tokens_to_byte_span(offsets, i, j)
        assert lo <= a and b <= hi
        assert data[lo:hi] == tok.decode_bytes(row["tokens"][i:j])


def test_a_source_tokenizer_that_did_not_write_the_shards_is_refused_before_anything(
    ray_session, tmp_path, sample_dir, bpe_path, sp_path, monkeypatch
):
    """A wrong --source-tokenizer decoded the shards into other text with exit 0 and `verify`
    ok; job.json kept the tokenizer path as typed, so a retokenize from another folder read
    whatever file of that name was there. Now the source's fingerprint must be the one that
    wrote the shards (refused before anything is written), and job.json holds an absolute path."""
    import shutil

    (tmp_path / "tok").mkdir()
    shutil.copy(bpe_path, tmp_path / "tok" / "bpe.json")
    monkeypatch.chdir(tmp_path / "tok")
    first = tmp_path / "bpe"
    cfg = load_config(
        input=[str(sample_dir / "de.jsonl")], output=str(first), tokenizer="bpe:bpe.json"
    )
    run_job(cfg.model_copy(update={"progress": False}))
    spec = json.loads((first / "job.json").read_text())["tokenizer_spec"]
    assert spec["path"] == str(tmp_path / "tok" / "bpe.json")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "re"
    flags = ["retokenize", "--input", str(first), "--output", str(out), "--no-progress"]
    wrong = CliRunner().invoke(
        cli,
        [
            *flags,
            "--tokenizer",
            f"bpe:{bpe_path}",
            "--source-tokenizer",
            f"sentencepiece:{sp_path}",
        ],
    )
    assert wrong.exit_code == 2 and "not by the source tokenizer" in wrong.output
    assert not (out / "job.json").exists() and not (out / "shards").exists()
    right = _cli_json([*flags, "--tokenizer", f"sentencepiece:{sp_path}"])  # from job.json
    assert right["complete"] and right["rejected"] == 0


def test_run_format_shards_takes_the_source_tokenizer_from_the_inputs_job_json(
    tmp_path, sample_dir, bpe_path, sp_path
):
    """As `retokenize` does (the docs say so of both): `run --format shards` without
    --source-tokenizer said "tokenizer spec '' must look like KIND:PATH". Same shards and config
    as `retokenize`; inputs written by different tokenizers are refused, naming both."""
    first, other = tmp_path / "bpe", tmp_path / "sp"
    for out, spec in ((first, f"bpe:{bpe_path}"), (other, f"sentencepiece:{sp_path}")):
        run_job(
            load_config(
                input=[str(sample_dir / "de.jsonl")],
                output=str(out),
                tokenizer=spec,
                progress=False,
            )
        )
    target = ["--tokenizer", f"sentencepiece:{sp_path}", "--no-progress"]
    ran = _cli_json(
        ["run", "--input", str(first), "--format", "shards", "--output", str(tmp_path / "a")]
        + target
    )
    again = _cli_json(
        ["retokenize", "--input", str(first), "--output", str(tmp_path / "b")] + target
    )
    assert ran["complete"] and ran["rejected"] == 0 and ran["documents"] == again["documents"]
    assert ran["config_hash"] == again["config_hash"]
    assert shard_rows(str(tmp_path / "a")) == shard_rows(str(tmp_path / "b"))
    mixed = CliRunner().invoke(
        cli,
        ["run", "--input", str(first), "--input", str(other), "--format", "shards"]
        + ["--output", str(tmp_path / "c"), *target],
    )
    assert mixed.exit_code == 2
    assert "written by different tokenizers" in mixed.output and f"bpe:{bpe_path}" in mixed.output


def test_a_changed_or_torn_shard_is_refused_not_retokenized(tmp_path, sample_dir, bpe_path):
    """A shard rewritten after its commit (valid Arrow, one id changed: its ledger checksum no
    longer matches) was re-tokenized as it now reads, with exit 0; a torn one gave pyarrow's
    traceback. Both are now refused, naming the shard."""
    import shutil

    import pyarrow as pa

    from tests.helpers import job_config

    first = tmp_path / "bpe"
    run_job(job_config(sample_dir / "de.jsonl", first, f"bpe:{bpe_path}"))
    (shard,) = (first / "shards").glob("*.arrow")
    table = pa.ipc.open_file(str(shard)).read_all()
    rows = table.to_pylist()
    rows[0]["tokens"][5] = (rows[0]["tokens"][5] + 1) % 8000
    changed = tmp_path / "changed"
    shutil.copytree(first, changed)
    with pa.ipc.new_file(str(changed / "shards" / shard.name), table.schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=table.schema))
    torn = tmp_path / "torn"
    shutil.copytree(first, torn)
    (torn / "shards" / shard.name).write_bytes(shard.read_bytes()[:1000])
    for source in (changed, torn):
        out = tmp_path / f"re-{source.name}"
        args = ["retokenize", "--input", str(source), "--output", str(out), "--no-progress"]
        result = CliRunner().invoke(cli, [*args, "--tokenizer", f"bpe:{bpe_path}"])
        assert result.exit_code == 2, result.output
        assert f"shard {source / 'shards' / shard.name} differs from its ledger entry" in (
            " ".join(result.output.split())
        )
        assert not list((out / "ledger").glob("*.json"))
