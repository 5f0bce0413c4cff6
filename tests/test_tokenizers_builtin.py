"""The built-in plugins: bpe (tiktoken fast path checked against `tokenizers`) and sentencepiece."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizers_impl import (
    TokenizerBase,
    TokenizerError,
    load_tokenizer,
    register,
    registered_kinds,
)
from tokenizers_impl.bpe import BPETokenizer
from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

from .conftest import LANGS


def test_bpe_uses_tiktoken_and_matches_tokenizers_ids_on_every_sample_language(
    bpe_path, sample_records
):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    assert tok.encoder == "tiktoken"
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang]]
        fast = tok.encode_batch(texts)
        reference = tok.encode_reference(texts)
        mismatched = [
            i for i, (a, b) in enumerate(zip(fast, reference, strict=True)) if a.tolist() != b
        ]
        assert mismatched == [], f"{lang}: tiktoken differs from tokenizers on docs {mismatched}"
        assert all(a.dtype == np.uint32 for a in fast)


def test_bpe_round_trips_exact_text_and_raw_token_bytes(bpe_path, sample_texts):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    assert tok.lossless
    for text, ids in zip(sample_texts, tok.encode_batch(sample_texts), strict=True):
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(int(i)) for i in ids) == text.encode("utf-8")
    # raw bytes, not GPT-2's visible-unicode form: the space token is b" ", not "Ġ"
    space = tok.encode_batch([" a"])[0]
    assert tok.token_bytes(int(space[0])).startswith(b" ")


def test_bpe_treats_special_token_text_in_documents_as_plain_text(bpe_path):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    ids = tok.encode_batch(["a <|endoftext|> b"])[0]
    assert tok.eos_id not in ids.tolist()
    assert tok.decode(ids) == "a <|endoftext|> b"


def test_bpe_falls_back_to_tokenizers_when_asked_and_gives_same_ids(bpe_path, sample_texts):
    fast = load_tokenizer(f"bpe:{bpe_path}")
    slow = load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=False)
    assert slow.encoder == "tokenizers"
    assert fast.fingerprint == slow.fingerprint
    flat_fast, off_fast = fast.encode_batch_flat(sample_texts[:20])
    flat_slow, off_slow = slow.encode_batch_flat(sample_texts[:20])
    assert np.array_equal(flat_fast, flat_slow) and np.array_equal(off_fast, off_slow)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_trained_lossless_round_trips_every_language(
    sample_records, sample_texts, model_type
):
    tok = SentencePieceTokenizer.train(sample_texts[::3], vocab_size=2000, model_type=model_type)
    assert tok.lossless
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang]]
        for text, ids in zip(texts, tok.encode_batch(texts), strict=True):
            assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_tokenizers_load_from_fsspec_urls_with_stable_fingerprints(bpe_path, sp_path):
    import fsspec

    for kind, path in (("bpe", bpe_path), ("sentencepiece", sp_path)):
        local = load_tokenizer(f"{kind}:{path}")
        url = f"memory://tok/{kind}"
        local.save(url)
        remote = load_tokenizer(f"{kind}:{url}")
        assert remote.fingerprint == local.fingerprint
        assert (
            remote.encode_batch(["Grüße, мир 你好"])[0].tolist()
            == local.encode_batch(["Grüße, мир 你好"])[0].tolist()
        )
    fsspec.filesystem("memory").rm("/tok", recursive=True)


def test_bad_tokenizer_specs_and_files_raise_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="KIND:PATH"):
        load_tokenizer("no-colon")
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'nope'"):
        load_tokenizer("nope:x")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(f"bpe:{tmp_path / 'missing.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(f"bpe:{bad}")
    with pytest.raises(TokenizerError, match="not a valid SentencePiece model"):
        load_tokenizer(f"sentencepiece:{bad}")


class _CharTokenizer(TokenizerBase):
    """A toy plugin: one token per byte (registered to show third-party plugins plug in)."""

    kind = "bytes-test"

    def __init__(self):
        self.name, self.vocab_size, self.fingerprint = "bytes", 256, "bytes-v1"

    @classmethod
    def load(cls, path, storage_options=None, **options):
        return cls()

    def encode_batch(self, texts):
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint32) for t in texts]

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("utf-8")

    def token_bytes(self, token_id):
        return bytes([token_id])

    def save(self, url, storage_options=None):
        pass


def test_register_adds_a_plugin_kind():
    register("bytes-test", _CharTokenizer)
    assert "bytes-test" in registered_kinds()
    tok = load_tokenizer("bytes-test:unused")
    assert tok.encode_batch(["hé"])[0].tolist() == [104, 195, 169]


def test_bpe_train_rejects_nothing_and_reports_vocab(sample_texts):
    tok = BPETokenizer.train(sample_texts[:50], vocab_size=1000)
    assert tok.vocab_size == 1000
    assert tok.describe()["encoder"] == "tiktoken"
