"""The unit's fast paths give exactly what their reference code gives: the compiled word statistics
and unigram counts (pipeline/tokenize/textkernels.py) against the numpy code, and JSON lines read
with orjson against the standard library's json, on multilingual and hostile input."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.tokenize.inputs import ReadOptions, plan_units, read_unit
from pipeline.tokenize.inputs import jsonl as jsonl_format
from pipeline.tokenize.inputs import lines as lines_module
from pipeline.tokenize.textstats import batch_stats
from pipeline.tokenize.unigrams import UNIGRAMS_SCHEMA, UnigramCounter
from tests.helpers import REPO, SAMPLE_DIR
from tokenizers_impl import load_tokenizer
from tokenizers_impl.texts import Utf8Texts

ALPHABET = [
    *"ab1 9.,'’\n\t_-",
    "中",
    "é",
    "😀",
    "\u3000",
    "ー",
    "’s",
    "a’",
    "1,",
    ".5",
    "ร",
    "\x00",
]
ALPHABET += ["\u00d7", "\U00020000", "\ufeff", "Ж", "\u180e", "\u00a0", "\u2019"]
ALPHABET += ["\ufe0f", "\u2014", "\U000e0067", "\U000e0100", "\u00e9"]


def _texts(sample_texts: list[str]) -> list[str]:
    rng = random.Random(11)
    texts = list(sample_texts)
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(800)]
    rng.shuffle(texts)
    return texts


@pytest.mark.parametrize("want_ends", [False, True])
def test_compiled_word_statistics_equal_the_numpy_reference(bpe_path, sample_texts, want_ends):
    tok = load_tokenizer(f"bpe:{bpe_path}")
    lengths = tok.token_byte_lengths()
    texts = _texts(sample_texts)
    for lo in range(0, len(texts), 97):
        batch = texts[lo : lo + 97]
        flat, offsets = tok.encode_batch_flat(batch)
        # the tokenizer's own byte lengths, and wrong ones (no document exact, boundaries spill)
        for table in (lengths, np.ones_like(lengths), lengths * 2):
            ref = batch_stats(batch, flat, offsets, table, want_ends=want_ends, kernel=False)
            got = batch_stats(batch, flat, offsets, table, want_ends=want_ends, kernel=True)
            for f in dataclasses.fields(ref):
                a, b = getattr(ref, f.name), getattr(got, f.name)
                assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), (
                    f.name
                )


MULTILINGUAL = [
    *ALPHABET,
    *["Привет", "straße", "日本語", "x'y", "'", "a’b", "中’a", "3.14", "1,000", "ки’а", "’’"],
    *["Ж'ж", "𝔘", "\u2028", "ا", "한", "\U0001f600\u200d", "\x7f", "é'", "'中", "٣.٤", "a'’b"],
]


def _token_lengths(rng: random.Random, n: int, mode: str) -> list[int]:
    """Random token byte lengths for a text of n bytes: cut anywhere (inside characters too),
    sometimes with an empty token, and in mode short or long not adding up to the text (long:
    the last boundaries land in the documents after it)."""
    cuts = sorted(rng.sample(range(1, n), rng.randint(0, n - 1))) if n > 1 else []
    lens = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)] if n else []
    if rng.random() < 0.2:
        lens.insert(rng.randint(0, len(lens)), 0)
    if mode == "short" and lens:
        lens.pop()
    elif mode == "long":
        lens.append(rng.randint(1, 12))
    return lens


@pytest.mark.parametrize("seed", range(4))
def test_compiled_word_statistics_with_random_token_boundaries(seed):
    rng = random.Random(seed)
    table = np.arange(1024, dtype=np.int32)  # token id = its byte length
    for _ in range(150):
        texts = [
            "".join(rng.choice(MULTILINGUAL) for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(1, 30))
        ]
        modes = rng.choice([["exact"], ["exact", "short"], ["exact", "long"], ["short", "long"]])
        lens = [_token_lengths(rng, len(t.encode()), rng.choice(modes)) for t in texts]
        flat = np.array([n for doc in lens for n in doc], dtype=np.uint32)
        offsets = np.concatenate(([0], np.cumsum([len(doc) for doc in lens]))).astype(np.int64)
        for want_ends in (False, True):
            ref = batch_stats(texts, flat, offsets, table, want_ends=want_ends, kernel=False)
            got = batch_stats(texts, flat, offsets, table, want_ends=want_ends, kernel=True)
            for f in dataclasses.fields(ref):
                a, b = getattr(ref, f.name), getattr(got, f.name)
                assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), (
                    f.name,
                    texts,
                    lens,
                )


# long word runs and plain ASCII blocks: the compiled statistics go 64 bytes a step there
BLOCKY = [*"abcdefghijklmnopqrstuvwxyz", " ", "\n", "word" * 20, " " * 70, "a'b", "é", "3.1", ","]


@pytest.mark.parametrize("seed", range(3))
def test_compiled_word_statistics_in_64_byte_steps(seed):
    """Documents of thousands of bytes, mostly letters and spaces (whole 64-byte blocks of one
    word run, of none, and runs across block edges), cut by long and short tokens (a run with a
    token end inside it from an earlier block, or none at all, when it ends in a later one)."""
    rng = random.Random(200 + seed)
    table = np.arange(4096, dtype=np.int32)  # token id = its byte length
    for _ in range(40):
        weights = [rng.random() ** 3 for _ in BLOCKY]
        texts = [
            "".join(rng.choices(BLOCKY, weights, k=rng.randint(0, 400)))
            for _ in range(rng.randint(1, 8))
        ]
        longest = rng.choice([3, 40, 300, 3000])
        lens = []
        for text in texts:
            n, doc = len(text.encode()), []
            while sum(doc) < n:
                doc.append(min(rng.randint(1, longest), n - sum(doc)))
            lens.append(doc)
        _kernel_matches_numpy(texts, lens, table)


def _unigram_bytes(counter: UnigramCounter) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, UNIGRAMS_SCHEMA) as writer:
        writer.write_table(counter.table())
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "pool",
    [["a", None, "", "b"], [None, "", *(f"s{i}" for i in range(40))]],
    ids=["dense", "sparse"],
)
def test_compiled_unigram_counts_equal_the_numpy_reference(monkeypatch, pool):
    """Dense rows (the first 16 groups) and sparse keys (a pack's files, each its own source:
    counted by a pass with a vocabulary-sized scratch, not a sort), byte for byte."""
    from pipeline.tokenize import unigrams

    outputs = []
    for kernel in (False, True):  # numpy even when the kernel module is loaded, then the kernel
        monkeypatch.setattr(unigrams, "kernels_wanted", lambda size, threshold, k=kernel: k)
        rng, pick = np.random.default_rng(5), random.Random(5)
        counter = UnigramCounter(300)
        for _ in range(25):
            lens = rng.integers(0, 30, int(rng.integers(1, 30)))
            offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
            flat = rng.integers(0, 300, int(offsets[-1])).astype(np.uint32)
            sources = [pick.choice(pool) for _ in lens]
            langs = [pick.choice(["en", None, ""]) for _ in lens]
            counter.add(flat, offsets, sources, langs)
        outputs.append(_unigram_bytes(counter))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("dtype", [np.uint32, np.int64])
def test_an_id_outside_the_vocabulary_is_refused_not_counted_elsewhere(monkeypatch, kernel, dtype):
    """A token id past the vocabulary (or negative) is an error on both paths: the compiled
    count checks each id as it counts (no pass of its own for the largest), so neither a too
    large id nor a negative one (numba wraps negative indices) lands in another cell."""
    from pipeline.tokenize import unigrams

    monkeypatch.setattr(unigrams, "kernels_wanted", lambda size, threshold, k=kernel: k)
    for bad in (50, 70) + ((-1,) if dtype is np.int64 else ()):
        counter = UnigramCounter(50)
        flat = np.array([1, 2, 3, bad, 4], dtype=dtype)
        with pytest.raises((ValueError, IndexError)):
            counter.add(flat, np.array([0, 2, 5]), ["s", "s"], [None, None])


def test_a_batch_of_dense_groups_after_sparse_ones_is_counted(monkeypatch):
    """With more than 16 groups seen, a later batch of documents of two of the first 16 groups
    (numpy path: a small job before the kernels load) crashed the unit: `operands could not be
    broadcast together with shapes (16,32000) (20,32000)`."""
    from pipeline.tokenize import unigrams

    monkeypatch.setattr(unigrams, "kernels_wanted", lambda size, threshold: False)
    counter = UnigramCounter(50)
    flat = np.arange(20, dtype=np.uint32)
    counter.add(flat, np.arange(21), [f"s{i}" for i in range(20)], [None] * 20)
    counter.add(flat, np.arange(21), [f"s{i % 2}" for i in range(20)], [None] * 20)
    counts = counter.groups
    assert counts[("s0", None)].sum() == 11 and counts[("s1", None)].sum() == 11
    assert counts[("s19", None)].sum() == 1


def test_unigram_counts_of_many_groups_stay_bounded_and_exact():
    """A source per document (or a pack of files, each its own source): groups past the first 16
    are counted sparsely, so memory does not grow by vocab_size * 8 bytes per group, and the
    counts are exactly those of a plain count."""
    from collections import Counter

    from pipeline.tokenize import unigrams

    rng = np.random.default_rng(11)
    vocab = 32000
    counter, want = UnigramCounter(vocab), Counter()
    for batch in range(40):
        lens = rng.integers(0, 50, 60)
        offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        flat = rng.integers(0, vocab, int(offsets[-1])).astype(np.uint32)
        sources = [f"doc-{batch}-{i % 30}" if i % 3 else "common" for i in range(len(lens))]
        langs = ["en" if i % 2 else None for i in range(len(lens))]
        counter.add(flat, offsets, sources, langs)
        for i in range(len(lens)):
            for token in flat[offsets[i] : offsets[i + 1]].tolist():
                want[(sources[i], langs[i], token)] += 1
        if batch == 20:
            counter._merge()  # (a merge half way: later parts add to it)
    assert counter._counts.shape[0] <= unigrams.DENSE_GROUPS
    table = counter.table().to_pylist()
    got = Counter({(r["source"], r["lang"], r["token_id"]): r["count"] for r in table})
    assert got == want and len(table) == len(want)
    keys = [(r["source"] or "", r["lang"] or "") for r in table]
    assert keys == sorted(keys)  # groups in (source, lang) order, as before
    ids = counter.groups[("common", "en")]
    assert ids.sum() == sum(c for (s, g, _), c in want.items() if (s, g) == ("common", "en"))


HOSTILE = [
    b'{"text": "hello", "id": 7}',
    b'{"text": "x", "id": 123456789012345678901234567890}',
    b'{"text": 123456789012345678901234567890}',
    b'{"text": 1.5, "id": "f"}',
    b'{"text": NaN}',
    b'{"text": "x", "id": 1e400}',
    b"123456789012345678901234567890",
    b"[1, 2]",
    b'"just a string"',
    b'{"text": ""}',
    b'{"text": "x", "id": ""}',
    b'{"text": "\\ud800 lone"}',
    b'{"text": "\\ud83d\\ude00 pair"}',
    b'{"text": "\xed\xa0\x80"}',
    b'{"text": "bad \xff byte"}',
    b'{"text": "a", "text": "dup"}',
    b'{"text": "tab\there"}',
    b'{"text": "x"} trailing',
    b'{"text": "x",}',
    b'{"text": "x", "meta": ' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"text": "x", "meta": ' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"text": "x", "meta": ' + b"[" * 1100 + b"]" * 1100 + b"}",
    b'{"text": "x", "meta": {"a": [1, {"b": 2}]}, "source": 3, "lang": "de"}',
    b'{"text": "caf\xc3\xa9 \xe4\xb8\xad", "id": -0, "lang": 1.0}',
    b'{"text": "\\u0000"}',
    b"   ",
    b"\x0b\x0c",
    b'{"text": "crlf"}\r',
    b'{"text": "' + b"long " * 300 + b'"}',
]


def test_jsonl_with_orjson_reads_what_json_reads(tmp_path, monkeypatch):
    rng = random.Random(3)
    lines = []
    for _ in range(1500):
        line = bytearray(rng.choice(HOSTILE))
        if rng.random() < 0.3 and line:  # a random byte changed
            line[rng.randrange(len(line))] = rng.randrange(256)
        lines.append(bytes(line).replace(b"\n", b" "))
    lines += [json.dumps({"text": t, "id": i}).encode() for i, t in enumerate(ALPHABET)]
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\r\n".join(lines))

    def read_all() -> list[dict]:
        out = []
        small = ReadOptions(unit_bytes=20000, batch_docs=5, max_doc_bytes=900)
        # read blocks of 1 MiB and of a few hundred bytes (lines carried over from block to
        # block, runs of whole lines cut short), lines too long for a record among the others
        for block, opts in (
            (1 << 20, ReadOptions()),
            (1 << 20, small),
            (333, dataclasses.replace(small, max_record_bytes=700)),
            (4096, dataclasses.replace(small, unit_bytes=1 << 20)),
        ):
            monkeypatch.setattr(lines_module, "READ_BLOCK", block)
            for unit in plan_units([str(tmp_path / "*.jsonl")], opts):
                out += [dataclasses.asdict(b) for b in read_unit(unit, opts, {})]
        return out

    assert jsonl_format.orjson is not None
    fast = read_all()
    monkeypatch.setattr(jsonl_format, "orjson", None)
    assert fast == read_all()
    assert sum(len(b["texts"]) for b in fast) > 300 and sum(len(b["rejects"]) for b in fast) > 300


def _kernel_matches_numpy(texts: list[str], lens: list[list[int]], table: np.ndarray) -> None:
    """The compiled statistics of texts cut into tokens of these byte lengths (token id = its
    length in `table`) equal the numpy reference's, token ends included."""
    flat = np.array([n for doc in lens for n in doc], dtype=np.uint32)
    offsets = np.concatenate(([0], np.cumsum([len(doc) for doc in lens]))).astype(np.int64)
    ref = batch_stats(texts, flat, offsets, table, want_ends=True, kernel=False)
    # the texts as str, as UTF-8 read in place (no separators), and as a view of a buffer that
    # starts with another text (an unaligned start)
    in_place = Utf8Texts.of(["ab", *texts])
    data, all_offsets = in_place.utf8()
    for given in (texts, Utf8Texts.of(texts), Utf8Texts.view(data, all_offsets[1:])):
        got = batch_stats(given, flat, offsets, table, want_ends=True, kernel=True)
        for f in dataclasses.fields(ref):
            a, b = getattr(ref, f.name), getattr(got, f.name)
            assert (a is None and b is None) or np.array_equal(a, b), (f.name, texts, lens)


# mostly plain ASCII, as prose and code are: the compiled statistics go 8 bytes a step there
ASCII_HEAVY = [*"abcdefghXYZ_0123456789", *" \n\t.,;:'\"()-+=/", "’", "é", "中", "..", "''"]


@pytest.mark.parametrize("seed", range(3))
def test_compiled_word_statistics_in_8_byte_steps(seed):
    """Long, mostly ASCII documents at every offset within 8 bytes, cut at random token
    boundaries: '.', ',' and apostrophes at every position of a step, beside digits and word
    bytes inside it and across its edges."""
    rng = random.Random(100 + seed)
    table = np.arange(1024, dtype=np.int32)  # token id = its byte length
    for _ in range(60):
        weights = [rng.random() for _ in ASCII_HEAVY]
        texts = [
            "".join(rng.choices(ASCII_HEAVY, weights, k=rng.randint(0, 300)))
            for _ in range(rng.randint(1, 24))
        ]
        mode = rng.choice(["exact", "exact", "short", "long"])
        lens = [_token_lengths(rng, len(t.encode()), mode) for t in texts]
        _kernel_matches_numpy(texts, lens, table)


def test_batches_encoded_together_give_the_same_unit_bytes(tmp_path, bpe_path, monkeypatch):
    """The texts of consecutive engine batches go to the encoder in one call (its fixed cost per
    call), and are cut back per batch: shard, rejects and ledger are byte for byte those of one
    call per batch, with rejects and blank lines between the batches kept in their place."""
    from pipeline.output.storage import Output
    from pipeline.tokenize import unit as unit_module
    from pipeline.tokenize.unit import UnitTask, process_unit

    lines = (SAMPLE_DIR / "en.jsonl").read_bytes().splitlines()
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 9 == 4:
            mixed += [b"{not json", b"", b'{"text": 3}']
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join(mixed) + b"\n")
    tok = load_tokenizer(f"bpe:{bpe_path}")
    opts = ReadOptions(batch_docs=7)
    task = UnitTask(opts, "0" * 16, True, True, {}, None, 0.5)
    results = {}
    for group_docs in (1, 20, unit_module.GROUP_DOCS):  # 1: every batch alone, as before
        monkeypatch.setattr(unit_module, "GROUP_DOCS", group_docs)
        out = tmp_path / f"out-{group_docs}"
        (unit,) = plan_units([str(source)], opts)
        entry = process_unit(unit, tok, task, Output(str(out))).entry
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.arrow")}
        ledger = {k: v for k, v in entry.to_json().items() if k not in ("timings", "lease")}
        results[group_docs] = (files, ledger)
    assert results[1][1]["rejected"] == 2 * len(range(4, len(lines), 9)) > 0
    assert results[1][1]["batches"] > 10 and results[1][1]["verified_documents"] > 0
    assert results[20] == results[1] and results[unit_module.GROUP_DOCS] == results[1]


@pytest.mark.parametrize("block", [7, 64, 333, 1 << 20])
def test_line_runs_are_the_lines_of_the_stream(block, monkeypatch):
    """iter_line_runs against splitting the whole stream: the same lines at the same offsets,
    each line longer than max_record_bytes as None with its first bytes, for read blocks smaller
    and larger than the lines, a range that starts and ends inside the stream, and streams with
    and without a last newline."""
    import io

    from schemas.shards import REJECT_RAW_BYTES

    monkeypatch.setattr(lines_module, "READ_BLOCK", block)
    rng = random.Random(block)
    limit = REJECT_RAW_BYTES + 44  # (a reject keeps a too long line's first bytes)
    for trial in range(40):
        lines = [bytes(rng.choice(b"ab \r") for _ in range(rng.choice([0, 1, 5, limit - 1, limit, limit + 1, 700])))
                 for _ in range(rng.randrange(1, 30))]  # fmt: skip
        data = b"\n".join(lines) + (b"\n" if trial % 2 else b"")
        start = rng.randrange(len(data) + 1) if trial % 3 == 0 else 0
        start = data.rfind(b"\n", 0, start) + 1 if start else 0  # a line start
        end = -1 if trial % 4 else len(data)
        want, at = [], start
        body = data[start : None if end < 0 else end]
        pieces = body.split(b"\n")
        if pieces and pieces[-1] == b"":
            pieces.pop()
        for piece in pieces:
            too_long = len(piece) > limit
            want.append(
                (at, None if too_long else piece, piece[:REJECT_RAW_BYTES] if too_long else piece)
            )
            at += len(piece) + 1
        stream = io.BytesIO(data)
        stream.seek(start)
        got = []
        for offset, run, head in lines_module.iter_line_runs(stream, start, end, limit):
            if run is None:
                got.append((offset, None, head))
                continue
            for line in run:
                got.append((offset, line, line))
                offset += len(line) + 1
        assert got == want, (block, trial)


def test_a_unit_of_short_documents_takes_the_compiled_kernels(tmp_path, bpe_path):
    """Batches of 256 short documents are each under the kernels' thresholds: a 20 MB unit of
    them went through the numpy reference code batch after batch (statistics 5x slower). A
    unit of KERNELS_FROM_BYTES or more loads them first; a smaller one (a job of a few
    documents) still never imports numba."""
    import json
    import subprocess
    import sys

    from pipeline.tokenize.unit import KERNELS_FROM_BYTES

    script = (
        "import sys, json; sys.path.insert(0, sys.argv[3])\n"
        "from pipeline.output.storage import Output\n"
        "from pipeline.tokenize.inputs import ReadOptions, plan_units\n"
        "from pipeline.tokenize.unit import UnitTask, process_unit\n"
        "from tokenizers_impl import load_tokenizer\n"
        "tok = load_tokenizer('bpe:' + sys.argv[2]); opts = ReadOptions()\n"
        "task = UnitTask(opts, '0' * 16, False, True, {}, None, 0.0)\n"
        "for u in plan_units([sys.argv[1]], opts): process_unit(u, tok, task, Output(sys.argv[4]))\n"
        "print(json.dumps(['numba' in sys.modules, 'pipeline.tokenize.textkernels' in sys.modules]))\n"
    )
    line = json.dumps({"text": "a short document, about sixty bytes of plain text."}) + "\n"
    results = []
    for name, lines in (("small", 100), ("big", KERNELS_FROM_BYTES // len(line) + 10)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(line * lines)
        args = [
            sys.executable,
            "-c",
            script,
            str(path),
            str(bpe_path),
            str(REPO),
            str(tmp_path / name),
        ]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results == [[False, False], [True, True]]
