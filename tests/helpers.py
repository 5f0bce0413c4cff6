"""Helpers shared by the tests (fixtures live in conftest.py): the sample corpus, one job-config
factory, and readers of committed output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"
LANGS = ("code", "de", "en", "ru", "zh")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def job_config(inputs: Any, output: Any, tokenizer: str, **fields: Any):
    """A validated JobConfig for tests: progress bar off unless asked; inputs may be one glob."""
    from pipeline.tokenize.config import load_config

    fields.setdefault("progress", False)
    inputs = [str(p) for p in inputs] if isinstance(inputs, (list, tuple)) else [str(inputs)]
    return load_config(input=inputs, output=str(output), tokenizer=tokenizer, **fields)


def shard_rows(output_url: str, storage_options: dict | None = None) -> list[dict]:
    """All committed shard rows of an output, in ledger order."""
    from pipeline.output import Output, iter_committed
    from pipeline.output.shards import read_ipc

    output = Output(str(output_url), storage_options)
    rows: list[dict] = []
    for entry in iter_committed(output):
        rows.extend(read_ipc(output, entry.shard).to_pylist())
    return rows


def shard_files(output_dir: str | Path) -> dict[str, bytes]:
    """name -> bytes of every committed shard of a local output."""
    out = Path(output_dir)
    names = [json.loads(p.read_text())["shard"] for p in sorted((out / "ledger").glob("*.json"))]
    return {name: (out / name).read_bytes() for name in names}
