"""The compiled JSON-lines pass (pipeline/tokenize/inputs/jsonscan.py) and the texts it makes
(tokenizers_impl/texts.py Utf8Texts) give exactly what the per-line reader and Python strings
give: the same documents, ids, sources, langs, rejects and batch cuts on hostile lines; the same
ids from the encoder, the same unassigned-character routing and text statistics from bytes."""

from __future__ import annotations

import dataclasses
import json
import random
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tokenize.inputs import ReadOptions, jsonscan, plan_units, read_unit
from pipeline.tokenize.inputs import jsonl as jsonl_format
from pipeline.tokenize.inputs import lines as lines_module
from pipeline.tokenize.textstats import batch_stats
from tests.test_hotpath import ALPHABET, HOSTILE
from tokenizers_impl import load_tokenizer
from tokenizers_impl.texts import Utf8Texts, joined

# what the compiled pass decides on its own: every escape, UTF-8 form, number, literal, key and
# layout it takes, and the near misses it must leave to the per-line reader
SCAN_CASES = [
    b'{"text": "plain"}',
    b'  {  "text"  :  "spaced" , "id" : "a" }  ',
    b'\t{"text":"tabs"}\t\r',
    b'{"text": "esc \\" \\\\ \\/ \\b \\f \\n \\r \\t end"}',
    b'{"text": "\\u00e9\\u20AC\\u4e2d\\uD83D\\uDE00 \\u0041"}',
    b'{"text": "\\u00"}',
    b'{"text": "\\uZZZZ"}',
    b'{"text": "\\udc00 low first"}',
    b'{"text": "\\ud83d no low"}',
    b'{"text": "\\ud83d\\u0041 not a low"}',
    b'{"text": "\\x41 not an escape"}',
    b'{"text": "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad"}',
    b'{"text": "overlong \xc0\x80"}',
    b'{"text": "overlong3 \xe0\x80\xaf"}',
    b'{"text": "surrogate \xed\xb0\x80"}',
    b'{"text": "too high \xf4\x90\x80\x80"}',
    b'{"text": "f5 \xf5\x80\x80\x80"}',
    b'{"text": "cut \xe2\x82"}',
    b'{"text": "lone continuation \x80"}',
    b'{"text": "del \x7f ok"}',
    b'{"text": "x", "id": "i1", "source": "s1", "lang": "de"}',
    b'{"lang": "fr", "source": "s2", "id": "i2", "text": "fields in any order"}',
    b'{"text": "x", "id": null, "source": null, "lang": null}',
    b'{"text": "x", "id": true}',
    b'{"text": "x", "id": 12}',
    b'{"text": "x", "id": -1.5e3}',
    b'{"text": "x", "source": 5, "lang": false}',
    b'{"text": "x", "source": "", "lang": ""}',
    b'{"text": "x", "id": "\\u00e9\\n"}',
    b'{"text": "x", "id": "i", "id": "j"}',
    b'{"text": "x", "source": 1, "source": "again"}',
    b'{"t\\u0065xt": "escaped key"}',
    b'{"text": "x", "t\\u0065xt": "escaped duplicate"}',
    b'{"\xc3\xa9": 1, "text": "non-ASCII key"}',
    b'{"\xc3": 1, "text": "bad key"}',
    b'{"other": "x"}',
    b"{}",
    b"{ }",
    b'{"text": "x", "n": 0, "m": -0.0, "k": 1e5, "j": 1E+5, "i": 2.5e-3, "h": -12}',
    b'{"text": "x", "n": 01}',
    b'{"text": "x", "n": 1.}',
    b'{"text": "x", "n": .5}',
    b'{"text": "x", "n": -}',
    b'{"text": "x", "n": 1e}',
    b'{"text": "x", "n": +1}',
    b'{"text": "x", "n": ' + b"9" * 40 + b"}",
    b'{"text": "x", "n": ' + b"9" * 32 + b"}",
    b'{"text": "x", "n": Infinity}',
    b'{"text": "x", "b": tru}',
    b'{"text": "x", "b": nulll}',
    b'{"text": "x", "b": [1]}',
    b'{"text": "x", "b": {"c": 1}}',
    b'{"text": "x"}{"text": "y"}',
    b'{"text": "x"',
    b'{"text" "x"}',
    b'{"text": "x" "id": "y"}',
    b'{text: "x"}',
    b"{'text': 'x'}",
    b'{"text": "x"}\x0b',
    b'\x0c{"text": "x"}',
    b'\xef\xbb\xbf{"text": "BOM here is not at offset 0"}',
    b'{"text": "unterminated',
    b'{"text": "x",\r"id":\r"cr"}',
    b'{"text": "' + "\u00e9".encode() * 700 + b'"}',
    b'{"text": "' + b"a\\n" * 400 + b'"}',
]


def _read_all(tmp_path, monkeypatch, scan: bool) -> list[dict]:
    """Every batch of the JSONL files under tmp_path, through the compiled pass or the per-line
    reader, for read blocks of several sizes and batches cut by documents, bytes and rejects."""
    monkeypatch.setattr(jsonl_format, "_SCAN", jsonscan.__name__ if scan else "not loaded")
    small = ReadOptions(unit_bytes=20000, batch_docs=5, batch_bytes=300, max_doc_bytes=900)
    out = []
    for block, opts in (
        (1 << 20, ReadOptions()),
        (1 << 20, small),
        (333, dataclasses.replace(small, max_record_bytes=700)),
        (4096, dataclasses.replace(small, unit_bytes=1 << 20, batch_bytes=4000)),
        (1 << 20, ReadOptions(id_field="key", source_field="src", lang_field="language")),
    ):
        monkeypatch.setattr(lines_module, "READ_BLOCK", block)
        for unit in plan_units([str(tmp_path / "*.jsonl")], opts):
            for batch in read_unit(unit, opts, {}):
                seen = dataclasses.asdict(dataclasses.replace(batch, texts=[]))
                seen["texts"] = list(batch.texts)
                out.append(seen)
    return out


def _write_corpus(tmp_path, lines: list[bytes]) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\r\n".join(lines))
    (tmp_path / "c.jsonl").write_bytes(b"\n".join(lines[::-1]) + b"\n\n   \n")


def test_compiled_pass_reads_what_the_per_line_reader_reads(tmp_path, monkeypatch):
    rng = random.Random(7)
    cases = SCAN_CASES + HOSTILE
    lines = list(cases)
    for _ in range(2500):
        line = bytearray(rng.choice(cases))
        for _ in range(rng.choice([0, 0, 1, 2])):  # random bytes changed
            if line:
                line[rng.randrange(len(line))] = rng.choice(b'"\\{}:,[] \t\r\x00\x80\xc3\xe2u0nt')
        lines.append(bytes(line).replace(b"\n", b" "))
    lines += [json.dumps({"text": t, "id": str(i)}).encode() for i, t in enumerate(ALPHABET)]
    lines += [
        json.dumps({"text": t, "lang": "xx"}, ensure_ascii=False).encode("utf-8", "surrogatepass")
        for t in ALPHABET
    ]
    _write_corpus(tmp_path, lines)
    fast = _read_all(tmp_path, monkeypatch, scan=True)
    assert fast == _read_all(tmp_path, monkeypatch, scan=False)
    assert sum(len(b["texts"]) for b in fast) > 2000 and sum(len(b["rejects"]) for b in fast) > 2000


def _documents(draw_text):
    fields = st.fixed_dictionaries(
        {"text": draw_text},
        optional={
            "id": st.one_of(st.text(max_size=8), st.none(), st.integers(-5, 5)),
            "source": st.one_of(st.text(max_size=8), st.none(), st.floats(allow_nan=False)),
            "lang": st.one_of(st.sampled_from(["en", "de", ""]), st.booleans()),
            "meta": st.one_of(st.integers(), st.lists(st.integers(), max_size=2)),
        },
    )
    return st.lists(st.tuples(fields, st.booleans(), st.integers(0, 2)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    _documents(st.lists(st.sampled_from([*ALPHABET, '"', "\\", "/", "\b", "\ud800"])).map("".join))
)
def test_compiled_pass_on_generated_records(tmp_path_factory, docs):
    """json.dumps of generated records (escaped or raw UTF-8, compact or spaced), read both
    ways: the same batches."""
    tmp_path = tmp_path_factory.mktemp("gen")
    lines = []
    for record, ascii_only, spacing in docs:
        sep = [(",", ":"), (", ", ": "), (" , ", " : ")][spacing]
        text = json.dumps(record, ensure_ascii=ascii_only, separators=sep)
        lines.append(text.encode("utf-8", "surrogatepass"))
    _write_corpus(tmp_path, lines)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _read_all(tmp_path, monkeypatch, scan=True) == _read_all(
            tmp_path, monkeypatch, scan=False
        )


def test_scan_rows_name_the_fields():
    keys = jsonscan.field_keys("text", "id", "source", "lang")
    data = b'{"text": "a\\u00e9", "lang": "de"}\n{"id": 1, "text": "b"}\n{"text": "c", "id": "k"}\n'
    rows, texts, misc = jsonscan.scan_run(
        np.frombuffer(data, np.uint8), 0, len(data) - 1, *keys, 1 << 20, jsonscan.TABLES
    )
    assert rows[:, jsonscan.STATUS].tolist() == [0, jsonscan.SLOW, 0]
    assert texts.tobytes() == "aé".encode() + b"c"
    assert rows[0, jsonscan.ID] == -1 and rows[0, jsonscan.SOURCE] == -1
    lang = misc[rows[0, jsonscan.LANG] : rows[0, jsonscan.LANG_END]].tobytes()
    doc_id = misc[rows[2, jsonscan.ID] : rows[2, jsonscan.ID_END]].tobytes()
    assert (lang, doc_id) == (b"de", b"k")
    assert [data[s:e] for s, e in rows[:, :2].tolist()] == data.split(b"\n")[:3]


def test_word_steps_end_where_the_buffer_ends():
    """The pass reads and copies 8 plain bytes (and a character past ASCII, 4 bytes) a step: at
    every length of text, every alignment, and with the line at the very end of an exactly sized
    buffer, what it copies is the string json reads, and no byte of a string is left out."""
    keys = jsonscan.field_keys("text", "id", "source", "lang")
    pieces = ["a", "é", "中", "😀", '"', "\\", "\n", "/"]
    rng = random.Random(3)
    for length in range(40):
        for lead in range(9):
            text = "".join(rng.choice(pieces) if rng.random() < 0.3 else "x" for _ in range(length))
            text = text or "z"
            for ascii_only in (True, False):
                line = " " * lead + json.dumps({"text": text, "id": "k"}, ensure_ascii=ascii_only)
                data = line.encode() + b"\n"
                buf = np.frombuffer(data, np.uint8)  # (its own, exactly sized buffer)
                rows, texts, misc = jsonscan.scan_run(
                    buf, 0, len(data) - 1, *keys, 1 << 20, jsonscan.TABLES
                )
                assert rows[:, jsonscan.STATUS].tolist() == [0], line
                assert texts.tobytes().decode() == text, line
                assert misc.tobytes() == b"k"


def test_utf8_texts_behave_as_a_list_of_str():
    texts = Utf8Texts.of(["a", "é中", ""])
    texts.append("😀x")
    more = Utf8Texts()
    more.extend_utf8(np.frombuffer(b"zzyy", np.uint8), np.array([0, 2, 4]))
    both = joined([texts, more])
    assert isinstance(both, Utf8Texts)
    assert list(both) == ["a", "é中", "", "😀x", "zz", "yy"] == both
    assert both[1] == "é中" and both[-1] == "yy" and both[1:3] == ["é中", ""]
    data, offsets = both.utf8()
    assert len(data) % 8 == 0 and offsets.tolist() == [0, 1, 6, 6, 11, 13, 15]
    assert joined([["a"], texts]) == ["a", "a", "é中", "", "😀x"]
    with pytest.raises(IndexError):
        both[6]


def test_encoders_guard_and_statistics_take_utf8_texts(bpe_path, sample_texts):
    """gigatoken reads the bytes as they are; the guard finds the same texts with unassigned
    characters (in small and big batches); the statistics are those of the strings."""
    from tokenizers_impl.encoders.unassigned import KERNEL_UNITS, risky_texts

    tok = load_tokenizer(f"bpe:{bpe_path}")
    assert tok.takes_utf8_texts == (tok.describe().get("encoder", "").startswith("gigatoken"))
    texts = [*sample_texts[:40], "\u088f's new", "x \U0001faf9 y", "ok", "é" * 9000]
    as_bytes = Utf8Texts.of(texts)
    flat, offsets = tok.encode_batch_flat(as_bytes if tok.takes_utf8_texts else list(as_bytes))
    want_flat, want_offsets = tok.encode_batch_flat(texts)
    assert np.array_equal(flat, want_flat) and np.array_equal(offsets, want_offsets)
    assert sum(map(len, texts)) >= KERNEL_UNITS
    assert risky_texts(as_bytes) == risky_texts(texts) == [40, 41]
    assert risky_texts(Utf8Texts.of(texts[38:42])) == risky_texts(texts[38:42]) == [2, 3]
    lengths = tok.token_byte_lengths()
    n_bytes = np.array([len(t.encode()) for t in texts])
    for kernel in (True, False):
        want = batch_stats(texts, flat, offsets, lengths, want_ends=True, kernel=kernel)
        got = batch_stats(as_bytes, flat, offsets, lengths, want_ends=True, n_bytes=n_bytes)
        for field in dataclasses.fields(want):
            assert np.array_equal(getattr(want, field.name), getattr(got, field.name)), field


def test_units_through_the_compiled_pass_equal_the_per_line_reader(tmp_path, bpe_path, monkeypatch):
    """A unit of KERNELS_FROM_BYTES or more loads the compiled pass; its shard, rejects, unigram
    counts and ledger counts are those of the per-line reader's."""
    from pipeline.output.storage import Output
    from pipeline.tokenize.unit import KERNELS_FROM_BYTES, UnitTask, process_unit
    from tests.helpers import SAMPLE_DIR

    sample = b"".join(p.read_bytes() for p in sorted(SAMPLE_DIR.glob("*.jsonl")))
    bad = b"\n".join(SCAN_CASES) + b"\n"
    data = (sample + bad) * (KERNELS_FROM_BYTES // len(sample) + 1)
    (tmp_path / "in.jsonl").write_bytes(data)
    tok = load_tokenizer(f"bpe:{bpe_path}")
    opts = ReadOptions()
    task = UnitTask(opts, "0" * 16, False, True, {}, None, 0.01)
    results = []
    for scan in (True, False):
        monkeypatch.setattr(jsonl_format, "_SCAN", jsonscan.__name__ if scan else "not loaded")
        (unit,) = plan_units([str(tmp_path / "in.jsonl")], opts)
        entry = process_unit(unit, tok, task, Output(str(tmp_path / f"out-{scan}"))).entry
        fields = ("shard_checksum", "rejects_checksum", "unigrams_checksum", "documents")
        results.append([getattr(entry, f) for f in (*fields, "rejected", "chars", "words")])
    assert jsonscan.__name__ in sys.modules
    assert results[0] == results[1] and results[0][3] > 300 and results[0][4] > 20


def test_many_short_lines_in_bounded_memory(tmp_path, monkeypatch):
    """The compiled pass takes at most MAX_LINES lines a call: more lines than that in one read
    block (short records, slow ones among them, and a block of blank lines) give what the per-line
    reader gives, and a block of blank lines no longer costs 160 bytes a line (88 bytes of table
    and a Python int per line: 160 MB for a MiB of them)."""
    import tracemalloc

    short = [b'{"text":"a%d"}' % i if i % 7 else b'{"text":"b","id":%d}' % i for i in range(18000)]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(short) + b"\n")
    assert len(short) > jsonscan.MAX_LINES
    fast = _read_all(tmp_path, monkeypatch, scan=True)
    assert fast == _read_all(tmp_path, monkeypatch, scan=False)
    assert sum(len(b["texts"]) for b in fast) == 5 * len(short)
    (tmp_path / "a.jsonl").write_bytes(b"\n" * (1 << 18))
    monkeypatch.setattr(jsonl_format, "_SCAN", jsonscan.__name__)
    monkeypatch.setattr(lines_module, "READ_BLOCK", 1 << 20)
    (unit,) = plan_units([str(tmp_path / "a.jsonl")], ReadOptions())
    tracemalloc.start()
    try:
        blank = sum(b.blank for b in read_unit(unit, ReadOptions(), {}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert blank == 1 << 18 and peak < 8 << 20


def test_odd_read_options_read_as_the_per_line_reader_reads(tmp_path, monkeypatch):
    """A max_doc_bytes beyond the compiled pass's integers, and a field name that is not valid
    Unicode (no line spells it: the per-line reader reads the unit)."""
    (tmp_path / "a.jsonl").write_bytes(b'{"text":"a"}\n{"text":"b","\\udcff":"x"}\n')
    monkeypatch.setattr(jsonl_format, "_SCAN", jsonscan.__name__)
    (unit,) = plan_units([str(tmp_path / "a.jsonl")], ReadOptions())
    for opts, texts, sources in (
        (ReadOptions(max_doc_bytes=2**64 + 5), ["a", "b"], ["a.jsonl", "a.jsonl"]),
        (ReadOptions(source_field="\udcff"), ["a", "b"], ["a.jsonl", "x"]),
    ):
        batches = list(read_unit(unit, opts, {}))
        assert [t for b in batches for t in b.texts] == texts
        assert [s for b in batches for s in b.sources] == sources
        assert not any(b.rejects for b in batches)
