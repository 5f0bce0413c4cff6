"""Encoder backends behind one exactness gate (tokenizers_impl/encoders, docs/encoders.md): every
backend gives `tokenizers`' ids for both byte-level BPE styles (GPT-2 ByteLevel regex and
Split(regex) + ByteLevel, trained here) on the whole sample corpus and on generated text; `auto`
falls back loudly from an absent or inexact backend; special tokens (EOS/BOS) resolve from the
tokenizer's own files; the `tiktoken` kind reads .tiktoken rank files."""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

from tokenizers_impl import TokenizerError, load_tokenizer
from tokenizers_impl.bpe import BPETokenizer, train_byte_level
from tokenizers_impl.encoders import (
    Encoder,
    build_encoder,
    probe_set,
    register_encoder,
    unregister_encoder,
)
from tokenizers_impl.encoders.base import flat_from_lists
from tokenizers_impl.encoders.patterns import CL100K_PATTERN, LLAMA3_PATTERN, split_pattern
from tokenizers_impl.encoders.probes import ADVERSARIAL
from tokenizers_impl.files import probe_texts
from tokenizers_impl.tiktoken_impl import dump_ranks, parse_ranks

HAS_GIGATOKEN = importlib.util.find_spec("gigatoken") is not None
BACKENDS = [
    "tokenizers",
    "tiktoken",
    pytest.param(
        "gigatoken", marks=pytest.mark.skipif(not HAS_GIGATOKEN, reason="gigatoken absent")
    ),
]
FASTEST = "gigatoken" if HAS_GIGATOKEN else "tiktoken"
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]


@pytest.fixture(scope="module")
def style_paths(tmp_path_factory, sample_texts) -> dict[str, str]:
    """tokenizer.json files of both byte-level styles, trained on the sample corpus; the Split
    style is Llama-3-like (its special tokens, a tokenizer_config.json beside it)."""
    root = tmp_path_factory.mktemp("styles")
    gpt2 = train_byte_level(sample_texts, 4000, ["<|endoftext|>"])
    llama = train_byte_level(sample_texts, 4000, LLAMA_SPECIALS, split_pattern=LLAMA3_PATTERN)
    (root / "gpt2").mkdir()
    (root / "llama").mkdir()
    gpt2.save(str(root / "gpt2" / "tokenizer.json"))
    llama.save(str(root / "llama" / "tokenizer.json"))
    config = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": "<|end_of_text|>", "special": True, "__type": "AddedToken"},
    }
    (root / "llama" / "tokenizer_config.json").write_text(json.dumps(config))
    return {
        "bytelevel": str(root / "gpt2" / "tokenizer.json"),
        "split": str(root / "llama" / "tokenizer.json"),
    }


@pytest.fixture(scope="module")
def loaded(style_paths):
    """(style, backend) -> loaded tokenizer, loaded once per module."""
    cache: dict[tuple[str, str], BPETokenizer] = {}

    def get(style: str, backend: str) -> BPETokenizer:
        if (style, backend) not in cache:
            cache[style, backend] = load_tokenizer(f"bpe:{style_paths[style]}", encoder=backend)
        return cache[style, backend]

    return get


@pytest.fixture(scope="module")
def sample_reference(loaded, sample_texts):
    """style -> `tokenizers` ids of every sample document (encoded once)."""
    return {
        s: loaded(s, "tokenizers").encode_reference(sample_texts) for s in ("bytelevel", "split")
    }


def _assert_same_as_reference(tok: BPETokenizer, texts: list[str], reference=None) -> None:
    flat, offsets = tok.encode_batch_flat(texts)
    assert flat.dtype == np.uint32 and offsets.dtype == np.int64
    assert len(offsets) == len(texts) + 1
    reference = tok.encode_reference(texts) if reference is None else reference
    for i, want in enumerate(reference):
        got = flat[offsets[i] : offsets[i + 1]].tolist()
        assert got == want, f"{tok.encoder} differs from tokenizers on text {i}: {texts[i]!r:.80}"
    assert [a.tolist() for a in tok.encode_batch(texts)] == reference


# -- exactness of every backend ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("style", ["bytelevel", "split"])
def test_every_backend_gives_tokenizers_ids_on_every_sample_document(
    loaded, sample_reference, sample_texts, style, backend
):
    assert len(sample_texts) == 363
    tok = loaded(style, backend)
    assert tok.encoder == backend and tok.encoder_fallbacks == ()
    _assert_same_as_reference(tok, sample_texts, sample_reference[style])
    assert tok.lossless
    assert tok.verifiable == (backend != "tokenizers")


def test_both_styles_take_the_fast_path_and_fingerprints_ignore_the_backend(loaded, style_paths):
    for style in ("bytelevel", "split"):
        config = json.loads(Path(style_paths[style]).read_text(encoding="utf-8"))
        assert split_pattern(config) is not None
        auto = loaded(style, "auto")
        assert auto.encoder == FASTEST
        described = auto.describe()
        assert described["encoder"] == FASTEST and described["encoder_version"]
        assert described["encoder_fallbacks"] == []
        prints = {loaded(style, b).fingerprint for b in ("tokenizers", "tiktoken", "auto")}
        assert prints == {auto.fingerprint}


_PIECES = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",), max_codepoint=0x1FAFF), max_size=40),
    st.from_regex(
        r"[ \t\r\n\u00a0\u3000\u180e\u2009]{0,3}'(s|t|re|ve|m|ll|d|S|T|RE|LL)", fullmatch=True
    ),
    st.from_regex(r"[0-9]{1,12}([.,][0-9]{1,4})?", fullmatch=True),
    st.from_regex(r"(\r\n|\r|\n){1,5}[ \t]{0,3}", fullmatch=True),
    st.from_regex(r" ?[A-Za-z\u00c0-\u024f\u0400-\u04ff]{1,10}", fullmatch=True),
    st.from_regex(r"[\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7a3]{1,6}", fullmatch=True),
    st.sampled_from(["\U0001f600", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "e\u0301", "\u180e"]),
    st.sampled_from(["<|endoftext|>", "<|end_of_text|>", "<|begin_of_text|>", "<s>", "</s>"]),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from([" ", "\n", "a", "1", "!", "\u4e2d"]),
        st.integers(1, 300),
    ),
)
_TEXTS = st.lists(st.lists(_PIECES, max_size=10).map("".join), min_size=1, max_size=6)


@pytest.mark.parametrize("style", ["bytelevel", "split"])
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(texts=_TEXTS)
def test_every_backend_gives_tokenizers_ids_on_generated_text(loaded, style, texts):
    for backend in ("tiktoken", "gigatoken") if HAS_GIGATOKEN else ("tiktoken",):
        _assert_same_as_reference(loaded(style, backend), texts)


def test_probe_set_covers_the_adversarial_cases_and_the_added_tokens():
    probes = probe_set(["<|end_of_text|>", "<tab>"])
    assert probes[: len(probe_texts())] == list(probe_texts())
    assert any("\u180e" in p for p in probes) and any("\r\n\r\n" in p for p in probes)
    assert any(len(p) >= 5000 and len(set(p)) == 1 for p in probes)
    assert "x<tab>y <tab> <tab><tab>\n" in probes and "<|endoftext|>" in ADVERSARIAL
    assert any("\t's" in p for p in probes) and any("\U0001f600" in p for p in probes)


# -- auto: loud fallbacks -----------------------------------------------------------------------------
class _Perturbed(Encoder):
    """A wrong backend: the real tiktoken one with one id changed, or the last token dropped."""

    name = "gigatoken"

    def __init__(self, inner: Encoder, mode: str):
        self.inner, self.mode, self.version = inner, mode, "fake"

    def encode_flat(self, texts):
        lists = [a.tolist() for a in self.inner.encode_batch(texts)]
        for text, ids in zip(texts, lists, strict=True):
            if "\u180e" in text and len(ids) > 1:  # wrong only where an adversarial probe looks
                if self.mode == "perturb":
                    ids[0] = (ids[0] + 1) % 256
                else:
                    ids.pop()
        return flat_from_lists(lists)


@pytest.fixture
def fake_gigatoken():
    def install(mode: str):
        def factory(source):
            return _Perturbed(build_encoder("tiktoken", source), mode)

        register_encoder("gigatoken", factory)

    yield install
    unregister_encoder("gigatoken")


@pytest.mark.parametrize("mode", ["perturb", "drop"])
def test_auto_passes_over_an_inexact_backend_and_says_which_probe_differs(
    style_paths, fake_gigatoken, caplog, sample_texts, mode
):
    fake_gigatoken(mode)
    with caplog.at_level(logging.WARNING, logger="tokenmill.encoders"):
        tok = load_tokenizer(f"bpe:{style_paths['bytelevel']}")
    assert tok.encoder == "tiktoken"
    (reason,) = tok.encoder_fallbacks
    assert reason.startswith("gigatoken: gigatoken fake differs from tokenizers")
    assert "probe" in reason and "token" in reason and "\\u180e" in reason
    assert tok.describe()["encoder_fallbacks"] == [reason]
    assert any("gigatoken" in r.message and "probe" in r.message for r in caplog.records)
    _assert_same_as_reference(tok, sample_texts[:20])
    with pytest.raises(TokenizerError, match=r"encoder gigatoken fake is not exact.*probe \d+"):
        load_tokenizer(f"bpe:{style_paths['bytelevel']}", encoder="gigatoken")


def test_auto_falls_back_from_absent_libraries(style_paths, monkeypatch, caplog):
    for module in ("gigatoken", "gigatoken.gigatoken_rs"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="tokenmill.encoders"):
        tok = load_tokenizer(f"bpe:{style_paths['split']}")
    assert tok.encoder == "tiktoken"
    assert [r.split(":")[0] for r in tok.encoder_fallbacks] == ["gigatoken"]
    assert "absent" in tok.encoder_fallbacks[0]
    assert any("gigatoken" in r.message and "absent" in r.message for r in caplog.records)
    with pytest.raises(TokenizerError, match="encoder 'gigatoken' is unavailable.*absent"):
        load_tokenizer(f"bpe:{style_paths['split']}", encoder="gigatoken")

    monkeypatch.setitem(sys.modules, "tiktoken", None)
    tok = load_tokenizer(f"bpe:{style_paths['split']}")
    assert tok.encoder == "tokenizers" and not tok.verifiable
    assert [r.split(":")[0] for r in tok.encoder_fallbacks] == ["gigatoken", "tiktoken"]


def test_the_gate_catches_a_regex_the_two_engines_read_differently(sample_texts, tmp_path):
    """tiktoken's own cl100k regex in a tokenizer.json: Oniguruma (`tokenizers`) reads its
    `\\p{N}{1,3}+` as "runs of 1-3 digits, repeated", fancy-regex (tiktoken) as a possessive
    {1,3}; only the adversarial digit-run probe shows it. gigatoken knows no such regex."""
    hf = train_byte_level(sample_texts[::4], 1000, ["<|endoftext|>"], split_pattern=CL100K_PATTERN)
    path = tmp_path / "possessive.json"
    hf.save(str(path))
    tok = load_tokenizer(f"bpe:{path}")
    assert tok.encoder == "tokenizers"
    giga, tiktoken = tok.encoder_fallbacks
    assert giga.startswith("gigatoken: refused" if HAS_GIGATOKEN else "gigatoken: absent")
    assert tiktoken.startswith("tiktoken: tiktoken") and "'0000000000" in tiktoken
    with pytest.raises(TokenizerError, match="encoder tiktoken .* is not exact.*probe"):
        load_tokenizer(f"bpe:{path}", encoder="tiktoken")


def test_a_bpe_outside_tiktoken_falls_back_quietly_and_refuses_an_explicit_choice(
    sample_texts, tmp_path
):
    hf = HFTokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(
        sample_texts[::8], trainers.BpeTrainer(vocab_size=500, special_tokens=["[UNK]"])
    )
    path = tmp_path / "words.json"
    hf.save(str(path))
    tok = load_tokenizer(f"bpe:{path}", encoder="auto")
    assert tok.encoder in ("gigatoken", "tokenizers")
    assert any(r.startswith("tiktoken: not applicable") for r in tok.encoder_fallbacks) or (
        tok.encoder == "gigatoken"
    )
    with pytest.raises(TokenizerError, match="encoder 'tiktoken' is unavailable.*not applicable"):
        load_tokenizer(f"bpe:{path}", encoder="tiktoken")


def test_encoder_options_are_checked_and_use_tiktoken_keeps_its_meaning(bpe_path):
    assert load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=False).encoder == "tokenizers"
    assert load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=True).encoder == "tiktoken"
    assert load_tokenizer(f"bpe:{bpe_path}", use_tiktoken="false").encoder == "tokenizers"
    with pytest.raises(TokenizerError, match="contradicts"):
        load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=False, encoder="tiktoken")
    with pytest.raises(TokenizerError, match="use_tiktoken=true contradicts"):  # (ran gigatoken)
        load_tokenizer(f"bpe:{bpe_path}", use_tiktoken=True, encoder="gigatoken")
    with pytest.raises(TokenizerError, match="unknown encoder 'fastest'"):
        load_tokenizer(f"bpe:{bpe_path}", encoder="fastest")
    with pytest.raises(TokenizerError, match="encoder_reset_mb must be a number"):
        load_tokenizer(f"bpe:{bpe_path}", encoder_reset_mb="often")
    with pytest.raises(TokenizerError, match=r"unknown option\(s\) \['encodr'\]"):
        load_tokenizer(f"bpe:{bpe_path}", encodr="tiktoken")


@pytest.mark.skipif(not HAS_GIGATOKEN, reason="gigatoken absent")
def test_gigatoken_is_rebuilt_to_bound_its_caches_without_changing_ids(
    style_paths, sample_reference, sample_texts
):
    tok = load_tokenizer(f"bpe:{style_paths['split']}", encoder="gigatoken", encoder_reset_mb=0.25)
    _assert_same_as_reference(tok, sample_texts, sample_reference["split"])
    _assert_same_as_reference(tok, sample_texts, sample_reference["split"])
    assert tok._encoder.resets >= 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_tokenizer_encodes_from_several_threads_at_once_with_one_threads_ids(
    style_paths, sample_reference, sample_texts, backend
):
    """`thread_safe` (the driver's threads share one tokenizer): four threads encode the sample
    at once, in small batches, through one object, gigatoken rebuilt every 0.25 MB of text (a
    rebuild while other threads encode); each gets exactly the one-thread ids."""
    tok = load_tokenizer(f"bpe:{style_paths['split']}", encoder=backend, encoder_reset_mb=0.25)
    assert tok.thread_safe
    want = sample_reference["split"]
    results: dict[int, list] = {}

    def encode(k: int) -> None:
        n = len(sample_texts)
        order = [(i + k * n // 4) % n for i in range(n)]  # each thread from elsewhere
        got = {}
        for start in range(0, len(order), 7):
            picked = order[start : start + 7]
            flat, offsets = tok.encode_batch_flat([sample_texts[i] for i in picked])
            for j, i in enumerate(picked):
                got[i] = flat[offsets[j] : offsets[j + 1]].tolist()
        results[k] = [got[i] for i in range(len(sample_texts))]

    threads = [threading.Thread(target=encode, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[k] == want for k in range(4)] == [True] * 4
    if backend == "gigatoken":
        assert tok._encoder.resets >= 4


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tiktoken"])
def test_a_lone_surrogate_is_named_by_the_backends_that_refuse_it(loaded, backend):
    """Through the Python API (the engine rejects such documents before it encodes): gigatoken
    said "expected str or bytes, got <class 'str'>". (tiktoken encodes the text anyway.)"""
    tok = loaded("bytelevel", backend)
    for encode in (tok.encode_batch, tok.encode_batch_flat):
        with pytest.raises(TokenizerError, match="text 1 has a lone surrogate at character 1"):
            encode(["fine", "a\ud800b"])


def test_gigatoken_small_batches_take_lists_with_the_same_ids(loaded, sample_texts):
    """A batch of at most SMALL_BATCH_CHARS characters is encoded to lists (awkward's array costs
    ~0.15 ms a call: a small file's one document paid it per unit); one text at a time (most of
    the sample's documents under the bound, some over) gives the ids of the whole batch."""
    from tokenizers_impl.encoders.gigatoken_backend import SMALL_BATCH_CHARS

    encoder = loaded("split", "gigatoken")._encoder
    flat, offsets = encoder.encode_flat(sample_texts)
    sizes = [len(t) <= SMALL_BATCH_CHARS for t in sample_texts]
    assert 0 < sum(sizes) < len(sample_texts)
    for i, text in enumerate(sample_texts):
        one, ends = encoder.encode_flat([text])
        assert one.dtype == flat.dtype and ends.tolist() == [0, len(one)]
        assert one.tolist() == flat[offsets[i] : offsets[i + 1]].tolist(), i


def test_encode_bytes_uses_tiktoken_whatever_the_encoder(bpe_path):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    data = "Grüße 你好".encode()
    assert tok.supports_encode_bytes
    assert tok.decode_bytes(tok.encode_bytes(data[:-1])) == data[:-1]
    assert tok._tiktoken is not None


# -- special tokens -------------------------------------------------------------------------------
def test_a_llama3_style_tokenizer_gets_eos_and_bos_from_its_own_files(style_paths, tmp_path):
    tok = load_tokenizer(f"bpe:{style_paths['split']}")
    assert tok.eos_id == tok.hf.token_to_id("<|end_of_text|>") is not None
    assert tok.bos_id == tok.hf.token_to_id("<|begin_of_text|>") is not None
    described = tok.describe()
    assert (described["eos_id"], described["bos_id"]) == (tok.eos_id, tok.bos_id)
    assert described["eos_token"] == "<|end_of_text|>"
    assert described["bos_token"] == "<|begin_of_text|>"
    # without the config: the well-known special tokens
    bare = load_tokenizer(f"bpe:{style_paths['split']}", tokenizer_config=False)
    assert (bare.eos_id, bare.bos_id) == (tok.eos_id, tok.bos_id)
    # options win; the config may live elsewhere
    reserved = "<|reserved_special_token_0|>"
    other = load_tokenizer(f"bpe:{style_paths['split']}", eos_token=reserved)
    assert other.eos_id == tok.hf.token_to_id(reserved) and other.bos_id == tok.bos_id
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"eos_token": reserved, "bos_token": None}))
    moved = load_tokenizer(f"bpe:{style_paths['split']}", tokenizer_config=str(config))
    assert moved.eos_token == reserved and moved.bos_token == "<|begin_of_text|>"
    # the special-token text in a document stays plain text
    ids = tok.encode_batch(["<|begin_of_text|>hi<|end_of_text|>"])[0].tolist()
    assert tok.eos_id not in ids and tok.bos_id not in ids


def test_special_token_options_and_configs_that_name_nothing(style_paths, tmp_path, caplog):
    with pytest.raises(TokenizerError, match="eos_token '<nope>' is not a token"):
        load_tokenizer(f"bpe:{style_paths['split']}", eos_token="<nope>")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(f"bpe:{style_paths['split']}", tokenizer_config=str(tmp_path / "x.json"))
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"eos_token": "<|not_here|>"}))
    with caplog.at_level(logging.WARNING, logger="tokenmill.tokenizers"):
        tok = load_tokenizer(f"bpe:{style_paths['split']}", tokenizer_config=str(config))
    assert tok.eos_token == "<|end_of_text|>"  # falls through to the well-known tokens
    assert any("<|not_here|>" in r.message for r in caplog.records)
    config.write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="JSON object"):
        load_tokenizer(f"bpe:{style_paths['split']}", tokenizer_config=str(config))


def test_tokenmill_trained_tokenizers_keep_their_eos_and_forward_bos(bpe_path, sp_path):
    bpe = load_tokenizer(f"bpe:{bpe_path}")
    assert (bpe.eos_token, bpe.eos_id, bpe.bos_id) == ("<|endoftext|>", 0, None)
    assert bpe.describe()["bos_id"] is None
    sp = load_tokenizer(f"sentencepiece:{sp_path}")
    assert (sp.eos_id, sp.bos_id) == (sp.sp.eos_id(), None)
    assert sp.describe()["eos_token"] == "</s>"
    assert load_tokenizer(f"sentencepiece:{sp_path}", bos_token="</s>").bos_id == sp.eos_id
    with pytest.raises(TokenizerError, match="not a token"):
        load_tokenizer(f"sentencepiece:{sp_path}", eos_token="<none>")
    assert sp.verifiable and sp.encoder == "gigatoken"  # a BPE model: the library is its reference
    texts = ["Grüße, мир"]
    assert [a.tolist() for a in sp.reference_encode_batch(texts)] == [
        a.tolist() for a in sp.encode_batch(texts)
    ]


def test_dynamic_merge_forwards_the_base_eos_and_bos(style_paths):
    from tokenizers_impl.dynamic_merge.tokenizer import DynamicMergeTokenizer

    base = load_tokenizer(f"bpe:{style_paths['split']}")
    merged = DynamicMergeTokenizer(base, max_merges=4)
    assert (merged.eos_id, merged.bos_id) == (base.eos_id, base.bos_id)
    assert merged.describe()["bos_id"] == base.bos_id


# -- the tiktoken kind ------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_GIGATOKEN, reason="gigatoken is not installed")
def test_the_tiktoken_kind_names_a_lone_surrogate_gigatoken_refuses(bpe_path, tmp_path):
    """Dense ranks take gigatoken; a text with a lone surrogate made it raise an unnamed
    TypeError ("expected str or bytes, got <class 'str'>") where the bpe kind names the text."""
    ranks = load_tokenizer(f"bpe:{bpe_path}").mergeable_ranks()
    dense = {token: i for i, (token, _) in enumerate(sorted(ranks.items(), key=lambda t: t[1]))}
    path = tmp_path / "dense.tiktoken"
    path.write_bytes(dump_ranks(dense))
    specials = {"<|endoftext|>": len(dense)}
    tok = load_tokenizer(f"tiktoken:{path}", pattern="gpt2", special_tokens=specials)
    assert tok.encoder == "gigatoken"
    for encode in (tok.encode_batch, tok.encode_batch_flat):
        with pytest.raises(TokenizerError, match="text 1 has a lone surrogate at character 1"):
            encode(["fine", "\u0378\ud800"])


def test_tiktoken_kind_reads_ranks_built_from_a_bpe_and_gives_its_ids(
    bpe_path, sample_texts, tmp_path
):
    bpe = load_tokenizer(f"bpe:{bpe_path}")
    path = tmp_path / "ranks.tiktoken"
    path.write_bytes(dump_ranks(bpe.mergeable_ranks()))
    tok = load_tokenizer(f"tiktoken:{path}", pattern="gpt2", special_tokens='{"<|endoftext|>": 0}')
    assert tok.lossless and tok.vocab_size == bpe.vocab_size
    assert (tok.eos_id, tok.eos_token) == (0, "<|endoftext|>")
    flat, offsets = tok.encode_batch_flat(sample_texts)
    want_flat, want_offsets = bpe.encode_batch_flat(sample_texts)
    assert np.array_equal(offsets, want_offsets) and np.array_equal(flat, want_flat)
    assert tok.decode(tok.encode_batch(["a <|endoftext|> b"])[0]) == "a <|endoftext|> b"
    assert tok.decode_bytes(tok.encode_bytes("你好".encode()[:-1])) == "你好".encode()[:-1]
    assert tok.describe()["pattern"] == "gpt2"
    # ranks (not their file layout), pattern and specials make the fingerprint
    tok.save(str(tmp_path / "copy.tiktoken"))
    copy = load_tokenizer(
        f"tiktoken:{tmp_path / 'copy.tiktoken'}",
        pattern="r50k_base",
        special_tokens={"<|endoftext|>": 0},
    )
    assert copy.fingerprint == tok.fingerprint
    other = load_tokenizer(
        f"tiktoken:{path}", pattern="cl100k_base", special_tokens={"<|endoftext|>": 0}
    )
    assert other.fingerprint != tok.fingerprint
    assert load_tokenizer(f"tiktoken:{path}", pattern="gpt2").fingerprint != tok.fingerprint


def test_tiktoken_kind_with_a_split_regex_and_named_files(style_paths, sample_texts, tmp_path):
    bpe = load_tokenizer(f"bpe:{style_paths['split']}")
    ranks = bpe.mergeable_ranks()
    named = tmp_path / "cl100k_base.tiktoken"  # the name gives pattern and OpenAI's specials
    named.write_bytes(dump_ranks(ranks))
    for tok in (
        load_tokenizer(f"tiktoken:{named}"),
        load_tokenizer(f"tiktoken:{named}", pattern=LLAMA3_PATTERN, special_tokens={}),
    ):
        flat, offsets = tok.encode_batch_flat(sample_texts)
        want_flat, want_offsets = bpe.encode_batch_flat(sample_texts)
        assert np.array_equal(offsets, want_offsets) and np.array_equal(flat, want_flat)
        assert [a.tolist() for a in tok.reference_encode_batch(sample_texts[:5])] == [
            a.tolist() for a in tok.encode_batch(sample_texts[:5])
        ]
    assert load_tokenizer(f"tiktoken:{named}").eos_id == 100257
    for name in ("gpt2", "r50k_base"):  # (tiktoken's "gpt2" is r50k_base: the same specials)
        (tmp_path / f"{name}.tiktoken").write_bytes(dump_ranks(ranks))
        assert load_tokenizer(f"tiktoken:{tmp_path / name}.tiktoken").eos_id == 50256


def test_tiktoken_kind_uses_gigatoken_on_dense_ranks_and_records_why_not_otherwise(
    bpe_path, sample_texts, tmp_path
):
    dense = BPETokenizer.train(sample_texts[::3], vocab_size=2000, special_tokens=())
    path = tmp_path / "dense.tiktoken"
    lines = dump_ranks(dense.mergeable_ranks()).splitlines(keepends=True)
    path.write_bytes(b"".join(lines[::-1]))  # any line order: the ids are the ranks
    tok = load_tokenizer(f"tiktoken:{path}", pattern="gpt2", special_tokens={"<|endoftext|>": 2000})
    assert tok.encoder == FASTEST and tok.verifiable == HAS_GIGATOKEN
    assert [a.tolist() for a in tok.encode_batch(sample_texts)] == dense.encode_reference(
        sample_texts
    )
    sparse = tmp_path / "sparse.tiktoken"
    sparse.write_bytes(dump_ranks(load_tokenizer(f"bpe:{bpe_path}").mergeable_ranks()))
    tok = load_tokenizer(f"tiktoken:{sparse}", pattern="gpt2", special_tokens={"<|endoftext|>": 0})
    assert tok.encoder == "tiktoken" and not tok.verifiable
    if HAS_GIGATOKEN:
        assert tok.encoder_fallbacks[0].startswith("gigatoken: refused")


def test_tiktoken_kind_refuses_bad_files_and_options(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    good = tmp_path / "good.tiktoken"
    good.write_bytes(dump_ranks(ranks))
    assert parse_ranks(good.read_bytes()) == ranks
    cases = {
        "needs pattern=": ({}, None),
        "line 2 is malformed": ({"pattern": "gpt2"}, b"YQ== 97\nnot base64!! 3\n"),
        "repeated token": ({"pattern": "gpt2"}, b"YQ== 97\nYQ== 98\n"),
        "lack single-byte tokens": ({"pattern": "gpt2"}, b"YQ== 97\n"),
        "already taken": ({"pattern": "gpt2", "special_tokens": {"<|x|>": 5}}, None),
        "not a JSON mapping": ({"pattern": "gpt2", "special_tokens": "{nope"}, None),
        "not a valid id": ({"pattern": "gpt2", "special_tokens": {"<|x|>": -1}}, None),
        "unknown option": ({"pattern": "gpt2", "vocab": 3}, None),
    }
    for message, (options, data) in cases.items():
        path = good
        if data is not None:
            path = tmp_path / "bad.tiktoken"
            path.write_bytes(data)
        with pytest.raises(TokenizerError, match=message):
            load_tokenizer(f"tiktoken:{path}", **options)


def test_tokenizers_pickle_with_their_encoder(loaded, style_paths, sample_texts):
    import pickle

    for backend in ("auto", "tiktoken", "tokenizers"):
        tok = loaded("split", backend)
        copy = pickle.loads(pickle.dumps(tok))
        assert copy.encoder == tok.encoder and copy.describe() == tok.describe()
        assert np.array_equal(
            copy.encode_batch_flat(sample_texts[:10])[0],
            tok.encode_batch_flat(sample_texts[:10])[0],
        )
        assert copy.supports_encode_bytes == (tok.encoder != "tokenizers")


# -- characters newer than the reference's Unicode tables ---------------------------------------
UNICODE_17 = [
    "\u088f's",  # an Arabic letter added in 17.0, then a contraction
    "\ua7ce's and \ua7cf's",
    "x\U00010940's y",
    "\u1acf's",  # a combining mark added in 17.0
    "1\U00011de023 and 9\U00011de0\U00011de1",  # digits added in 17.0
    "Plain text around \u088f's and a \U0001f600 emoji",
]


@pytest.mark.skipif(not HAS_GIGATOKEN, reason="gigatoken is not installed")
@pytest.mark.parametrize("style", ["bytelevel", "split"])
def test_characters_the_reference_does_not_know_are_encoded_as_the_reference_does(
    loaded, style, sample_texts
):
    """gigatoken's Unicode 17 tables take U+088F for a letter, U+11DE0 for a digit, where
    `tokenizers` (and tiktoken) have no character: `"\\u088f's"` was X + 's against X' + s, with
    no error (the gate passed; found by fuzzing every code point). Texts holding a code point
    Python's Unicode database does not assign now go to the reference; the rest stay on
    gigatoken, and the probes hold such characters, so an unguarded gigatoken is refused."""
    from tokenizers_impl.encoders import select_encoder
    from tokenizers_impl.encoders.unassigned import Guarded

    tok = loaded(style, "auto")
    assert tok.encoder == "gigatoken" and isinstance(tok._encoder, Guarded)
    texts = [*UNICODE_17, *sample_texts[:30]]
    _assert_same_as_reference(tok, texts)
    # routed texts among others, first, in the middle and last: each gets its own ids back
    mixed = [
        *sample_texts[:3],
        UNICODE_17[0],
        *sample_texts[3:9],
        *UNICODE_17[1:4],
        "",
        UNICODE_17[4],
    ]
    _assert_same_as_reference(tok, mixed)
    assert tok._encoder.routed >= 5
    from tokenizers_impl.encoders.unassigned import KERNEL_UNITS

    big = "\u4e2d\u6587 text " * (KERNEL_UNITS // 7)  # past KERNEL_UNITS: the compiled scan
    _assert_same_as_reference(tok, [big, *mixed, big])
    assert tok._encoder.routed >= 10
    raw = tok._encoder.fast  # the library alone is not exact on them (its tables are newer)
    register_encoder("gigatoken-unguarded", lambda source: _Unguarded(raw))
    try:
        with pytest.raises(TokenizerError, match="is not exact.*probe"):
            select_encoder(
                "gigatoken-unguarded", tok._source, tok._reference, tok._probes, ("tokenizers",)
            )
    finally:
        unregister_encoder("gigatoken-unguarded")
    again = pickle.loads(pickle.dumps(tok))  # (actors and helpers get it pickled)
    assert isinstance(again._encoder, Guarded)
    _assert_same_as_reference(again, UNICODE_17)


class _Unguarded(Encoder):
    name = "gigatoken-unguarded"

    def __init__(self, inner):
        self.inner = inner

    def encode_flat(self, texts):
        return self.inner.encode_flat(texts)


def test_risky_texts_finds_unassigned_code_points_in_small_and_big_batches():
    from tokenizers_impl.encoders.unassigned import KERNEL_UNITS, risky_texts

    texts = [
        "ascii",
        "caf\u00e9 \u00fc",  # Latin-1: never scanned
        "\u4e2d\u6587 \u043c\u0438\u0440 \u201cquotes\u201d",  # assigned BMP characters
        "\U0001f600 \U0001f44d\U0001f3fd",  # assigned astral characters (emoji)
        "lone \ud800 surrogate",  # not a character at all, but not unassigned either
        "a \u088f",  # unassigned in Python's database, a letter in Unicode 17
        "\U00011de0",  # the same above U+FFFF
        "\u0378",  # unassigned in every version so far
        "\U000e01f0 \U00050000",  # unassigned astral
    ]
    assert risky_texts(texts) == [5, 6, 7, 8]
    pad = "\u4e2d" * KERNEL_UNITS  # past KERNEL_UNITS: the compiled scan, same answer
    assert risky_texts([t + pad for t in texts]) == [5, 6, 7, 8]
    assert risky_texts([pad, pad + "\U0001f600"]) == []
    sparse = "\u00e9" + "x" * KERNEL_UNITS  # mostly ASCII: the compiled pass over UTF-8
    assert risky_texts([t + sparse for t in texts]) == [5, 6, 7, 8]


_RISKY_PIECES = ["a", " ", "\u00e9", "\u4e2d", "\u201c", "\u088f", "\u0378", "\ud800", "\udfff", "\x00",
                 "\U0001f600", "\U00011de0", "\U000e01f0", "plain ascii text " * 3]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_RISKY_PIECES), max_size=30).map("".join), max_size=25))
def test_the_compiled_scans_agree_with_the_numpy_scan(texts):
    """Big batches take a compiled pass, over UTF-8 bytes (8 ASCII bytes a step) when most
    characters are ASCII, over UTF-16 code units when others are frequent (texts joined without
    separators either way); small ones the numpy code units: the same texts, whatever the mix.
    Padding every third text past KERNEL_UNITS, with assigned CJK (the UTF-16 pass) or with
    ASCII after an 'e' with an accent (the UTF-8 pass), changes no text's answer."""
    from tokenizers_impl.encoders.unassigned import KERNEL_UNITS, risky_texts

    want = [k for k, t in enumerate(texts) if any(_unassigned(c) for c in t)]
    assert risky_texts(texts) == want
    for pad in ("\u4e2d" * KERNEL_UNITS, "\u00e9" + "a" * KERNEL_UNITS):
        padded = [t + pad if k % 3 == 0 else t for k, t in enumerate(texts)]
        assert risky_texts(padded) == want


def _unassigned(char: str) -> bool:
    import unicodedata

    return unicodedata.category(char) == "Cn"


def test_a_non_special_added_token_loads_and_decodes_to_its_text(style_paths, tmp_path):
    """A byte-level tokenizer.json with non-special added tokens failed to load (KeyError ' ':
    their text was read through the byte map) and "çà" would have decoded to b'\\xe7\\xe0'."""
    from tokenizers import AddedToken

    hf = HFTokenizer.from_file(style_paths["split"])
    hf.add_tokens([AddedToken(" hello world", normalized=False), AddedToken("çà")])
    path = tmp_path / "added.json"
    hf.save(str(path))
    tok = load_tokenizer(f"bpe:{path}")
    text = "they say hello world and çà, voilà"
    ids = tok.encode_batch([text])[0]
    assert tok.added_tokens[" hello world"] in ids.tolist() and tok.added_tokens["çà"] in ids
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert ids.tolist() == tok.encode_reference([text])[0]


def test_plain_added_tokens_behind_256_specials_are_probed(style_paths, tmp_path, sample_texts):
    """A Llama-3-style file has 256 reserved specials first; the gate probed the first 256 added
    tokens only, so a `single_word` non-special one after them was never probed: gigatoken
    (auto) wrote [x, <tool_call>, y] where `tokenizers` keeps "x<tool_call>y" apart, and
    tiktoken (which never matches non-special added tokens) split it into pieces. Now every
    non-special one is probed first, and tiktoken refuses such a tokenizer."""
    from tokenizers import AddedToken

    hf = HFTokenizer.from_file(style_paths["split"])
    hf.add_special_tokens([f"<|reserved_special_token_{i}|>" for i in range(1, 257)])
    hf.add_tokens([AddedToken("<tool_call>", special=False, normalized=False, single_word=True)])
    path = tmp_path / "tool.json"
    hf.save(str(path))
    tok = load_tokenizer(f"bpe:{path}")
    texts = ["x<tool_call>y", "x <tool_call> y", *sample_texts[:20]]
    _assert_same_as_reference(tok, texts)
    assert tok.encode_batch(["x <tool_call> y"])[0].tolist().count(tok.added_tokens["<tool_call>"])
    with pytest.raises(TokenizerError, match="non-special added token.*tiktoken cannot match"):
        load_tokenizer(f"bpe:{path}", encoder="tiktoken")


def test_a_llama3_style_bpe_trains_from_options_and_a_string_is_no_token_list(sample_texts):
    trained = BPETokenizer.train(sample_texts[:60], 1000, split_pattern="llama3")
    assert trained.encoder == FASTEST
    assert json.loads(trained.hf.to_str())["pre_tokenizer"]["type"] == "Sequence"
    _assert_same_as_reference(trained, sample_texts[:20])
    with pytest.raises(TokenizerError, match="a list of token texts"):
        BPETokenizer.train(sample_texts[:5], 500, special_tokens="<eos>")


def test_a_resume_whose_eos_moved_is_refused(style_paths, tmp_path):
    """A tokenizer_config.json that appeared beside the tokenizer file moved its EOS without
    changing the config hash: the rerun resumed, and one output held entries of two EOS ids (the
    loader used the first). It is refused now; without the file (or tokenizer_config=false) the
    output continues."""
    import shutil

    from pipeline.errors import LedgerError
    from pipeline.tokenize import run_job
    from tests.helpers import SAMPLE_DIR, job_config

    (tmp_path / "tok").mkdir()
    shutil.copy(style_paths["split"], tmp_path / "tok" / "tokenizer.json")
    spec, out = f"bpe:{tmp_path / 'tok' / 'tokenizer.json'}", tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "en.jsonl", out, spec))
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(json.dumps({"eos_token": "<|reserved_special_token_0|>"}))
    both = [SAMPLE_DIR / "en.jsonl", SAMPLE_DIR / "de.jsonl"]
    with pytest.raises(LedgerError, match=r"started with EOS '<\|end_of_text\|>' \(id \d+\)"):
        run_job(job_config(both, out, spec))
    ignored = {"kind": "bpe", "path": spec[4:], "options": {"tokenizer_config": False}}
    assert run_job(job_config(both, out, ignored)).complete
    eos = {json.loads(p.read_text())["tokenizer"]["eos_id"] for p in (out / "ledger").glob("*")}
    assert len(eos) == 1
