"""Output bytes are a contract: a fixed corpus and tokenizer, served from the local S3 server so every
URL is the same on any machine, must give exactly the shard, rejects, sidecar, unigram and ledger
bytes recorded in tests/golden/golden.json. A change that alters them must be a deliberate
output-format change: rerun with TOKENMILL_UPDATE_GOLDEN=1 and say why in the commit."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path

from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job

GOLDEN = Path(__file__).parent / "golden"
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
BUCKET = "golden"
# Ledger fields that measure a run rather than describe its output: its timings, the lease it ran
# under, and which encoder backend produced the (identical) ids on this machine.
RUN_FIELDS = ("timings", "lease")
ENCODER_FIELDS = ("encoder", "encoder_version", "encoder_fallbacks")


def _upload(s3) -> None:
    s3.create_bucket(BUCKET)
    fs = s3.filesystem()
    for path in sorted(glob.glob(str(SAMPLE / "*.jsonl"))):
        fs.put_file(path, f"{BUCKET}/in/{Path(path).name}")
    for name in ("bad.jsonl", "notes.txt", "extra.jsonl.gz", "bpe-2k.json"):
        fs.put_file(str(GOLDEN / name), f"{BUCKET}/in/{name}")
    merge = {"base": f"bpe:s3://{BUCKET}/in/bpe-2k.json", "max_merges": 20, "batch_docs": 16}
    fs.pipe_file(f"{BUCKET}/in/merge.json", json.dumps(merge).encode())


def _digests(s3, prefix: str) -> dict[str, str]:
    """sha256 of every committed object under the prefix (ledger entries without run timings)."""
    fs = s3.filesystem()
    out: dict[str, str] = {}
    for path in sorted(fs.find(f"{BUCKET}/{prefix}")):
        rel = path.split(f"{BUCKET}/{prefix}/", 1)[1]
        top = rel.split("/", 1)[0]
        if top not in ("shards", "rejects", "sidecar", "unigrams", "ledger"):
            continue
        data = fs.cat_file(path)
        if top == "ledger":
            entry = {k: v for k, v in json.loads(data).items() if k not in RUN_FIELDS}
            entry["tokenizer"] = {
                k: v for k, v in entry["tokenizer"].items() if k not in ENCODER_FIELDS
            }
            data = json.dumps(entry, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def test_outputs_match_the_golden_hashes(ray_session, s3):
    _upload(s3)
    storage = s3.storage_options
    runs = {
        "bpe": dict(
            input=[
                f"s3://{BUCKET}/in/*.jsonl",
                f"s3://{BUCKET}/in/*.txt",
                f"s3://{BUCKET}/in/*.gz",
            ],
            tokenizer=f"bpe:s3://{BUCKET}/in/bpe-2k.json",
            unit_bytes=200_000,
            token_offsets=True,
        ),
        "merge": dict(
            input=[f"s3://{BUCKET}/in/en.jsonl"],
            tokenizer=f"dynamic_merge:s3://{BUCKET}/in/merge.json",
        ),
    }
    got: dict[str, dict[str, str]] = {}
    for name, fields in runs.items():
        cfg = load_config(
            output=f"s3://{BUCKET}/out-{name}",
            storage_options=storage,
            actors=2,
            progress=False,
            **fields,
        )
        summary = run_job(cfg)
        assert summary.complete
        got[name] = _digests(s3, f"out-{name}")
    path = GOLDEN / "golden.json"
    if os.environ.get("TOKENMILL_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    for name in runs:
        assert sorted(got[name]) == sorted(expected[name]), f"{name}: object names differ"
        changed = [rel for rel in expected[name] if got[name][rel] != expected[name][rel]]
        assert not changed, f"{name}: bytes differ for {changed}"
    assert any(rel.startswith("rejects/") for rel in got["bpe"])
    assert any(rel.startswith("sidecar/") for rel in got["merge"])
