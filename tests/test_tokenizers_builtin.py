"""The plugin contract and registry, and the built-in plugins: bpe (tiktoken fast path checked
against `tokenizers`, raw-byte encoding) and sentencepiece."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tokenizers_impl import (
    TokenizerBase,
    TokenizerError,
    TokenmillError,
    load_tokenizer,
    register,
    registered_kinds,
)
from tokenizers_impl.base import tokenizer_class
from tokenizers_impl.bpe import BPETokenizer
from tokenizers_impl.byte_token import ZeroProbabilityPrefix, codec
from tokenizers_impl.ngram_model import NgramModelError
from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

from .helpers import LANGS, REPO


def _fastest() -> str:
    """The backend `encoder: auto` picks for a tokenmill-trained bpe here."""
    return "gigatoken" if importlib.util.find_spec("gigatoken") else "tiktoken"


@pytest.mark.parametrize("encoder", ["tiktoken", "auto"])
def test_bpe_fast_encoders_match_tokenizers_ids_on_every_sample_language(
    bpe_path, sample_records, encoder
):
    tok = load_tokenizer(f"bpe:{bpe_path}", encoder=encoder)
    assert tok.encoder == (_fastest() if encoder == "auto" else encoder)
    assert tok.verifiable
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang]]
        fast = tok.encode_batch(texts)
        reference = tok.encode_reference(texts)
        mismatched = [
            i for i, (a, b) in enumerate(zip(fast, reference, strict=True)) if a.tolist() != b
        ]
        assert [a.tolist() for a in tok.reference_encode_batch(texts)] == reference
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
    assert slow.encoder == "tokenizers" and not slow.verifiable
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

    def token_bytes(self, token_id):
        return bytes([token_id])

    def save(self, url, storage_options=None):
        pass


def test_register_adds_a_plugin_kind():
    register("bytes-test", _CharTokenizer)
    register("bytes-test", _CharTokenizer)  # the same class again is fine
    assert "bytes-test" in registered_kinds()
    tok = load_tokenizer("bytes-test:unused")
    assert tok.encode_batch(["hé"])[0].tolist() == [104, 195, 169]
    assert tok.decode(tok.encode_batch(["hé"])[0]) == "hé"  # TokenizerBase's default decode
    assert tok.describe()["name"] == "bytes"
    assert not tok.supports_encode_bytes and tok.special_ids == frozenset()


def test_register_refuses_classes_that_do_not_follow_the_contract():
    class NotAPlugin:
        kind = "not-a-plugin"

        @classmethod
        def load(cls, path, storage_options=None, **options):
            return cls()

    with pytest.raises(TokenizerError, match="not a TokenizerBase subclass"):
        register("not-a-plugin", NotAPlugin)
    with pytest.raises(TokenizerError, match="not a TokenizerBase subclass"):
        register("not-a-plugin", _CharTokenizer())  # an instance, not a class
    for kind in ("", "a:b", "has space", "../x", None):
        with pytest.raises(TokenizerError, match="invalid tokenizer kind"):
            register(kind, _CharTokenizer)
    assert "not-a-plugin" not in registered_kinds()


def test_register_refuses_a_different_class_under_a_taken_kind():
    class OtherBPE(_CharTokenizer):
        kind = "bpe"

    with pytest.raises(TokenizerError, match=r"kind 'bpe' is built in \(tokenizers_impl.bpe\)"):
        register("bpe", OtherBPE)
    assert tokenizer_class("bpe") is BPETokenizer
    register("bpe", BPETokenizer)  # re-registering the registered class is a no-op


def test_a_plugin_missing_an_abstract_method_cannot_be_instantiated_or_registered():
    class NoSave(TokenizerBase):
        kind = "no-save"

        def encode_batch(self, texts):
            return []

        def token_bytes(self, token_id):
            return b""

        @classmethod
        def load(cls, path, storage_options=None, **options):
            return cls()

    with pytest.raises(TypeError, match="abstract method.*save"):
        NoSave()
    with pytest.raises(TypeError, match="abstract"):
        TokenizerBase()
    with pytest.raises(TokenizerError, match="does not implement save"):
        register("no-save", NoSave)


def test_every_tokenmill_error_of_the_plugin_layer_shares_one_base_and_stays_a_value_error():
    for error in (TokenizerError, NgramModelError, ZeroProbabilityPrefix):
        assert issubclass(error, TokenmillError) and issubclass(error, ValueError)
    with pytest.raises(TokenmillError):
        load_tokenizer("no-colon")


def test_the_plugin_layer_imports_without_the_pipeline_package():
    code = (
        "import sys, tokenizers_impl, tokenizers_impl.bpe, tokenizers_impl.sentencepiece_impl, "
        "tokenizers_impl.lib, tokenizers_impl.dynamic_merge, tokenizers_impl.byte_token, "
        "tokenizers_impl.ngram_model\n"
        "tokenizers_impl.registered_kinds()\n"
        "bad = [m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_bpe_encode_bytes_matches_text_encoding_and_encodes_bytes_that_are_not_utf8(
    bpe_path, sample_texts
):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    assert tok.supports_encode_bytes
    for text, ids in zip(sample_texts[:30], tok.encode_batch(sample_texts[:30]), strict=True):
        assert list(tok.encode_bytes(text.encode("utf-8"))) == ids.tolist()
    data = "Grüße, мир 你好 😀".encode()
    cuts = [data[:k] for k in range(len(data) + 1)] + [b"\xff", b"a\xffb", b"\x80abc"]
    not_utf8 = []
    for raw in cuts:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(raw)
        ids = tok.encode_bytes(raw)
        assert tok.decode_bytes(ids) == raw
        assert codec(tok).encode(raw) == tuple(ids)  # byte_token encodes through the capability
    assert len(not_utf8) >= 8

    slow = load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=False)
    assert not slow.supports_encode_bytes
    assert list(slow.encode_bytes(data)) == tok.encode_batch([data.decode()])[0].tolist()
    with pytest.raises(TokenizerError, match="only UTF-8"):
        slow.encode_bytes(not_utf8[0])
    assert codec(slow).encode(not_utf8[0]) is None  # no encoding without the capability


def test_bpe_train_rejects_nothing_and_reports_vocab(sample_texts):
    tok = BPETokenizer.train(sample_texts[:50], vocab_size=1000)
    assert tok.vocab_size == 1000
    assert tok.describe()["encoder"] == _fastest()
