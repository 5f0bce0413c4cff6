"""A tokenizer plugin's output is checked before anything is written (found by a plugin author):
ids of -1 were cast to 4294967295 and crashed the word statistics (a segfault; on actors a restart
loop), an id of 2**32 + 5 was stored as 5, N + 1 id arrays for N texts moved tokens onto the
neighbouring documents, all with `verify` ok. Now each is a unit failure naming the tokenizer, the
rule and the document; an exception of the plugin names the document that raises it; a plugin
without a fingerprint or a vocabulary is refused at load."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import ConfigError, UnitFailed
from pipeline.tokenize.engine import run_job
from tokenizers_impl import EncodedBatch, TokenizerBase, TokenizerError, load_tokenizer, register
from tokenizers_impl.base import fingerprint_of

from .helpers import job_config

MARK = "ZZ"  # the document holding it is the one the plugin breaks on
LOADS = itertools.count()


class Faulty(TokenizerBase):
    """A character tokenizer (ids 1 + ord % 200) that breaks one rule on the document holding
    MARK, as its file says."""

    kind = "faulty-test"
    lossless = False

    def __init__(self, mode: str, name: str):
        self.mode, self.name, self.vocab_size = mode, name, 201
        self.fingerprint = "" if mode == "no-fingerprint" else fingerprint_of(self.kind, mode)
        if mode == "unstable":  # (another at every load: a temporary path hashed, say)
            self.fingerprint = fingerprint_of(self.kind, f"{mode}{next(LOADS)}")
        if mode == "no-vocab":
            self.vocab_size = 0
        if mode == "eos-out":  # (one past its vocabulary)
            self.eos_token, self.eos_id = "<eos>", self.vocab_size

    def encode_batch(self, texts):
        arrays = [np.array([1 + ord(c) % 200 for c in t], dtype=np.int64) for t in texts]
        for i, text in enumerate(texts):
            if MARK not in text:
                continue
            if self.mode == "negative":
                arrays[i] = np.append(arrays[i], -1)
            elif self.mode == "huge":
                arrays[i] = np.append(arrays[i], 2**32 + 5)
            elif self.mode == "vocab":
                arrays[i] = np.append(arrays[i], self.vocab_size)
            elif self.mode == "float":
                arrays[i] = arrays[i].astype(np.float64)
            elif self.mode == "split":
                arrays[i : i + 1] = [arrays[i][:1], arrays[i][1:]]
            elif self.mode == "raise":
                raise RuntimeError("cannot encode this")
        return arrays

    def encode_batch_flat(self, texts):
        flat, offsets = super().encode_batch_flat(texts)
        if self.mode == "offsets" and any(MARK in t for t in texts):
            offsets = offsets[1:]  # (the leading 0 left out)
        return flat, offsets

    def token_bytes(self, token_id):
        return b"?"

    @classmethod
    def load(cls, path, storage_options=None, **options):
        with open(path) as f:
            return cls(json.load(f)["mode"], name=path.rsplit("/", 1)[-1])

    def save(self, url, storage_options=None):
        with open(url, "w") as f:
            json.dump({"mode": self.mode}, f)


register(Faulty.kind, Faulty)


def run_with(tmp_path, mode: str, **fields):
    src = tmp_path / "in.jsonl"
    docs = [{"id": f"d{i}", "text": f"document {i} {MARK if i == 7 else ''}"} for i in range(20)]
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tok = tmp_path / f"{mode}.json"
    tok.write_text(json.dumps({"mode": mode}))
    out = tmp_path / f"out-{mode}"
    cfg = job_config(src, out, f"{Faulty.kind}:{tok}", verify_sample=0.0, **fields)
    return run_job(cfg)


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("negative", "id -1 of text 0 of the batch is out of its vocabulary (0..200)"),
        ("huge", "id 4294967301 of text 0 of the batch is out of its vocabulary"),
        ("vocab", "id 201 of text 0 of the batch is out of its vocabulary (0..200)"),
        ("float", "ids of dtype float64, not integers"),
        ("split", "encode_batch returned 2 id arrays for 1 texts"),
        ("raise", "raised RuntimeError: cannot encode this"),
        ("offsets", "offsets must be 21 integers for 20 documents"),
    ],
)
def test_a_broken_plugin_output_fails_its_unit_naming_the_rule_and_the_document(
    tmp_path, mode, says
):
    with pytest.raises(UnitFailed) as failed:
        run_with(tmp_path, mode)
    message = str(failed.value)
    assert says in message, message
    if mode != "offsets":  # (an override's whole batch: no one document to name)
        assert "document 'd7' (byte offset " in message, message
    assert not list((tmp_path / f"out-{mode}" / "shards").glob("*.arrow"))  # nothing committed


@pytest.mark.parametrize(
    ("mode", "says"), [("no-fingerprint", "has no fingerprint"), ("no-vocab", "has vocab_size 0")]
)
def test_a_plugin_without_fingerprint_or_vocabulary_is_refused_at_load(tmp_path, mode, says):
    tok = tmp_path / "t.json"
    tok.write_text(json.dumps({"mode": mode}))
    with pytest.raises(TokenizerError, match=says):
        load_tokenizer(f"{Faulty.kind}:{tok}")


def test_a_sound_plugin_output_passes_the_checks(tmp_path):
    summary = run_with(tmp_path, "fine")
    assert summary.complete and summary.documents == 20 and summary.rejected == 0


def test_a_driver_thread_whose_tokenizer_copy_has_another_fingerprint_refuses(tmp_path):
    """Ray actors refused a tokenizer of another fingerprint than the driver's; the driver's own
    threads (each loading a copy of a plugin that is not thread-safe) wrote its shards under the
    driver's tokenizer record, and verify then failed."""
    with pytest.raises(ConfigError, match="loaded by a driver thread has fingerprint"):
        run_with(
            tmp_path,
            "unstable",
            local_bytes=0,
            driver_threads=2,
            driver_processes=False,
            unit_bytes=200,
        )


@pytest.mark.parametrize(
    ("mode", "fields", "says"),
    [
        ("eos-out", {}, "gives eos_id 201, outside its vocabulary (0..200)"),
        ("fine", {"eos_token": "<|end|>"}, "did not take eos_token='<|end|>'"),
        ("fine", {"token_offsets": True}, "--token-offsets needs a lossless tokenizer"),
    ],
)
def test_what_a_job_needs_of_its_tokenizer_is_checked_before_it_runs(tmp_path, mode, fields, says):
    """An EOS id past the vocabulary was accepted (and the loader wrote it); an --eos-token the
    plugin ignored was taken silently (no EOS, and the same note again); --token-offsets with a
    lossy tokenizer wrote offsets that do not add up to the text's bytes."""
    with pytest.raises(ConfigError, match=re.escape(says)):
        run_with(tmp_path, mode, **fields)


class Noted(Faulty):
    """Global ids, plus a sidecar row per batch (the documented extra-table capability)."""

    kind = "noted-test"
    sidecar_schema = pa.schema([("batch_id", pa.int32()), ("note", pa.string())])

    def encode_for_shard(self, texts, batch_index):
        flat, offsets = self.encode_batch_flat(texts)
        note = pa.table({"batch_id": [batch_index], "note": [f"{len(texts)} texts"]})
        return EncodedBatch(flat, offsets, sidecar=note.cast(self.sidecar_schema))


class Local(Noted):
    kind = "local-test"
    batch_local_ids = True


register(Noted.kind, Noted)
register(Local.kind, Local)


def test_export_refuses_batch_local_ids_not_every_sidecar(tmp_path):
    """Export refused any output with a sidecar, saying its ids were batch-local: a plugin with
    global ids and a sidecar of its own could not be exported."""
    from pipeline.errors import ExportError
    from pipeline.export import ExportOptions, export_output

    tok = tmp_path / "fine.json"
    tok.write_text(json.dumps({"mode": "fine"}))
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(9))
    )
    for cls in (Noted, Local):
        out = tmp_path / cls.kind
        assert run_job(job_config(src, out, f"{cls.kind}:{tok}", verify_sample=0.0)).complete
        assert list((out / "sidecar").iterdir())
        if cls is Noted:
            report = export_output(str(out), str(tmp_path / "hf"), ExportOptions("hf"))
            assert report.ok and report.manifest["documents"] == 9
        else:
            with pytest.raises(ExportError, match="holds ids local to each batch"):
                export_output(str(out), str(tmp_path / "hf2"), ExportOptions("hf"))
