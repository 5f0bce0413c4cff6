"""LiB end to end: `tokenmill train-tokenizer --kind lib`, then `tokenmill run --tokenizer lib:PATH`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jobs.cli import main as cli
from tokenizers_impl import load_tokenizer

from .helpers import LANGS, shard_rows


def test_lib_trains_from_the_cli_and_its_shards_decode_to_the_input(
    ray_session, tmp_path, sample_dir, sample_records
):
    path = tmp_path / "lib.json"
    result = CliRunner().invoke(
        cli,
        [
            "train-tokenizer",
            "--kind",
            "lib",
            "--input",
            str(sample_dir / "*.jsonl"),
            "--vocab-size",
            "6000",
            "--max-docs",
            "40",
            "--output",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    described = json.loads(result.output.strip().splitlines()[-1])
    assert described["kind"] == "lib" and described["vocab_size"] <= 6000
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--input",
            str(sample_dir / "*.jsonl"),
            "--output",
            str(tmp_path / "out"),
            "--tokenizer",
            f"lib:{path}",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(f"lib:{path}")
    expected = {r["id"]: r["text"] for lang in LANGS for r in sample_records[lang]}
    rows = shard_rows(str(tmp_path / "out"))
    assert len(rows) == len(expected)
    for row in rows:
        assert tok.decode_bytes(row["tokens"]) == expected[row["doc_id"]].encode("utf-8")
    # multi-word units (a space inside, not only at the start) are used in the shards
    multi = {i for i in range(tok.vocab_size) if b" " in tok.token_bytes(i).strip(b" ")}
    assert any(t in multi for row in rows for t in row["tokens"])


def test_lib_training_flags_reach_the_saved_params(tmp_path, sample_dir):
    path = tmp_path / "lib.json"
    args = ["train-tokenizer", "--kind", "lib", "--input", str(sample_dir / "en.jsonl")]
    args += ["--vocab-size", "3000", "--max-docs", "3", "--output", str(path)]
    flags = ["--lib-admit-after", "2", "--lib-new-on-probation", "false"]
    result = CliRunner().invoke(cli, [*args, *flags, "--lib-doc-sentences", "20"])
    assert result.exit_code == 0, result.output
    saved = json.loads(path.read_text())
    assert saved["params"]["admit_after"] == 2 and saved["params"]["new_on_probation"] is False
    assert load_tokenizer(f"lib:{path}").params.admit_after == 2
    result = CliRunner().invoke(cli, [*args, "--lib-admit-after", "0"])
    assert result.exit_code != 0
