"""Sampled verification while running: a deterministic sample of each unit's documents is
re-encoded with the tokenizer's reference encoder; a difference fails the unit, naming the
document; the ledger counts what was verified."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import VerificationFailed
from pipeline.output import Output
from pipeline.tokenize.engine import prepare
from pipeline.tokenize.inputs import plan_units
from pipeline.tokenize.unit import process_unit
from tokenizers_impl import load_tokenizer

from .helpers import SAMPLE_DIR, job_config, read_jsonl


def run_units(tmp_path, bpe_path, tokenizer, share):
    cfg = job_config(
        SAMPLE_DIR / "de.jsonl",
        tmp_path / "out",
        f"bpe:{bpe_path}",
        verify_sample=share,
        unit_bytes=100_000,
    )
    job = prepare(cfg)
    output = Output(cfg.output)
    return [
        process_unit(u, tokenizer, job.task, output).entry
        for u in plan_units(cfg.input, cfg.read_options())
    ]


def test_every_document_is_verified_at_share_one(tmp_path, bpe_path):
    tokenizer = load_tokenizer(f"bpe:{bpe_path}")
    assert tokenizer.verifiable
    entries = run_units(tmp_path, bpe_path, tokenizer, 1.0)
    assert sum(e.verified_documents for e in entries) == len(read_jsonl(SAMPLE_DIR / "de.jsonl"))
    assert sum(e.verified_bytes for e in entries) == sum(e.bytes for e in entries)


def test_the_sample_is_deterministic_and_near_its_share(tmp_path, bpe_path):
    tokenizer = load_tokenizer(f"bpe:{bpe_path}")
    a = run_units(tmp_path / "a", bpe_path, tokenizer, 0.25)
    b = run_units(tmp_path / "b", bpe_path, tokenizer, 0.25)
    assert [e.verified_documents for e in a] == [e.verified_documents for e in b]
    assert 10 <= sum(e.verified_documents for e in a) <= 40  # 96 documents at 25%
    assert sum(e.verified_documents for e in run_units(tmp_path / "c", bpe_path, tokenizer, 0)) == 0


def test_a_wrong_encoder_fails_the_unit_naming_the_document(tmp_path, bpe_path, monkeypatch):
    tokenizer = load_tokenizer(f"bpe:{bpe_path}")
    reference = tokenizer.reference_encode_batch
    victim = read_jsonl(SAMPLE_DIR / "de.jsonl")[3]

    def wrong(texts):  # the reference disagrees with the fast encoder on one document
        out = reference(texts)
        return [
            np.r_[ids[:5], ids[5:] + 1] if t == victim["text"] else ids
            for t, ids in zip(texts, out, strict=True)
        ]

    monkeypatch.setattr(tokenizer, "reference_encode_batch", wrong)
    with pytest.raises(
        VerificationFailed,
        match=rf"document '{victim['id']}' encoded by \w+ "
        r"differs from the reference at token 5",
    ):
        run_units(tmp_path, bpe_path, tokenizer, 1.0)
    assert list((tmp_path / "out" / "ledger").glob("*.json")) == []  # the unit is not committed
