"""LiB tokenizer plugin (`lib`): the "Must hold" properties of docs/algorithms.md section 2 ("LiB"),
lossless encoding on every sample language and on generated Unicode, and the save/load contract."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import LANGS, SAMPLE_DIR, read_jsonl
from tokenizers_impl.base import TokenizerError, load_tokenizer
from tokenizers_impl.lib import EOS, LiBTokenizer
from tokenizers_impl.lib.encoding import NumbaLiBEncoder, RegexLiBEncoder
from tokenizers_impl.lib.lexicon import Lexicon
from tokenizers_impl.lib.training import LiBParams, LiBTrainer, segment


class CheckedLexicon(Lexicon):
    """A lexicon that verifies its three views after every update."""

    updates = 0

    def append(self, unit: str) -> None:
        super().append(unit)
        self._checked()

    def delete(self, unit: str) -> None:
        super().delete(unit)
        self._checked()

    def move(self, unit: str, new_rank: int) -> None:
        super().move(unit, new_rank)
        self._checked()

    def rerank_all(self, updates, delta):
        deleted = super().rerank_all(updates, delta)
        self._checked()
        return deleted

    def _checked(self) -> None:
        self.updates += 1
        self.check()


def sample_texts(lang: str) -> list[str]:
    return [r["text"] for r in read_jsonl(SAMPLE_DIR / f"{lang}.jsonl")]


@pytest.fixture(scope="module")
def en_tokenizer() -> LiBTokenizer:
    return LiBTokenizer.train(sample_texts("en")[:12], sample_sentences=0)


@pytest.fixture(scope="module")
def mixed_tokenizer() -> LiBTokenizer:
    """Trained on a few documents of every language (so the other documents hold unseen text)."""
    docs = [t[:4000] for lang in LANGS for t in sample_texts(lang)[:4]]
    return LiBTokenizer.train(docs)


_LEXICONS: dict[str, Lexicon] = {}


def reference_segment(tok: LiBTokenizer, text: str) -> list[str]:
    """The training module's segmentation with a live Lexicon (trie walks, no regex, no plans)."""
    if tok.fingerprint not in _LEXICONS:
        _LEXICONS[tok.fingerprint] = Lexicon(tok.units)
    return segment(_LEXICONS[tok.fingerprint], text, 10**6)


# -- segmentation depends on rank order --------------------------------------------------------------
def test_rank_order_decides_segmentation_abc():
    first = LiBTokenizer.from_lexicon(["ab", "bc", "a", "b", "c"])
    second = LiBTokenizer.from_lexicon(["ab", "a", "b", "c", "bc"])
    assert first.segment("abc") == ["a", "bc"]
    assert first.encode("abc").tolist() == [2, 1]
    assert second.segment("abc") == ["ab", "c"]
    assert second.encode("abc").tolist() == [0, 3]
    assert segment(Lexicon(["ab", "bc", "a", "b", "c"]), "abc", 12) == ["a", "bc"]
    assert segment(Lexicon(["ab", "a", "b", "c", "bc"]), "abc", 12) == ["ab", "c"]


def test_fewer_chunks_win_before_ranks():
    # greedy branch [abc, d, e] has 3 chunks, the c2 branch [a, bcde] 2, though bcde ranks last
    assert LiBTokenizer.from_lexicon(["abc", "a", "b", "c", "d", "e", "bcde"]).segment("abcde") == [
        "a",
        "bcde",
    ]


def test_equal_chunk_counts_are_decided_by_the_sum_of_ranks():
    # [abc, d] against [ab, cd]: ranks 5 + 3 = 8 beat 4 + 6 = 10; reordered, 6 + 5 lose to 1 + 0
    assert LiBTokenizer.from_lexicon(["a", "b", "c", "d", "ab", "abc", "cd"]).segment("abcd") == [
        "abc",
        "d",
    ]
    assert LiBTokenizer.from_lexicon(["cd", "ab", "a", "b", "c", "d", "abc"]).segment("abcd") == [
        "ab",
        "cd",
    ]


# -- re-ranking arithmetic -------------------------------------------------------------------------
def make_trainer(n_units: int = 20, **params) -> LiBTrainer:
    units = [f"u{i:02d}" for i in range(n_units)]
    return LiBTrainer(LiBParams(**params), lexicon=CheckedLexicon(units))


def rerank(trainer: LiBTrainer, unit: str, is_reward: bool) -> None:
    """One re-rank through the kernel training uses (`Lexicon.rerank_all`)."""
    trainer.lexicon.rerank_all([(unit, is_reward)], trainer.params.delta)


def rerank_one(lexicon: Lexicon, unit: str, is_reward: bool, delta: float) -> None:
    """The re-rank rule in plain Python, one move at a time (the reference for the kernel):
    move `unit` floor(rank * delta) + 1 places; a multi-character unit pushed past the tail is
    deleted, a single character stays at the tail; rank 0 never moves."""
    rank = lexicon.rank(unit)
    if rank == 0:
        return
    step = math.floor(rank * delta) + 1
    if is_reward:
        lexicon.move(unit, max(0, rank - step))
    elif rank + step < len(lexicon):
        lexicon.move(unit, rank + step)
    elif len(unit) == 1:
        lexicon.move(unit, len(lexicon) - 1)
    else:
        lexicon.delete(unit)


def test_reward_at_rank_10_with_delta_02_lands_at_rank_7():
    trainer = make_trainer(delta=0.2)
    rerank(trainer, "u10", is_reward=True)
    assert trainer.lexicon.rank("u10") == 7
    assert trainer.lexicon.units()[6:11] == ["u06", "u10", "u07", "u08", "u09"]


def test_punishment_moves_towards_tail_and_past_the_tail_deletes():
    trainer = make_trainer(delta=0.2)
    rerank(trainer, "u10", is_reward=False)  # floor(10 * 0.2) + 1 = 3 places
    assert trainer.lexicon.rank("u10") == 13
    rerank(trainer, "u17", is_reward=False)  # 17 + 4 = 21 > 19: past the tail
    assert "u17" not in trainer.lexicon and len(trainer.lexicon) == 19


def test_rank_0_never_moves_and_reward_clamps_at_head():
    trainer = make_trainer(delta=1.0)
    rerank(trainer, "u00", is_reward=False)
    assert trainer.lexicon.rank("u00") == 0
    rerank(trainer, "u03", is_reward=True)  # 3 - (3 + 1) < 0: clamped at rank 0
    assert trainer.lexicon.units()[:2] == ["u03", "u00"]


def test_single_character_punished_past_tail_is_kept_at_tail():
    trainer = LiBTrainer(LiBParams(), lexicon=CheckedLexicon(["ab", "cd", "x", "ef"]))
    rerank(trainer, "x", is_reward=False)
    assert trainer.lexicon.units() == ["ab", "cd", "ef", "x"]


def test_rank_tree_follows_a_plain_list_through_random_updates():
    rng = random.Random(7)
    lexicon, model = CheckedLexicon(), []
    for step in range(1500):
        op = rng.random()
        if op < 0.4 or len(model) < 3:
            unit = f"u{step}"
            lexicon.append(unit)
            model.append(unit)
        elif op < 0.55:
            unit = model.pop(rng.randrange(len(model)))
            lexicon.delete(unit)
        else:
            unit = model.pop(rng.randrange(len(model)))
            rank = rng.randrange(len(model) + 1)
            model.insert(rank, unit)
            lexicon.move(unit, rank)
        assert lexicon.unit_at(len(model) - 1) == model[-1]
    assert lexicon.units() == model
    assert list(lexicon.iter_from_tail()) == model[::-1]
    assert [lexicon.rank(u) for u in model] == list(range(len(model)))


def test_rank_tree_stays_shallow_under_many_moves():
    lexicon = Lexicon(f"u{i}" for i in range(20_000))
    rng = random.Random(3)
    for _ in range(20_000):
        lexicon.move(lexicon.unit_at(rng.randrange(20_000)), rng.randrange(20_000))
    assert lexicon.depth() <= 4 * 15  # expected about 2 log2(n) ~ 30 for a treap of 20k nodes
    lexicon.check()


def test_batched_reranks_equal_one_at_a_time():
    """`Lexicon.rerank_all` (one kernel call per document) == the rule applied one at a time."""
    rng = random.Random(11)
    units = [f"w{i}" for i in range(150)] + list("abcdefghij")
    rng.shuffle(units)
    updates = [(rng.choice([*units, "absent"]), rng.random() < 0.5) for _ in range(3000)]
    one = CheckedLexicon(units)
    for unit, is_reward in updates:
        if unit in one:
            rerank_one(one, unit, is_reward, 0.2)
    batched = CheckedLexicon(units)
    deleted = batched.rerank_all(updates, 0.2)
    assert batched.units() == one.units()
    assert sorted(deleted) == sorted(set(units) - set(one.units()))
    assert all(len(u) > 1 for u in deleted) and set("abcdefghij") <= set(batched.units())


# -- training --------------------------------------------------------------------------------------
def test_three_lexicon_views_agree_after_every_update_in_training():
    lexicon = CheckedLexicon()
    trainer = LiBTrainer(LiBParams(omega=0.05, tau0=2), lexicon=lexicon)
    for text in sample_texts("de")[:2]:
        trainer.train_document(text[:1500].splitlines(keepends=True))
    assert lexicon.updates > 500
    assert len(lexicon) > 50


def test_unused_unit_on_probation_is_gone_after_tau0_documents():
    trainer = LiBTrainer(LiBParams(alpha=1.0, tau0=4), lexicon=CheckedLexicon())
    trainer.train_document(["ab"])  # a, b added when first seen; "ab" proposed, on probation
    assert "ab" in trainer.lexicon and trainer.probation["ab"] == 3
    trainer.params = dataclasses.replace(trainer.params, alpha=0.0)
    for _ in range(2):
        trainer.train_document(["cd"])
    assert "ab" in trainer.lexicon
    trainer.train_document(["cd"])  # the 4th document since "ab" was proposed
    assert "ab" not in trainer.lexicon
    assert {"a", "b", "c", "d"} <= set(trainer.lexicon)


def test_unit_used_while_on_probation_is_released_and_kept():
    trainer = LiBTrainer(LiBParams(alpha=1.0, tau0=2), lexicon=CheckedLexicon())
    trainer.train_document(["ab"])
    trainer.params = dataclasses.replace(trainer.params, alpha=0.0)
    for _ in range(5):  # tail marking puts "ab" back on probation each time; each use frees it
        trainer.walk("ab ab")
        assert "ab" not in trainer.probation
        trainer.end_document()
    assert "ab" in trainer.lexicon


def test_tail_units_are_put_on_probation_each_document():
    trainer = LiBTrainer(
        LiBParams(alpha=0.0, omega=0.25, tau0=3),
        lexicon=CheckedLexicon(["xy", "zw", "uv", "a", "b", "st"]),
    )
    trainer.train_document(["a"])
    # ceil(0.25 * 6) = 2 bottom units that are not single characters: st, uv
    assert trainer.probation == {"st": 3, "uv": 3}


def test_admit_after_2_adds_a_proposal_the_second_time_within_one_document():
    trainer = LiBTrainer(LiBParams(alpha=1.0, admit_after=2), lexicon=CheckedLexicon())
    trainer.walk("ab")  # a, b added when first seen; "ab" proposed once: not a unit yet
    assert "ab" not in trainer.lexicon and trainer.proposed == {"ab": 1}
    trainer.walk("ab")  # proposed again in the same document: appended, on probation
    assert "ab" in trainer.lexicon and trainer.probation["ab"] == 10
    assert "ab" not in trainer.proposed
    trainer.end_document()
    trainer.train_document(["cd"])  # "cd" proposed once in this document ...
    trainer.train_document(["cd"])  # ... and once in the next: the count does not carry over
    assert "cd" not in trainer.lexicon and not trainer.proposed
    trainer.train_document(["cd", "xcd"])  # twice within one document (the x adds "xc" once)
    assert "cd" in trainer.lexicon and "xc" not in trainer.lexicon


def test_admit_after_1_is_the_default_and_adds_at_once():
    assert LiBParams().admit_after == 1
    trainer = LiBTrainer(LiBParams(alpha=1.0), lexicon=CheckedLexicon())
    trainer.walk("ab")
    assert "ab" in trainer.lexicon and not trainer.proposed


def test_new_units_off_probation_wait_for_tail_marking():
    params = LiBParams(alpha=1.0, new_on_probation=False)
    trainer = LiBTrainer(params, lexicon=CheckedLexicon())
    trainer.walk("abc")  # a, b, c added when first seen; "ab" and "bc" proposed and appended
    assert {"ab", "bc"} <= set(trainer.lexicon) and not trainer.probation
    trainer.end_document()  # ceil(omega * 5) = 1: only the bottom unit goes on probation
    assert trainer.probation == {"bc": 10}
    assert LiBParams().new_on_probation is True
    with pytest.raises(ValueError, match="new_on_probation"):
        LiBParams(new_on_probation=1)


def test_admit_after_is_deterministic_saved_and_shrinks_the_lexicon(tmp_path):
    docs = sample_texts("en")[:6]
    first = LiBTokenizer.train(docs, admit_after=2, new_on_probation=False, seed=3)
    again = LiBTokenizer.train(docs, admit_after=2, new_on_probation=False, seed=3)
    literal = LiBTokenizer.train(docs, seed=3)
    assert first.units == again.units and first.fingerprint == again.fingerprint
    assert len(first.units) < len(literal.units)
    first.save(str(tmp_path / "lib.json"))
    loaded = LiBTokenizer.load(str(tmp_path / "lib.json"))
    assert loaded.params == first.params and loaded.units == first.units
    assert loaded.params.admit_after == 2 and loaded.params.new_on_probation is False
    for text in docs:
        assert first.decode_bytes(first.encode(text)) == text.encode("utf-8")
    with pytest.raises(ValueError, match="admit_after"):
        LiBParams(admit_after=0)


def test_same_seed_same_documents_same_lexicon():
    docs = sample_texts("ru")[:3]
    first = LiBTokenizer.train(docs, seed=7)
    again = LiBTokenizer.train(docs, seed=7)
    other = LiBTokenizer.train(docs, seed=8)
    assert first.units == again.units and first.fingerprint == again.fingerprint
    assert other.units != first.units


def test_repeated_phrase_forms_multiword_units_and_tokens_per_sentence_fall():
    rng = random.Random(0)
    words = ["red", "green", "blue", "small", "large", "old", "new", "dog", "cat", "bird"]
    docs = []
    for _ in range(120):
        lines = [
            f"{rng.choice(words)} {rng.choice(words)} saw the quick brown fox today\n"
            for _ in range(10)
        ]
        docs.append("".join(lines))
    reports: list[dict] = []
    tok = LiBTokenizer.train(docs, progress=reports.append, progress_every=10)
    phrase = "saw the quick brown fox today\n"
    multiword = [u for u in tok.units if " " in u.strip() and u in phrase]
    assert len(multiword) >= 2, multiword
    assert reports[0]["documents"] == 10 and reports[-1]["documents"] == 120
    assert reports[-1]["tokens_per_sentence"] < reports[0]["tokens_per_sentence"]
    assert reports[-1]["tokens_per_sentence"] < 8  # the sentence has 9 words + newline


def test_every_character_seen_in_training_stays_in_the_lexicon(en_tokenizer):
    seen = set("".join(sample_texts("en")[:12]))
    assert seen <= set(en_tokenizer.units)


def test_vocabulary_cap_is_hard_and_stays_lossless():
    docs = sample_texts("zh")[:6]
    tok = LiBTokenizer.train(docs, vocab_size=600)
    assert tok.vocab_size <= 600
    for text in docs:
        assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(TokenizerError, match="alpha"):
        LiBTokenizer.train(["x"], alpha=2.0)
    with pytest.raises(TokenizerError, match="vocab_size"):
        LiBTokenizer.train(["x"], vocab_size=100)
    # an unknown name or a value of another type (a TypeError's traceback in train-tokenizer)
    with pytest.raises(TokenizerError, match="aplha"):
        LiBTokenizer.train(["x"], aplha=0.3)
    with pytest.raises(TokenizerError, match="delta"):
        LiBTokenizer.train(["x"], delta="x")


def test_without_progress_every_line_is_trained_on():
    """Every 20th line was held back for the progress sample even without progress: a corpus
    whose only "z" is on its 20th line never learned it."""
    lines = ["hello world\n"] * 19 + ["zebra quiz\n"]
    assert "z" in LiBTokenizer.train(["".join(lines)]).units
    assert "z" not in LiBTokenizer.train(["".join(lines)], progress=lambda record: None).units


# -- encoding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_every_sample_document(mixed_tokenizer, lang):
    tok = mixed_tokenizer
    texts = sample_texts(lang)
    for text, ids in zip(texts, tok.encode_batch(texts), strict=True):
        assert ids.dtype == np.uint32
        assert tok.decode_bytes(ids) == text.encode("utf-8")
        assert tok.decode(ids) == text


@pytest.mark.parametrize("lang", LANGS)
def test_fast_encoder_segments_like_the_reference_walk(mixed_tokenizer, lang):
    tok = mixed_tokenizer
    lexicon = Lexicon(tok.units)
    for text in sample_texts(lang)[4:10]:
        text = text[:3000]
        assert tok.segment(text) == segment(lexicon, text, 10**6)
        assert tok.encode(text).tolist() == tok.encoder.ids_with_fallback(tok.segment(text))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_round_trip_any_unicode_text(en_tokenizer, text):
    ids = en_tokenizer.encode(text)
    assert en_tokenizer.decode_bytes(ids) == text.encode("utf-8")


WORDS = ["the ", "function ", "of ", "and ", "return", "Python", " ", "\n", ". ", "data", "é", "字"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(st.sampled_from(WORDS), st.characters(blacklist_categories=("Cs",))),
        min_size=40,
        max_size=300,
    )
)
def test_long_mixed_texts_round_trip_and_segment_like_the_reference(en_tokenizer, pieces):
    text = "".join(pieces)
    ids = en_tokenizer.encode(text)
    assert en_tokenizer.decode_bytes(ids) == text.encode("utf-8")
    assert en_tokenizer.segment(text) == reference_segment(en_tokenizer, text)


# -- the numba encoder against the pure-Python paths ---------------------------------------------------
BENCH_CORPUS = Path("/tmp/tokenmill-bench-corpus/corpus")
BENCH_LANGS = ("en", "de", "ru", "zh", "code")


def assert_encoders_agree(tok: LiBTokenizer, texts: list[str], reference_chars: int) -> None:
    """Numba encoder == regex encoder (ids) on every text; == the reference walk (chunks) on the
    first `reference_chars` characters of each."""
    assert isinstance(tok.encoder, NumbaLiBEncoder)
    regex = RegexLiBEncoder(tok.units, tok.byte_base)
    fast = tok.encode_batch(texts)
    for text, ids in zip(texts, fast, strict=True):
        assert ids.dtype == np.uint32
        assert ids.tolist() == regex.encode(text).tolist()
        assert tok.decode_bytes(ids) == text.encode("utf-8", "surrogatepass")
    for text in texts:
        head = text[:reference_chars]
        assert tok.segment(head) == reference_segment(tok, head) == regex.segment(head)


@pytest.mark.parametrize("lang", LANGS)
def test_numba_encoder_equals_the_python_paths_on_sample_text(mixed_tokenizer, lang):
    assert_encoders_agree(mixed_tokenizer, sample_texts(lang), 4000)


def bench_texts(lang: str, n_bytes: int, skip_bytes: int = 0) -> list[str]:
    texts, size = [], 0
    with (BENCH_CORPUS / f"{lang}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            size += len(text.encode("utf-8"))
            if size > skip_bytes:
                texts.append(text)
            if size >= skip_bytes + n_bytes:
                break
    return texts


@pytest.mark.skipif(not BENCH_CORPUS.is_dir(), reason="bench corpus not built (make bench-corpus)")
@pytest.mark.parametrize("lang", BENCH_LANGS)
def test_numba_encoder_equals_the_python_paths_on_bench_text(lang):
    """A lexicon trained on the language itself (many races), then unseen text of it."""
    tok = LiBTokenizer.train(bench_texts(lang, 60_000), sample_sentences=0)
    assert_encoders_agree(tok, bench_texts(lang, 150_000, skip_bytes=60_000), 2000)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="ab c", min_size=1, max_size=5), min_size=1, max_size=25, unique=True
    ),
    st.text(alphabet="ab cd\U0001f600\ud800", max_size=60),
)
def test_numba_encoder_equals_the_reference_on_any_ordered_lexicon(units, text):
    """Small alphabets make races, ties on chunk counts and unknown characters frequent."""
    tok = LiBTokenizer.from_lexicon(units)
    assert tok.segment(text) == segment(Lexicon(units), text, 10**6)
    ids = tok.encode(text)
    assert ids.tolist() == RegexLiBEncoder(units, tok.byte_base).encode(text).tolist()
    assert tok.decode_bytes(ids) == text.encode("utf-8", "surrogatepass")


def test_encode_batch_equals_one_by_one_with_empty_texts():
    tok = LiBTokenizer.from_lexicon(["ab", "bc", "a", "b", "c"])
    texts = ["", "abc", "", "x\u00e9abc", "bcab", ""]
    batch = tok.encode_batch(texts)
    assert [ids.tolist() for ids in batch] == [tok.encode(t).tolist() for t in texts]
    assert [tok.decode(ids) for ids in batch] == texts
    assert tok.encode_batch([]) == []


def test_unknown_characters_fall_back_to_bytes():
    tok = LiBTokenizer.from_lexicon(["a", "b", "ab"])
    ids = tok.encode("ab€a").tolist()
    assert ids[0] == 2 and ids[-1] == 0
    assert ids[1:4] == [tok.byte_base + b for b in "€".encode()]


# -- protocol --------------------------------------------------------------------------------------
def test_ids_bytes_and_eos_follow_the_protocol(en_tokenizer):
    tok = en_tokenizer
    n = len(tok.units)
    assert tok.vocab_size == n + 257 and tok.eos_id == n + 256
    assert tok.token_bytes(tok.eos_id) == EOS.encode()
    described = tok.describe()  # (what the manifest and run summary record for the loader)
    assert (described["eos_token"], described["eos_id"]) == (EOS, tok.eos_id)
    assert [tok.token_bytes(n + b) for b in (0, 65, 255)] == [b"\x00", b"A", b"\xff"]
    assert tok.token_bytes(0) == tok.units[0].encode()
    assert tok.lossless and tok.kind == "lib"
    flat, offsets = tok.encode_batch_flat(["hello world", "", "x"])
    assert offsets.tolist()[0] == 0 and offsets.tolist()[-1] == len(flat)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_load_round_trip_keeps_units_and_fingerprint(en_tokenizer, tmp_path, where):
    url = str(tmp_path / "lib.json") if where == "local" else "memory://lib-test/tok.json"
    en_tokenizer.save(url)
    loaded = LiBTokenizer.load(url)
    assert loaded.units == en_tokenizer.units
    assert loaded.params == en_tokenizer.params
    assert loaded.fingerprint == en_tokenizer.fingerprint
    via_registry = load_tokenizer(f"lib:{url}")
    assert isinstance(via_registry, LiBTokenizer)
    text = sample_texts("en")[20]
    assert via_registry.encode(text).tolist() == en_tokenizer.encode(text).tolist()


def test_fingerprint_depends_on_rank_order():
    assert (
        LiBTokenizer.from_lexicon(["ab", "a", "b"]).fingerprint
        == LiBTokenizer.from_lexicon(["ab", "a", "b"]).fingerprint
    )
    assert (
        LiBTokenizer.from_lexicon(["ab", "a", "b"]).fingerprint
        != LiBTokenizer.from_lexicon(["a", "ab", "b"]).fingerprint
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 99}, "version"),
        ({"format": "other"}, "format"),
        ({"units": "abc"}, "units"),
        ({"units": ["a", "a"]}, "twice"),
        ({"units": ["a", ""]}, "non-empty"),
        ({"params": {"alpha": "high"}}, "params"),
        ({"params": {"beta": 1}}, "params"),
    ],
)
def test_malformed_files_are_rejected_with_the_problem_named(tmp_path, change, message):
    path = tmp_path / "lib.json"
    LiBTokenizer.from_lexicon(["a", "b"]).save(str(path))
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(TokenizerError, match=message):
        LiBTokenizer.load(str(path))


def test_non_json_file_is_rejected(tmp_path):
    path = tmp_path / "lib.json"
    path.write_bytes(b"\x80not json")
    with pytest.raises(TokenizerError, match="JSON"):
        LiBTokenizer.load(str(path))
