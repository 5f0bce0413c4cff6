"""Shared fixtures: one local Ray cluster and one S3-protocol server per test session, sample data,
and small tokenizers trained once on the sample corpus."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"
LANGS = ("code", "de", "en", "ru", "zh")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_records() -> dict[str, list[dict]]:
    """Records of the sample corpus by language."""
    return {lang: read_jsonl(SAMPLE_DIR / f"{lang}.jsonl") for lang in LANGS}


@pytest.fixture(scope="session")
def sample_texts(sample_records) -> list[str]:
    return [r["text"] for lang in LANGS for r in sample_records[lang]]


@pytest.fixture(scope="session")
def bpe_path(tmp_path_factory, sample_texts) -> str:
    """A byte-level BPE with 8,000 tokens trained on the sample corpus."""
    from tokenizers_impl.bpe import BPETokenizer

    path = str(tmp_path_factory.mktemp("tok") / "bpe-8k.json")
    BPETokenizer.train(sample_texts, vocab_size=8000).save(path)
    return path


@pytest.fixture(scope="session")
def sp_path(tmp_path_factory, sample_texts) -> str:
    """A lossless SentencePiece BPE model with 4,000 pieces trained on the sample corpus."""
    from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

    path = str(tmp_path_factory.mktemp("tok") / "sp-4k.model")
    SentencePieceTokenizer.train(sample_texts, vocab_size=4000, model_type="bpe").save(path)
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray cluster for the whole session (ray.init costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3():
    """A real S3-protocol server (moto server mode) on 127.0.0.1 for the session."""
    from infra.s3_server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_sample(s3) -> str:
    """The sample corpus uploaded to s3://corpus/sample/; returns the glob URL."""
    s3.create_bucket("corpus")
    fs = s3.filesystem()
    for path in sorted(glob.glob(str(SAMPLE_DIR / "*.jsonl"))):
        fs.put_file(path, f"corpus/sample/{Path(path).name}")
    return "s3://corpus/sample/*.jsonl"


def shard_rows(output_url: str, storage_options: dict | None = None) -> list[dict]:
    """All committed shard rows of an output, in ledger order."""
    from pipeline.ledger import committed_entries
    from pipeline.shards import read_ipc
    from pipeline.storage import Output

    output = Output(output_url, storage_options)
    rows: list[dict] = []
    for entry in committed_entries(output):
        rows.extend(read_ipc(output, entry["shard"]).to_pylist())
    return rows


def shard_files(output_dir: str | Path) -> dict[str, bytes]:
    """name -> bytes of every committed shard of a local output."""
    out = Path(output_dir)
    names = [json.loads(p.read_text())["shard"] for p in sorted((out / "ledger").glob("*.json"))]
    return {name: (out / name).read_bytes() for name in names}
