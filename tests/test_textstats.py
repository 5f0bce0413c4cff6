"""Word counting and continued words, as reports state them (pipeline/tokenize/textstats.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.tokenize.textstats import batch_stats, count_words
from tokenizers_impl import load_tokenizer


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, world! it's 42", 4),
        ("pi is 3.14, 1,000 x.y", 6),
        ("你好，世界。", 4),  # one word per ideograph, punctuation is no word
        ("it’s fine", 2),
        ("Привет, мир", 2),
        ("abc中文def", 4),
        ("Grüße aus Köln", 3),
        ("  \n\t ", 0),
        ("😀 ok", 1),
        ("snake_case and CamelCase", 3),
        # a right quote joins word characters of any script, and only them (it was ASCII before
        # it and anything non-ASCII after it)
        ("Привет’s Привет's", 2),
        ("caf\u00e9’s", 1),
        ("said it’\u2014 ok", 3),
        ("a’\u4e2d", 2),
        # variation selectors and tags are no word characters: an emoji's U+FE0F was a word
        ("I \u2764\ufe0f it", 2),
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f flag", 1),
        ("\u845b\U000e0100 x", 2),
    ],
)
def test_word_counts_follow_the_stated_rule(text, words):
    assert count_words(text) == words


def test_continued_words_count_words_with_a_token_boundary_inside(bpe_path, sample_texts):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    texts = sample_texts[::7]
    flat, offsets = tok.encode_batch_flat(texts)
    stats = batch_stats(texts, flat, offsets, tok.token_byte_lengths(), want_ends=True)
    from pipeline.tokenize.textstats import word_spans_bytes

    for i, text in enumerate(texts):
        ids = flat[offsets[i] : offsets[i + 1]]
        ends = np.cumsum([len(tok.token_bytes(int(t))) for t in ids])
        assert np.array_equal(stats.token_ends[offsets[i] : offsets[i + 1]], ends)
        starts, stops = word_spans_bytes(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))
        expected = sum(
            bool(((ends > a) & (ends < b)).any()) for a, b in zip(starts, stops, strict=True)
        )
        assert stats.n_continued_words[i] == expected
        assert stats.n_words[i] == count_words(text) == len(starts)
        assert stats.n_bytes[i] == len(text.encode("utf-8")) and stats.n_chars[i] == len(text)


def test_continued_words_are_null_when_token_bytes_do_not_match_the_text():
    texts = ["ab cd"]
    flat = np.array([0, 1], dtype=np.uint32)  # a fake encoding covering 3 of 5 bytes
    stats = batch_stats(texts, flat, np.array([0, 2]), np.array([1, 2], dtype=np.int32))
    assert stats.n_continued_words.tolist() == [-1]
    assert stats.n_words.tolist() == [2]


def test_a_lossy_tokenizer_leaves_continued_words_unknown(tmp_path):
    """A tokenizer whose tokens are not the text's bytes (here: spaces dropped, unknown
    characters as `[UNK]`) got continued-word counts wherever its token bytes happened to add up
    to the text's, from meaningless boundaries; they are null for every document now, and the
    word counts stay."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from pipeline.tokenize.engine import run_job
    from tests.helpers import job_config, shard_rows

    hf = Tokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["the cat sat on the mat", "a dog ate the hat", "cats and dogs"] * 50
    hf.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    path = tmp_path / "lossy.json"
    hf.save(str(path))
    # 4 spaces dropped, one 'z' as the 5 bytes of [UNK]: the tokens' bytes add up to the text's
    texts = ["the cat sat", "the cat sat on z"]
    tok = load_tokenizer(f"bpe:{path}")
    assert not tok.lossless
    ids = tok.encode_batch([texts[1]])[0]
    assert int(tok.token_byte_lengths()[ids].sum()) == len(texts[1])
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    run_job(job_config(tmp_path / "in.jsonl", tmp_path / "out", f"bpe:{path}"))
    rows = sorted(shard_rows(str(tmp_path / "out")), key=lambda r: r["n_bytes"])
    assert [r["n_words"] for r in rows] == [3, 5]
    assert [r["n_continued_words"] for r in rows] == [None, None]
