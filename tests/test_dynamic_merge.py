"""Dynamic batch-level merging (docs/algorithms.md section 3): every "Must hold", and the
incremental algorithm against the recount-per-merge oracle on real and generated batches."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizers_impl.base import TokenizerBase, TokenizerError, fingerprint_of, load_tokenizer
from tokenizers_impl.bpe import GPT2_PATTERN, BPETokenizer
from tokenizers_impl.dynamic_merge import DynamicMergeTokenizer, vocab_from_sidecar
from tokenizers_impl.dynamic_merge.merging import expand, merge_batch_ids
from tokenizers_impl.dynamic_merge.pretokens import WORD_PATTERN, batch_pretoken_starts
from tokenizers_impl.dynamic_merge.reference import recount_merges

LANGS = ("code", "de", "en", "ru", "zh")


class ByteTokenizer(TokenizerBase):
    """One token per byte (id = byte value); `special` bytes are special tokens."""

    kind = "bytes"

    def __init__(self, special: bytes = b""):
        self.name = "bytes"
        self.vocab_size = 256
        self.fingerprint = fingerprint_of(self.kind, special)
        self.special_ids = set(special)

    def encode_batch(self, texts):
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint32) for t in texts]

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])

    @classmethod
    def load(cls, path, storage_options=None, **options):
        return cls(bytes.fromhex(path))

    def save(self, url, storage_options=None):
        raise NotImplementedError


@pytest.fixture(scope="module")
def bpe(bpe_path) -> BPETokenizer:
    """The 8k byte-level BPE trained on the sample corpus (conftest), loaded once for the module."""
    return BPETokenizer.load(bpe_path)


@pytest.fixture(scope="module")
def batches(sample_records) -> dict[str, list[str]]:
    """Per language: 8 real documents cut to 1,500 characters (small enough for the oracle)."""
    return {lang: [r["text"][:1500] for r in sample_records[lang][:8]] for lang in LANGS}


def pretoken_byte_spans(text: str, pattern: str) -> list[tuple[int, int]]:
    """Byte spans of the pre-tokens of `text`, computed independently of the plugin."""
    spans, pos = [], 0
    for part in regex.findall(pattern, text):
        end = pos + len(part.encode("utf-8"))
        spans.append((pos, end))
        pos = end
    return spans


def token_byte_spans(tok: DynamicMergeTokenizer, ids, vocab) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for i in ids:
        end = pos + len(tok.base.decode_bytes(vocab.get(int(i), (int(i),))))
        spans.append((pos, end))
        pos = end
    return spans


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.text(alphabet=list("'sdmtlvre Xx1٣\n\t\u00a0\u3000.,中é\u0301😀\r"), max_size=30),
        max_size=5,
    )
)
def test_vectorised_pre_tokens_match_the_regex_scan(texts):
    for mode, pattern in (("pretoken", GPT2_PATTERN), ("word", WORD_PATTERN)):
        got = [starts.tolist() for starts in batch_pretoken_starts(texts, mode)]
        assert got == [[s for s, _ in pretoken_byte_spans(t, pattern)] for t in texts], mode


def test_zero_merges_return_the_base_tokenization(bpe, batches):
    tok = DynamicMergeTokenizer(bpe, max_merges=0)
    for texts in batches.values():
        result = tok.merge_batch(texts)
        assert result.vocab == {} and result.lm == result.l0
        for merged, base in zip(result.ids, bpe.encode_batch(texts), strict=True):
            np.testing.assert_array_equal(merged, base)


def test_each_merge_shortens_the_batch_by_exactly_its_replaced_count(bpe, batches):
    tok = DynamicMergeTokenizer(bpe, max_merges=0)
    base = tok.base_batch(batches["de"])
    full = merge_batch_ids(base, bpe.vocab_size, 40)
    previous = base.ids.size
    for k in range(1, 41):
        step = merge_batch_ids(base, bpe.vocab_size, k)
        assert step.merges == full.merges[:k]
        assert step.lm == step.flat.size == previous - full.replaced[k - 1]
        assert full.replaced[k - 1] > 0 and step.lm <= previous
        previous = step.lm


def test_a_a_a_with_pair_a_a_becomes_aa_a():
    tok = DynamicMergeTokenizer(ByteTokenizer(), max_merges=1)
    a = ord("a")
    for merge in (merge_batch_ids, recount_merges):
        result = merge(tok.base_batch(["aaa", "aaaa"]), 256, 1)
        assert result.merges == [(a, a)] and result.vocab == {256: (a, a)}
        assert [r.tolist() for r in result.ids] == [[256, a], [256, 256]]
        assert result.replaced == [3]


def test_special_tokens_never_merge():
    tok = DynamicMergeTokenizer(ByteTokenizer(special=b"|"), max_merges=0)
    result = tok.merge_batch(["||||ab|ab||"], max_merges=None)
    assert result.ids[0].tolist().count(ord("|")) == 7
    assert all(ord("|") not in pieces for pieces in result.vocab.values())
    assert result.lm == result.lword == 9


@pytest.mark.parametrize("boundary,pattern", [("pretoken", GPT2_PATTERN), ("word", WORD_PATTERN)])
def test_unlimited_merges_end_exactly_at_word_level_and_never_cross_a_boundary(
    bpe, sample_records, boundary, pattern
):
    tok = DynamicMergeTokenizer(bpe, max_merges=0, boundary=boundary)
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang][:12]]
        result = tok.merge_batch(texts, max_merges=None)
        expected = [pretoken_byte_spans(t, pattern) for t in texts]
        assert result.lword == sum(map(len, expected)), lang
        assert result.lm == result.lword, lang
        for ids, text, spans in zip(result.ids, texts, expected, strict=True):
            assert token_byte_spans(tok, ids, result.vocab) == spans, lang
            assert tok.decode_bytes(ids, result.vocab) == text.encode("utf-8")


def test_no_merged_token_crosses_a_pretoken_or_holds_inner_whitespace_at_50_merges(
    bpe, sample_records
):
    tok = DynamicMergeTokenizer(bpe, max_merges=50)
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang][:32]]
        result = tok.merge_batch(texts)
        assert len(result.merges) == 50
        for ids, text in zip(result.ids, texts, strict=True):
            starts = {s for s, _ in pretoken_byte_spans(text, GPT2_PATTERN)}
            for start, end in token_byte_spans(tok, ids, result.vocab):
                assert not any(b in starts for b in range(start + 1, end)), (lang, start, end)
        for new_id in result.vocab:
            text = tok.base.decode_bytes(result.vocab[new_id]).decode("utf-8", errors="replace")
            assert not regex.search(r"\S\s", text), text


def test_decode_equals_input_on_every_language(bpe, sample_records):
    tok = DynamicMergeTokenizer(bpe, max_merges=200, boundary="word")
    for lang in LANGS:
        texts = [r["text"] for r in sample_records[lang]]
        result = tok.merge_batch(texts)
        decoded = [tok.decode(ids, result.vocab) for ids in result.ids]
        assert decoded == texts, lang


def test_results_depend_on_batch_content_and_order_and_repeat_exactly(bpe, batches):
    tok = DynamicMergeTokenizer(bpe, max_merges=20)
    texts = batches["en"][:4]
    first, again = tok.merge_batch(texts), tok.merge_batch(list(texts))
    assert first.merges == again.merges and np.array_equal(first.flat, again.flat)
    reordered = tok.merge_batch(texts[::-1])
    assert reordered.merges != first.merges  # same documents, other order: other tie-breaks
    grown = tok.merge_batch(texts + batches["de"][:4])
    assert not np.array_equal(grown.ids[0], first.ids[0])  # same document, other batch


@pytest.mark.parametrize("lang", LANGS)
def test_incremental_merges_equal_the_recount_oracle_on_real_batches(bpe, batches, lang):
    tok = DynamicMergeTokenizer(bpe, max_merges=0)
    base = tok.base_batch(batches[lang][:5])
    fast = merge_batch_ids(base, bpe.vocab_size, None)
    slow = recount_merges(base, bpe.vocab_size, None)
    assert fast.merges == slow.merges and fast.replaced == slow.replaced
    assert fast.vocab == slow.vocab
    np.testing.assert_array_equal(fast.offsets, slow.offsets)
    np.testing.assert_array_equal(fast.flat, slow.flat)
    assert fast.lm == slow.lm == fast.lword


@settings(max_examples=80, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="aab b\n.é中", max_size=40), min_size=1, max_size=6),
    max_merges=st.one_of(st.none(), st.integers(0, 12)),
    boundary=st.sampled_from(["pretoken", "word"]),
)
def test_incremental_merges_equal_the_recount_oracle_on_generated_batches(
    texts, max_merges, boundary
):
    tok = DynamicMergeTokenizer(ByteTokenizer(), max_merges=0, boundary=boundary)
    base = tok.base_batch(texts)
    fast = merge_batch_ids(base, 256, max_merges)
    slow = recount_merges(base, 256, max_merges)
    assert fast.merges == slow.merges and fast.replaced == slow.replaced
    assert [f.tolist() for f in fast.ids] == [s.tolist() for s in slow.ids]
    assert fast.lm == base.ids.size - sum(fast.replaced) <= base.ids.size
    assert [tok.decode_bytes(ids, fast.vocab) for ids in fast.ids] == [t.encode() for t in texts]


def test_target_reduction_stops_at_the_first_merge_that_reaches_it(bpe, batches):
    tok = DynamicMergeTokenizer(bpe, max_merges=10_000, target_reduction=50)
    result = tok.merge_batch(batches["ru"])
    assert result.relative_reduction >= 50 and 0 < len(result.merges) < 10_000
    one_less = tok.merge_batch(batches["ru"], max_merges=len(result.merges) - 1)
    assert one_less.relative_reduction < 50


def test_encode_for_shard_adds_batch_id_and_a_sidecar_that_decodes_every_id(bpe, batches):
    tok = DynamicMergeTokenizer(bpe, max_merges=30, batch_docs=8)
    texts = batches["zh"]
    encoded = tok.encode_for_shard(texts, batch_index=3)
    assert encoded.columns["batch_id"].to_pylist() == [3] * len(texts)
    sidecar = encoded.sidecar
    assert sidecar.schema.equals(tok.sidecar_schema, check_metadata=True)
    vocab = vocab_from_sidecar(sidecar, 3)
    assert sorted(vocab) == list(range(bpe.vocab_size, bpe.vocab_size + 30))
    for d, text in enumerate(texts):
        ids = encoded.flat[encoded.offsets[d] : encoded.offsets[d + 1]]
        assert tok.decode(ids, vocab) == text
    for new_id, data in zip(
        sidecar["new_id"].to_pylist(), sidecar["bytes"].to_pylist(), strict=True
    ):
        if new_id is not None:
            assert data == bpe.decode_bytes(expand([new_id], vocab))
    stats = duckdb.sql(
        "SELECT batch_id, l0, lm, lword, 100.0 * (l0 - lm) / (l0 - lword) AS rel "
        "FROM sidecar WHERE new_id IS NULL"
    ).fetchall()
    result = tok.merge_batch(texts)
    assert stats == [
        (3, result.l0, result.lm, result.lword, pytest.approx(result.relative_reduction))
    ]
    assert tok.vocab_size == bpe.vocab_size + 30 and tok.preferred_batch_docs == 8


def test_loads_from_a_config_file_and_saves_it_back(bpe_path, tmp_path):
    config = tmp_path / "merge.json"
    (tmp_path / "base.json").write_bytes(Path(bpe_path).read_bytes())
    config.write_text(json.dumps({"base": "bpe:base.json", "max_merges": 7, "boundary": "word"}))
    tok = load_tokenizer(f"dynamic_merge:{config}")
    assert isinstance(tok, DynamicMergeTokenizer)
    assert (tok.max_merges, tok.boundary, tok.batch_docs) == (7, "word", 32)
    tok.save(str(tmp_path / "copy.yaml"))
    again = load_tokenizer(f"dynamic_merge:{tmp_path / 'copy.yaml'}")
    assert again.fingerprint == tok.fingerprint
    other = DynamicMergeTokenizer(tok.base, max_merges=8, boundary="word")
    assert other.fingerprint != tok.fingerprint
    other.save(str(tmp_path / "sub" / "other.json"))  # no base spec: the base is saved beside it
    assert load_tokenizer(f"dynamic_merge:{tmp_path / 'sub' / 'other.json'}").fingerprint == (
        other.fingerprint
    )
    config.write_text(json.dumps({"base": "bpe:base.json", "max_merge": 7}))
    with pytest.raises(TokenizerError, match="max_merge"):
        load_tokenizer(f"dynamic_merge:{config}")
    for bad in ({"target_reduction": "50%"}, {"target_reduction": True}, {"batch_docs": True}):
        config.write_text(json.dumps({"base": "bpe:base.json", **bad}))  # (a TypeError before)
        with pytest.raises(TokenizerError, match=next(iter(bad))):
            load_tokenizer(f"dynamic_merge:{config}")
    nested = tmp_path / "nested.json"  # (it failed later: "merged ids need their batch vocabulary")
    nested.write_text(json.dumps({"base": f"dynamic_merge:{tmp_path / 'copy.yaml'}"}))
    with pytest.raises(TokenizerError, match="base .* is a dynamic_merge tokenizer"):
        load_tokenizer(f"dynamic_merge:{nested}")


def test_wraps_a_sentencepiece_base_without_crossing_words(sp_path, sample_records):
    base = load_tokenizer(f"sentencepiece:{sp_path}")
    tok = DynamicMergeTokenizer(base, max_merges=0, boundary="word")
    for lang in ("en", "ru"):
        texts = [r["text"] for r in sample_records[lang][:6]]
        result = tok.merge_batch(texts, max_merges=None)
        assert result.lm == result.lword
        for ids, text in zip(result.ids, texts, strict=True):
            assert tok.decode(ids, result.vocab) == base.decode(base.encode_batch([text])[0])
            if base.lossless:
                starts = {s for s, _ in pretoken_byte_spans(text, WORD_PATTERN)}
                spans = token_byte_spans(tok, ids, result.vocab)
                for i, (start, end) in zip(ids.tolist(), spans, strict=True):
                    if i >= base.vocab_size:  # a base piece may span words; merges never do
                        assert not any(b in starts for b in range(start + 1, end))


def test_a_lone_surrogate_a_lib_base_keeps_is_merged_too():
    """LiB encodes a lone surrogate losslessly (as surrogatepass bytes); the merger counted the
    text's bytes with a strict encode and raised UnicodeEncodeError."""
    from tokenizers_impl.lib import LiBTokenizer

    base = LiBTokenizer.from_lexicon(["ab", "a", "b"])
    text = "ab\ud800ab ab"
    tok = DynamicMergeTokenizer(base, max_merges=5)
    merged = tok.merge_batch([text, "abab ab"])
    assert merged.lm < merged.l0  # it merged
    assert tok.decode_bytes(merged.ids[0], merged.vocab) == text.encode("utf-8", "surrogatepass")
