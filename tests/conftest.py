"""Shared fixtures: one local Ray cluster and one S3-protocol server per test session, sample data,
and small tokenizers trained once on the sample corpus."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from .helpers import LANGS, SAMPLE_DIR, read_jsonl

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
def plain(tmp_path_factory, sample_dir, bpe_path) -> str:
    """The loader tests' output: the sample corpus tokenized by the engine (in the driver) in
    200 kB units, so several shards and shard groups; read, never changed."""
    from pipeline.tokenize import run_job

    from .helpers import job_config

    out = tmp_path_factory.mktemp("loader") / "plain"
    run_job(job_config(sample_dir / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=200_000))
    assert len(list((out / "ledger").glob("*.json"))) > 4  # several shards, several groups
    return str(out)


@pytest.fixture(scope="session")
def masked(plain, tmp_path_factory) -> str:
    """`plain` with a chat loss_mask column (helpers.mask_rule)."""
    from .helpers import add_loss_mask

    out = tmp_path_factory.mktemp("loader") / "masked"
    add_loss_mask(plain, out)
    return str(out)


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
