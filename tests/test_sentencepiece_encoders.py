"""SentencePiece on the fast path: a BPE model's equivalent tokenizer.json lets gigatoken encode it,
through the same exactness gate as the bpe backends, with the sentencepiece library itself as the
reference (the gate's probes, sampled verification). Models the tokenizer.json cannot express stay
on the library, with the reason recorded."""

from __future__ import annotations

import pytest
import sentencepiece
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenizers_impl import load_tokenizer
from tokenizers_impl.encoders import sentencepiece_backend
from tokenizers_impl.errors import TokenizerError
from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

pytest.importorskip("gigatoken.gigatoken_rs")

# What SentencePiece's words and whitespace handling make hard: runs of spaces, tabs and newlines
# (whitespace-only pieces), digits (split one by one), characters outside the vocabulary (byte
# fallback), apostrophes, the U+2581 character itself, and text from the vocabulary's own pieces.
MARKERS = ["<|im_start|>", "<|im_end|>", "<tool>"]  # user-defined pieces (chat markers)
_HARD = st.lists(
    st.sampled_from(
        list("aab e  \t\n\r0123456789.,'’-_ÄöéЖжх中文🙂\u200b\u2581\u00a0<|>")
        + ["  ", "    ", "\n\n", *MARKERS, "<|im_st", "im_end|>", "</s>"]
    ),
    max_size=40,
).map("".join)
_TEXTS = st.lists(
    st.one_of(
        _HARD,
        st.text(
            alphabet=st.characters(exclude_categories=("Cs",), max_codepoint=0x1FAFF), max_size=40
        ),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory, sample_texts) -> dict[str, str]:
    """Models trained here: tokenmill's own BPE (no dummy prefix, whitespace-only pieces), a
    Llama-2-style BPE (dummy prefix), a unigram model and a BPE with NFKC and extra whitespace
    removed (SentencePiece's defaults)."""
    root = tmp_path_factory.mktemp("spm")
    specs = {
        "bpe": {"model_type": "bpe"},
        "dummy_prefix": {"model_type": "bpe", "add_dummy_prefix": True},
        "markers": {"model_type": "bpe", "user_defined_symbols": MARKERS},
        "markers_dummy_prefix": {
            "model_type": "bpe",
            "add_dummy_prefix": True,
            "user_defined_symbols": MARKERS,
        },
        "unigram": {"model_type": "unigram"},
        "nfkc": {
            "model_type": "bpe",
            "normalization_rule_name": "nmt_nfkc",
            "remove_extra_whitespaces": True,
        },
    }
    paths = {}
    for name, options in specs.items():
        paths[name] = str(root / f"{name}.model")
        SentencePieceTokenizer.train(sample_texts, vocab_size=2000, **options).save(paths[name])
    return paths


def library_ids(path: str, texts: list[str]) -> list[list[int]]:
    return sentencepiece.SentencePieceProcessor(model_file=path).encode(texts, out_type=int)


@pytest.mark.parametrize("name", ["bpe", "dummy_prefix", "markers"])
def test_a_bpe_model_is_encoded_by_gigatoken_with_the_library_s_ids(models, name, sample_texts):
    tok = load_tokenizer(f"sentencepiece:{models[name]}")
    assert (tok.encoder, tok.encoder_fallbacks, tok.verifiable) == ("gigatoken", (), True)
    texts = [*sample_texts, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<tool>x"]
    flat, offsets = tok.encode_batch_flat(texts)
    got = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))]
    assert got == library_ids(models[name], texts)
    assert [a.tolist() for a in tok.reference_encode_batch(texts[:5])] == got[:5]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=_TEXTS)
def test_gigatoken_gives_the_library_s_ids_on_generated_text(models, texts):
    for name in ("bpe", "dummy_prefix", "markers"):
        tok = _loaded(models[name])
        assert [a.tolist() for a in tok.encode_batch(texts)] == library_ids(models[name], texts)


_CACHE: dict[str, SentencePieceTokenizer] = {}


def _loaded(path: str) -> SentencePieceTokenizer:
    if path not in _CACHE:
        _CACHE[path] = load_tokenizer(f"sentencepiece:{path}")
    return _CACHE[path]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unigram", "a unigram model"),
        ("nfkc", "normalisation 'nmt_nfkc', extra whitespace removed"),
        ("markers_dummy_prefix", "user-defined pieces with a dummy prefix"),
    ],
)
def test_a_model_without_an_equivalent_stays_on_the_library_saying_why(models, name, reason):
    tok = load_tokenizer(f"sentencepiece:{models[name]}")
    assert (tok.encoder, tok.verifiable) == ("sentencepiece", False)
    assert tok.encoder_fallbacks == (
        f"gigatoken: not applicable: no equivalent tokenizer.json ({reason})",
    )
    assert tok.describe()["encoder_version"] == sentencepiece.__version__
    with pytest.raises(TokenizerError, match="encoder 'gigatoken' is unavailable"):
        load_tokenizer(f"sentencepiece:{models[name]}", encoder="gigatoken")


def test_auto_falls_back_when_the_tokenizer_json_disagrees(models, monkeypatch, caplog):
    """A wrong equivalent (merges in reverse order) is caught by the gate: auto keeps the library
    and records where they differ; asking for gigatoken is refused."""
    real = sentencepiece_backend.tokenizer_json

    def reversed_merges(proto):
        config, note = real(proto)
        config["model"]["merges"] = config["model"]["merges"][::-1]
        return config, note

    monkeypatch.setattr("tokenizers_impl.sentencepiece_impl.tokenizer_json", reversed_merges)
    tok = load_tokenizer(f"sentencepiece:{models['bpe']}")
    assert tok.encoder == "sentencepiece"
    (fallback,) = tok.encoder_fallbacks
    assert fallback.startswith("gigatoken: gigatoken ") and "differs from sentencepiece" in fallback
    assert "encoder gigatoken not used" in caplog.text
    with pytest.raises(TokenizerError, match="is not exact"):
        load_tokenizer(f"sentencepiece:{models['bpe']}", encoder="gigatoken")


def test_the_library_and_tokenizers_can_be_asked_for(models, sample_texts):
    texts = list(sample_texts)[:50]
    want = library_ids(models["bpe"], texts)
    for encoder in ("sentencepiece", "tokenizers"):
        tok = load_tokenizer(f"sentencepiece:{models['bpe']}", encoder=encoder)
        assert tok.encoder == encoder
        assert [a.tolist() for a in tok.encode_batch(texts)] == want
    with pytest.raises(TokenizerError, match="unknown option"):
        load_tokenizer(f"sentencepiece:{models['bpe']}", use_tiktoken=True)
