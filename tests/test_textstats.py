"""Word counting and continued words, as reports state them (pipeline/tokenize/textstats.py)."""

from __future__ import annotations

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
