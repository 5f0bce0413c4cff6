"""Byte-token conversion (docs/algorithms.md section 4, "Byte-token conversion"): the Markov-chain
oracle, the lemma's must-hold properties, and byte span <-> token span alignment on real text."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from tokenizers_impl.bpe import BPETokenizer
from tokenizers_impl.byte_token import (
    EOT,
    ByteState,
    CanonicalModel,
    LongestPrefixTokenizer,
    byte_prob,
    byte_span_to_tokens,
    codec,
    cover_encodings,
    ensemble_next_byte_distribution,
    generate_bytes,
    log_byte_prob,
    naive_next_byte_distribution,
    next_byte_distribution,
    token_end_offsets,
    token_healing_distribution,
    tokens_to_byte_span,
)
from tokenizers_impl.ngram_model import NgramModel
from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

# The oracle: bytes from a 2-state Markov chain over {A, B}, P(A|A) = 0.3, P(A|B) = 0.6, first byte
# A or B with probability 1/2 each; every document is exactly LENGTH bytes long.
P_NEXT_A = {ord("A"): 0.3, ord("B"): 0.6}
P_FIRST_A = 0.5
LENGTH = 8
A, B = ord("A"), ord("B")


def chain_prob(s: bytes) -> float:
    p = 1.0 if not s else (P_FIRST_A if s[0] == A else 1 - P_FIRST_A)
    for prev, cur in itertools.pairwise(s):
        p *= P_NEXT_A[prev] if cur == A else 1 - P_NEXT_A[prev]
    return p


def true_next(s: bytes) -> dict:
    if len(s) == LENGTH:
        return {A: 0.0, B: 0.0, EOT: 1.0}
    pa = P_NEXT_A[s[-1]] if s else P_FIRST_A
    return {A: pa, B: 1 - pa, EOT: 0.0}


class ExactTokenModel:
    """The exact token-level model: enumerate all LENGTH-byte strings, encode each canonically."""

    def __init__(self, tokenizer):
        self.vocab_size = tokenizer.vocab_size
        mass = defaultdict(lambda: np.zeros(self.vocab_size + 1))
        for s in itertools.product(b"AB", repeat=LENGTH):
            ids = codec(tokenizer).encode(bytes(s))
            for k in range(len(ids)):
                mass[ids[:k]][ids[k]] += chain_prob(bytes(s))
            mass[ids][-1] += chain_prob(bytes(s))
        with np.errstate(divide="ignore"):
            self.rows = {c: np.log(v / v.sum()) for c, v in mass.items()}

    def __call__(self, contexts):
        end_only = np.full(self.vocab_size + 1, -np.inf)
        end_only[-1] = 0.0  # contexts of probability zero: any distribution will do
        return np.array([self.rows.get(tuple(c), end_only) for c in contexts])


def all_prefixes(max_len: int):
    for n in range(max_len + 1):
        for s in itertools.product(b"AB", repeat=n):
            yield bytes(s)


@pytest.fixture(scope="module")
def lp_oracle():
    tok = LongestPrefixTokenizer([b"A", b"B", b"AA"])
    return tok, ExactTokenModel(tok)


@pytest.fixture(scope="module")
def bpe_oracle():
    rng = np.random.default_rng(0)
    corpus = []
    for _ in range(300):
        s = [A if rng.random() < P_FIRST_A else B]
        for _ in range(19):
            s.append(A if rng.random() < P_NEXT_A[s[-1]] else B)
        corpus.append(bytes(s).decode())
    tok = BPETokenizer.train(corpus, vocab_size=257 + 8)
    return tok, ExactTokenModel(tok)


def test_oracle_longest_prefix_lemma_is_exact_and_naive_prompting_is_biased(lp_oracle):
    tok, model = lp_oracle
    assert next_byte_distribution(tok, model, b"A")[A] == pytest.approx(0.3, abs=1e-15)
    assert naive_next_byte_distribution(tok, model, b"A")[A] == 0.0
    # healing backs up [A] and takes A or AA from the empty context: the exact answer here
    assert token_healing_distribution(tok, model, b"A")[A] == pytest.approx(0.3, abs=1e-15)
    for prefix in all_prefixes(LENGTH):
        dist, truth = next_byte_distribution(tok, model, prefix), true_next(prefix)
        for key in (A, B, EOT):
            assert dist[key] == pytest.approx(truth[key], abs=1e-12), (prefix, key)
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12)
        assert byte_prob(tok, model, prefix) == pytest.approx(chain_prob(prefix), rel=1e-12)


def test_oracle_trained_bpe_lemma_is_exact_where_naive_and_healing_are_not(bpe_oracle):
    tok, model = bpe_oracle
    merged = [tok.token_bytes(i) for i in range(257, tok.vocab_size)]
    assert merged == [b"AB", b"ABAB", b"ABB", b"BB", b"ABA", b"AA", b"AABAB", b"ABBB"]
    for prefix in all_prefixes(LENGTH):
        dist, truth = next_byte_distribution(tok, model, prefix), true_next(prefix)
        for key in (A, B, EOT):
            assert dist[key] == pytest.approx(truth[key], abs=1e-12), (prefix, key)
    # "A" encodes as [A]; canonically the next token then never starts with B ("AB" is a token)
    assert naive_next_byte_distribution(tok, model, b"A")[A] == pytest.approx(1.0, abs=1e-12)
    assert naive_next_byte_distribution(tok, model, b"AB")[A] == 0.0
    assert token_healing_distribution(tok, model, b"AB")[A] == pytest.approx(0.6, abs=1e-12)
    # "AAB" = [A, AB]: healing only considers tokens after [A], missing the covers from [AA]
    healed = token_healing_distribution(tok, model, b"AAB")[A]
    assert healed == pytest.approx(0.310344827586, abs=1e-9)
    assert next_byte_distribution(tok, model, b"AAB")[A] == pytest.approx(0.6, abs=1e-12)


@pytest.mark.parametrize("which", ["lp_oracle", "bpe_oracle"])
def test_oracle_must_hold_properties(which, request):
    tok, model = request.getfixturevalue(which)
    for prefix in all_prefixes(LENGTH - 1):
        covers = cover_encodings(tok, prefix)
        assert codec(tok).encode(prefix) in covers  # enc(x) is a cover
        decoded = [codec(tok).decode(t) for t in covers]
        # (no lookahead in these tokenizers: a prefix-canonical cover is canonical)
        assert len(set(decoded)) == len(decoded)  # covers decode to distinct strings
        assert all(d.startswith(prefix) for d in decoded)
        assert covers == cover_encodings(tok, prefix, index="scan")
        dist = next_byte_distribution(tok, model, prefix)
        p_x = byte_prob(tok, model, prefix)
        for b in (A, B):  # chain rule with both sides from the lemma
            assert byte_prob(tok, model, prefix + bytes([b])) == pytest.approx(
                p_x * dist[b], abs=1e-15
            )
    state = ByteState(tok, model)  # incremental == from scratch along a path
    for b in b"ABBAABA":
        state.advance(b)
        fresh = ByteState(tok, model, state.prefix)
        assert state.groups == fresh.groups and state.exact == fresh.exact
        assert state.distribution() == pytest.approx(fresh.distribution(), abs=1e-15)


def test_oracle_ensemble_of_two_vocabularies_and_generation(lp_oracle, bpe_oracle):
    pairs = [lp_oracle, bpe_oracle]
    dist = ensemble_next_byte_distribution(pairs, b"ABA")
    assert dist[A] == pytest.approx(0.3, abs=1e-12) and dist[B] == pytest.approx(0.7, abs=1e-12)
    states = [ByteState(t, m, b"A") for t, m in pairs]
    assert generate_bytes(states, 20) == b"BABABAB"  # greedy; stops at end-of-text after 8 bytes
    rng = np.random.default_rng(1)
    sampled = generate_bytes(ByteState(*bpe_oracle), 20, greedy=False, rng=rng)
    assert len(sampled) == LENGTH and set(sampled) <= {A, B}


def test_canonical_model_zeroes_non_canonical_continuations(lp_oracle):
    tok, _ = lp_oracle
    uniform = CanonicalModel(lambda contexts: np.log(np.full((len(contexts), 4), 0.25)), tok)
    row = np.exp(uniform([[0]])[0])  # after [A]: A and AA would re-encode as AA / AA A
    assert row.tolist() == pytest.approx([0.0, 0.5, 0.0, 0.5])


# -- the n-gram model on the sample corpus --------------------------------------------------------


@pytest.fixture(scope="module")
def sample_bpe(sample_texts):
    return BPETokenizer.train(sample_texts, vocab_size=600)


@pytest.fixture(scope="module")
def sample_ngram(sample_bpe, sample_texts, sample_records):
    held = {records[0]["text"] for records in sample_records.values()}  # see `held_out`
    train = [t for t in sample_texts if t not in held]
    model = NgramModel.train(sample_bpe.encode_batch(train), sample_bpe.vocab_size, order=3)
    return CanonicalModel(model, sample_bpe)


@pytest.fixture(scope="module")
def held_out(sample_records):
    """Held-out document starts (zh: a "\\n\\n" then a character cut after 2 of its 3 bytes)."""
    out = {}
    for lang, records in sample_records.items():
        text = records[0]["text"].encode("utf-8")
        out[lang] = text[:17] if lang in ("ru", "zh") else text[:14]
    return out


def test_ngram_byte_by_byte_probability_equals_the_lemma_on_the_whole_text(
    sample_bpe, sample_ngram, held_out
):
    for lang, text in held_out.items():
        state, log_chain = ByteState(sample_bpe, sample_ngram), 0.0
        for b in text:
            dist = state.distribution()
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-9), lang
            log_chain += math.log(dist[b])
            state.advance(b)
        assert log_chain == pytest.approx(log_byte_prob(sample_bpe, sample_ngram, text), abs=1e-9)
        log_end = log_chain + math.log(state.distribution()[EOT])
        assert log_end == pytest.approx(
            log_byte_prob(sample_bpe, sample_ngram, text, end=True), abs=1e-9
        ), lang


def test_end_of_text_follows_only_the_encoding_of_the_texts_own_bytes(sample_bpe, sample_ngram):
    """A text ending in whitespace: [' ', ' '] may be followed by more text, but "  " alone is
    encoded otherwise; end-of-text after it put mass on a complete non-canonical sequence, so
    log_byte_prob(x, end=True) was the sum over several encodings, not log P(enc(x) + EOT)."""
    for text in ("  x  ", "a  ", "x\n\n  ", "end.\n"):
        enc = [int(i) for i in sample_bpe.encode_batch([text])[0]]
        logp = sum(float(sample_ngram([enc[:k]])[0][enc[k]]) for k in range(len(enc)))
        logp += float(sample_ngram([enc])[0][-1])
        end = log_byte_prob(sample_bpe, sample_ngram, text.encode(), end=True)
        assert end == pytest.approx(logp, abs=1e-9), text


def test_end_of_text_needs_the_encoding_of_the_contexts_own_bytes_on_every_tokenizer(
    sample_bpe, tmp_path
):
    """Without `encode_bytes` (LiB; a BPE on the `tokenizers` encoder) every context was taken
    for complete: end-of-text after a cut UTF-8 character, or after [a, ' ', ' '] (whose bytes
    encode as [a, '  ']), had mass."""
    from tokenizers_impl import load_tokenizer
    from tokenizers_impl.lib import LiBTokenizer

    lib = LiBTokenizer.from_lexicon(["ab", "a", "b"])
    uniform = CanonicalModel(lambda c: np.zeros((len(c), lib.vocab_size + 1)), lib)
    cut = "\u4e2d".encode()[:1]
    assert next_byte_distribution(lib, uniform, cut)[EOT] == 0.0
    assert byte_prob(lib, uniform, cut, end=True) == 0.0
    assert next_byte_distribution(lib, uniform, b"ab")[EOT] > 0  # [ab] is enc("ab")
    sample_bpe.save(str(tmp_path / "bpe.json"))
    tok = load_tokenizer(f"bpe:{tmp_path / 'bpe.json'}", encoder="tokenizers")
    assert not tok.supports_encode_bytes
    model = CanonicalModel(lambda c: np.zeros((len(c), tok.vocab_size + 1)), tok)
    a, space = (int(tok.encode_batch([t])[0][0]) for t in ("a", " "))
    assert tuple(int(i) for i in tok.encode_batch(["a  "])[0]) != (a, space, space)
    assert model([(a, space, space)])[0][-1] == -np.inf
    assert model([tuple(int(i) for i in tok.encode_batch(["a  "])[0])])[0][-1] > -np.inf


def test_the_lemma_sums_over_prefix_canonical_covers(sample_bpe):
    """GPT-2's `\\s+(?!\\S)` splits "a\\n\\n" as [a, "\\n\\n"] and the start of "a\\n\\n" + more
    text as [a, "\\n", "\\n"]: a cover that is not canonical by itself. `cover_encodings` left it
    out (only canonical covers), so P(x) summed over its covers fell short of byte_prob(x)."""
    from tokenizers_impl.byte_token.models import Scorer

    model = CanonicalModel(lambda c: np.zeros((len(c), sample_bpe.vocab_size + 1)), sample_bpe)
    for text in (b"a\n\n", b"x  ", b"end.\n\n"):
        covers = cover_encodings(sample_bpe, text)
        longer = tuple(int(i) for i in sample_bpe.encode_batch([text.decode() + "x"])[0])
        assert any(longer[: len(t)] == t for t in covers)
        scorer = Scorer(model, ())
        total = sum(math.exp(scorer.logq(t)) for t in covers)
        assert total == pytest.approx(byte_prob(sample_bpe, model, text), rel=1e-9), text


def test_ngram_incremental_equals_scratch_and_trie_equals_scan(sample_bpe, sample_ngram, held_out):
    text = held_out["zh"]
    state = ByteState(sample_bpe, sample_ngram)
    for b in text:
        state.advance(b)
        fresh = ByteState(sample_bpe, sample_ngram, state.prefix, index="scan")
        assert state.groups == fresh.groups and state.exact == fresh.exact
        assert state.distribution() == pytest.approx(fresh.distribution(), abs=1e-12)
        assert codec(sample_bpe).encode(state.prefix) in cover_encodings(sample_bpe, state.prefix)


def test_ngram_chain_rule_and_normalisation_on_cut_prompts(sample_bpe, sample_ngram, held_out):
    for text in (held_out["en"][:12], held_out["de"][:9], held_out["ru"][:7]):
        dist = next_byte_distribution(sample_bpe, sample_ngram, text)
        assert sum(dist.values()) == pytest.approx(1.0, abs=1e-9)
        p_x = byte_prob(sample_bpe, sample_ngram, text)
        for b, p in sorted(dist.items(), key=lambda kv: -kv[1])[:3]:
            if b != EOT:
                assert byte_prob(sample_bpe, sample_ngram, text + bytes([b])) == pytest.approx(
                    p_x * p, rel=1e-9
                )


# -- byte span <-> token span ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_unigram(sample_texts):
    return SentencePieceTokenizer.train(
        sample_texts[::6], vocab_size=1500, model_type="unigram", character_coverage=0.98
    )


@pytest.mark.parametrize("which", ["sample_bpe", "sample_unigram"])
def test_byte_spans_and_token_spans_map_exactly_in_every_language(which, request, sample_records):
    tok = request.getfixturevalue(which)
    rng = np.random.default_rng(0)
    for lang, records in sample_records.items():
        data = records[1]["text"].encode("utf-8")[:1500]
        data = data.decode("utf-8", errors="ignore").encode("utf-8")
        ids = tok.encode_batch([data.decode("utf-8")])[0]
        offsets = token_end_offsets(tok, ids)
        assert offsets.dtype == np.uint32 and int(offsets[-1]) == len(data), lang
        for k, token in enumerate(ids.tolist()):
            a, b = tokens_to_byte_span(offsets, k, k + 1)
            assert data[a:b] == tok.token_bytes(token)
            assert byte_span_to_tokens(offsets, a, b) == (k, k + 1)
        for a, b in np.sort(rng.integers(0, len(data) + 1, size=(200, 2)), axis=1).tolist():
            i, j = byte_span_to_tokens(offsets, a, b)
            lo, hi = tokens_to_byte_span(offsets, i, j)
            if a < b:  # covers the span, and no smaller token span does
                assert lo <= a and b <= hi
                assert tokens_to_byte_span(offsets, i + 1, j)[0] > a
                assert tokens_to_byte_span(offsets, i, j - 1)[1] < b
        assert tokens_to_byte_span(offsets, 0, len(ids)) == (0, len(data))


def test_longest_prefix_reference_tokenizer_saves_and_loads_as_plain_json(tmp_path):
    from tokenizers_impl.base import TokenizerError
    from tokenizers_impl.byte_token import LongestPrefixTokenizer

    tok = LongestPrefixTokenizer([b"A", b"B", b"AA", b"\xff"])
    tok.save(str(tmp_path / "lp.json"))
    loaded = LongestPrefixTokenizer.load(str(tmp_path / "lp.json"))
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.encode_bytes(b"AAAB\xff") == [2, 0, 1, 3]
    (tmp_path / "bad.json").write_text('{"kind": "longest-prefix", "vocab": ["zz"]}')
    with pytest.raises(TokenizerError, match="bad vocabulary entry"):
        LongestPrefixTokenizer.load(str(tmp_path / "bad.json"))


def test_a_str_prompt_is_a_type_error_saying_to_encode_it(sample_bpe):
    """A str went deep into the tokenizer and failed with "'str' object has no attribute
    'decode'"."""
    model = CanonicalModel(lambda c: np.zeros((len(c), sample_bpe.vocab_size + 1)), sample_bpe)
    for call in (naive_next_byte_distribution, token_healing_distribution, next_byte_distribution):
        with pytest.raises(TypeError, match="must be bytes, not str: pass text.encode"):
            call(sample_bpe, model, "The quick bro")
    with pytest.raises(TypeError, match="x must be bytes"):
        byte_prob(sample_bpe, model, "The quick bro")
