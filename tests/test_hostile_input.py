"""Hostile and broken input: every case ends in documents plus rejects with a reason, or in a clear
error naming the input, never a crash, a hang or memory that grows with the bad record."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
import zstandard

from pipeline.errors import InputError
from pipeline.output.storage import Output
from pipeline.output.verify import verify_output
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job
from pipeline.tokenize.inputs import ReadOptions, plan_units
from pipeline.tokenize.unit import UnitTask, process_unit
from schemas.records import LedgerEntry
from tokenizers_impl import load_tokenizer

CONFIG_HASH = "hostile000000000"


@pytest.fixture(scope="module")
def tokenizer(bpe_path):
    return load_tokenizer(f"bpe:{bpe_path}")


def tokenize(
    pattern: str, tokenizer, out: Path, **read
) -> tuple[list[LedgerEntry], list[dict], list[str]]:
    """Run process_unit (the actor's code, in-process) over every unit of `pattern`.

    Returns (ledger entries, reject rows, shard texts decoded back from the tokens)."""
    opts = ReadOptions(**read)
    task = UnitTask(opts, CONFIG_HASH, False, True, {})
    output = Output(str(out))
    entries = [process_unit(u, tokenizer, task, output).entry for u in plan_units([pattern], opts)]
    rejects, texts = [], []
    for entry in entries:
        assert entry.docs_read == entry.documents + entry.rejected
        if entry.rejects:
            rejects.extend(pa.ipc.open_file(str(out / entry.rejects)).read_all().to_pylist())
        shard = pa.ipc.open_file(str(out / entry.shard)).read_all()
        texts.extend(tokenizer.decode(row) for row in shard["tokens"].to_pylist())
    assert verify_output(str(out)).ok
    return entries, rejects, texts


def lines(*records: bytes) -> bytes:
    return b"".join(r + b"\n" for r in records)


def doc_text(i: int) -> str:
    """Document i of the synthetic corpus: varied enough that it compresses only about 2x."""
    rng = random.Random(i)
    return f"document {i}: " + " ".join(f"{rng.getrandbits(32):x}" for _ in range(60))


def corpus(n: int) -> bytes:
    return lines(*(json.dumps({"id": f"d{i}", "text": doc_text(i)}).encode() for i in range(n)))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_compressed_file_keeps_the_documents_before_the_cut_and_rejects_the_rest(
    tmp_path, tokenizer, codec
):
    raw = corpus(10_000)
    packed = gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / ("in.jsonl.gz" if codec == "gzip" else "in.jsonl.zst")
    path.write_bytes(packed[: len(packed) * 2 // 3])
    entries, rejects, texts = tokenize(str(path), tokenizer, tmp_path / "out")
    assert len(rejects) == 1
    reason = rejects[0]["reason"]
    assert reason.startswith(f"unreadable input after decompressed offset {rejects[0]['offset']}")
    assert ("Compressed file ended" in reason) if codec == "gzip" else ("Truncated" in reason)
    # what was read before the cut is a prefix of the corpus, in order, never a partial document
    assert 0 < len(texts) < 10_000
    assert texts == [doc_text(i) for i in range(len(texts))]


def test_zstd_cut_exactly_at_a_frame_boundary_is_not_silently_short(tmp_path, tokenizer):
    raw = corpus(2000)
    half = raw.index(b"\n", len(raw) // 2) + 1
    frames = [zstandard.ZstdCompressor().compress(part) for part in (raw[:half], raw[half:])]
    (tmp_path / "whole.jsonl.zst").write_bytes(frames[0] + frames[1])
    (tmp_path / "cut.jsonl.zst").write_bytes(frames[0] + frames[1][:12])
    _, rejects, texts = tokenize(str(tmp_path / "whole.jsonl.zst"), tokenizer, tmp_path / "o1")
    assert rejects == [] and len(texts) == 2000  # every frame of a multi-frame file is read
    _, rejects, texts = tokenize(str(tmp_path / "cut.jsonl.zst"), tokenizer, tmp_path / "o2")
    assert len(rejects) == 1 and "Truncated compressed stream" in rejects[0]["reason"]


def test_nul_bytes(tmp_path, tokenizer):
    (tmp_path / "nul.jsonl").write_bytes(
        lines(b'{"text": "raw \x00 nul"}', b'{"text": "escaped \\u0000 nul"}', b"\x00\x00\x00")
    )
    _, rejects, texts = tokenize(str(tmp_path / "nul.jsonl"), tokenizer, tmp_path / "out")
    assert texts == ["escaped \x00 nul"]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (1, "invalid JSON: Invalid control character at at column 15"),
        (3, "invalid JSON: Expecting value at column 1"),
    ]


def test_lone_surrogates_and_overlong_utf8_are_rejected_with_the_position(tmp_path, tokenizer):
    (tmp_path / "bad.jsonl").write_bytes(
        lines(
            b'{"text": "ab\\ud800cd"}',  # a lone surrogate as a JSON escape
            b'{"text": "\xc0\xaf"}',  # overlong encoding of "/"
            b'{"text": "\xe0\x80\xaf"}',  # 3-byte overlong
            b'{"text": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 (CESU-8)
            b'{"text": "fine"}',
            b'{"id": "a\\udc00", "text": "fine text, broken id"}',
            b'{"text": "fine text, broken lang", "lang": "\\ud800"}',
            b'{"text": "fine text, broken source", "source": "s\\ud800"}',
        )
    )
    _, rejects, texts = tokenize(str(tmp_path / "bad.jsonl"), tokenizer, tmp_path / "out")
    assert texts == ["fine"]
    assert [r["reason"] for r in rejects] == [
        "text has a lone surrogate at character 2 (not encodable as UTF-8)",
        "invalid UTF-8 at byte 10 of the record",
        "invalid UTF-8 at byte 10 of the record",
        "invalid UTF-8 at byte 10 of the record",
        "id field 'id' has a lone surrogate at character 1 (not encodable as UTF-8)",
        "lang field 'lang' has a lone surrogate at character 0 (not encodable as UTF-8)",
        "source field 'source' has a lone surrogate at character 1 (not encodable as UTF-8)",
    ]


def test_bom_and_crlf(tmp_path, tokenizer):
    (tmp_path / "bom.jsonl").write_bytes(
        b'\xef\xbb\xbf{"text": "after a BOM"}\r\n{"text": "crlf line"}\r\n'
        b'\xef\xbb\xbf{"text": "BOM mid-file"}\r\n'
    )
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfplain text\r\nsecond line\r\n")
    _, rejects, texts = tokenize(str(tmp_path / "bom.jsonl"), tokenizer, tmp_path / "o1")
    assert texts == ["after a BOM", "crlf line"]
    assert [r["line"] for r in rejects] == [3]
    assert "BOM" in rejects[0]["reason"]
    _, rejects, texts = tokenize(str(tmp_path / "bom.txt"), tokenizer, tmp_path / "o2")
    assert texts == ["plain text", "second line"] and rejects == []


def test_deeply_nested_json_is_rejected_not_a_recursion_crash(tmp_path, tokenizer):
    depth = 200_000
    (tmp_path / "deep.jsonl").write_bytes(
        lines(
            b"[" * depth + b"]" * depth,
            b'{"text": ' + b"[" * depth + b"]" * depth + b"}",
            b'{"a": ' * depth + b"1" + b"}" * depth,
            b'{"text": "shallow"}',
        )
    )
    t0 = time.perf_counter()
    _, rejects, texts = tokenize(str(tmp_path / "deep.jsonl"), tokenizer, tmp_path / "out")
    assert time.perf_counter() - t0 < 30
    assert texts == ["shallow"]
    assert [r["reason"] for r in rejects] == ["invalid JSON: nested deeper than 512"] * 3


def test_json_nested_near_the_limit_is_read_or_rejected_the_same_by_every_reader(
    tmp_path, tokenizer
):
    """json's own limit (a RecursionError) moved with the caller's stack: a line nested 980 deep
    was a reject in the driver's main thread and a document in its threads and on actors, so
    the shard bytes depended on who ran the unit. Now the depth is counted: up to 512 is read
    (brackets inside strings do not count), deeper is rejected, from any stack depth."""
    import threading

    def nested(depth: int, inner: bytes = b"") -> bytes:
        return b'{"text": "deep", "x": ' + b"[" * depth + inner + b"]" * depth + b"}"

    (tmp_path / "deep.jsonl").write_bytes(
        # the object itself is a level: 511 and 512 deep, 513 deep, 301 deep with brackets in a string
        lines(nested(510), nested(511), nested(512), nested(300, b'"' + b"[{" * 800 + b'"'))
    )

    def read_at_depth(extra: int, found: list) -> None:
        if extra:
            return read_at_depth(extra - 1, found)
        found.append(tokenize(str(tmp_path / "deep.jsonl"), tokenizer, tmp_path / f"o{len(found)}"))

    results: list = []
    read_at_depth(0, results)
    read_at_depth(400, results)  # 400 frames deeper in the stack
    thread = threading.Thread(target=read_at_depth, args=(50, results))
    thread.start()
    thread.join()
    for _, rejects, texts in results:
        assert texts == ["deep", "deep", "deep"]
        assert [(r["line"], r["reason"]) for r in rejects] == [
            (3, "invalid JSON: nested deeper than 512")
        ]


def test_an_integer_too_long_for_python_rejects_its_line_only(tmp_path, tokenizer):
    """json refuses an integer of more than 4300 digits with a ValueError, which escaped the line
    and was taken for unreadable input: every later line of the unit was lost, in neither the
    shards nor the rejects (and the reject named line 1)."""
    rows = [b'{"id": "first", "text": "first doc"}']
    rows.append(b'{"id": "big", "text": "x", "n": ' + b"9" * 4301 + b"}")
    rows += [b'{"id": "a%d", "text": "doc %d"}' % (i, i) for i in range(1000)]
    _, rejects, texts = tokenize_lines(tmp_path, tokenizer, rows)
    assert len(texts) == 1001 and texts[:2] == ["first doc", "doc 0"]
    assert [(r["line"], r["offset"]) for r in rejects] == [(2, len(rows[0]) + 1)]
    assert rejects[0]["reason"].startswith("invalid JSON: Exceeds the limit (4300 digits)")


def tokenize_lines(tmp_path, tokenizer, rows):
    (tmp_path / "in.jsonl").write_bytes(lines(*rows))
    return tokenize(str(tmp_path / "in.jsonl"), tokenizer, tmp_path / "out")


def test_wrong_types(tmp_path, tokenizer):
    (tmp_path / "types.jsonl").write_bytes(
        lines(
            b'{"text": 1}',
            b'{"text": null}',
            b'{"text": ["a"]}',
            b'{"text": {"x": 1}}',
            b'"a string"',
            b"5",
            b'{"no_text": "x"}',
            b'{"text": ""}',
            b'{"text": "ok", "id": {"nested": 1}, "source": 7, "lang": [1]}',
        )
    )
    entries, rejects, texts = tokenize(str(tmp_path / "types.jsonl"), tokenizer, tmp_path / "out")
    assert texts == ["ok"]
    assert [r["reason"] for r in rejects] == [
        "text field 'text' is int, expected string",
        "text field 'text' is NoneType, expected string",
        "text field 'text' is list, expected string",
        "text field 'text' is dict, expected string",
        "record is a JSON str, expected an object",
        "record is a JSON int, expected an object",
        "missing text field 'text'",
        "empty text",
    ]
    shard = pa.ipc.open_file(str(tmp_path / "out" / entries[0].shard)).read_all().to_pylist()
    assert shard[0]["source"] == "types.jsonl"  # a non-string source falls back to the file name
    assert len(shard[0]["doc_id"]) == 24  # a non-scalar id falls back to hash(url, offset)


def test_empty_file_commits_an_empty_unit(tmp_path, tokenizer):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    entries, rejects, texts = tokenize(str(tmp_path / "empty.jsonl"), tokenizer, tmp_path / "out")
    assert [(e.docs_read, e.documents, e.rejected) for e in entries] == [(0, 0, 0)]
    assert rejects == [] and texts == []


def test_directories_missing_paths_and_symlink_loops_give_clear_errors(tmp_path, caplog):
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "good.jsonl").write_bytes(b'{"text": "x"}\n')
    os.symlink("self.jsonl", tmp_path / "self.jsonl")
    os.symlink("b.jsonl", tmp_path / "a.jsonl")
    os.symlink("a.jsonl", tmp_path / "b.jsonl")
    units = plan_units([str(tmp_path / "*.jsonl")], ReadOptions())
    assert [u.url for u in units] == [str(tmp_path / "good.jsonl")]
    assert "dir.jsonl (a directory)" in caplog.text
    assert "self.jsonl (a broken or looping symlink)" in caplog.text
    with pytest.raises(InputError, match=r"dir\.jsonl' is a directory: name its files, e\.g\. "):
        plan_units([str(tmp_path / "dir.jsonl")], ReadOptions())
    with pytest.raises(
        InputError, match=r"dir\*\.jsonl' matches no files \(skipped: .*a directory"
    ):
        plan_units([str(tmp_path / "dir*.jsonl")], ReadOptions())
    with pytest.raises(InputError, match=r"missing\.jsonl' does not exist"):
        plan_units([str(tmp_path / "missing.jsonl")], ReadOptions())
    with pytest.raises(InputError, match=r"self\.jsonl' is a broken or looping symlink"):
        plan_units([str(tmp_path / "self.jsonl")], ReadOptions())
    with pytest.raises(InputError, match=r"nothing-\*\.jsonl' matches no files"):
        plan_units([str(tmp_path / "nothing-*.jsonl")], ReadOptions())


class PeakRSS:
    """Samples this process's RSS every 5 ms in a thread; `growth` is peak minus the start."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.growth = self.peak - self.start


def test_a_200mb_single_line_is_rejected_in_bounded_memory(tmp_path, tokenizer):
    line_bytes = 200 << 20
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"text": "before"}\n{"text": "')
        chunk = b"a" * (1 << 20)
        for _ in range(line_bytes >> 20):
            handle.write(chunk)
        handle.write(b'"}\n{"text": "after"}\n')
    # Memory is bounded by max_record_bytes (the most of one line ever held), not by the line.
    for limit in (64 << 20, 8 << 20):
        with PeakRSS() as rss:
            _, rejects, texts = tokenize(
                str(path), tokenizer, tmp_path / f"out-{limit}", max_record_bytes=limit
            )
        assert texts == ["before", "after"]
        assert [(r["line"], r["offset"]) for r in rejects] == [(2, 19)]
        assert rejects[0]["reason"] == f"record too large: more than max_record_bytes {limit} bytes"
        assert rejects[0]["raw"].startswith(b'{"text": "aaaa') and len(rejects[0]["raw"]) == 256
        assert rss.growth < limit + (16 << 20), (
            f"RSS grew {rss.growth >> 20} MB, limit {limit >> 20} MB"
        )
    path.unlink()


def test_a_hostile_folder_end_to_end_through_ray(ray_session, tmp_path, bpe_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "ok.jsonl").write_bytes(corpus(50))
    (src / "mixed.jsonl").write_bytes(
        lines(b'{"text": 1}', b"\x00", b'{"text": "\xc0\xaf"}', b'{"text": "good"}', b"[" * 100_000)
    )
    (src / "cut.jsonl.gz").write_bytes(gzip.compress(corpus(500))[:-200])
    (src / "empty.jsonl").write_bytes(b"")
    (src / "sub.jsonl").mkdir()
    os.symlink("loop.jsonl", src / "loop.jsonl")
    cfg = load_config(
        input=[str(src / "*.jsonl*")],
        output=str(tmp_path / "out"),
        tokenizer=f"bpe:{bpe_path}",
        progress=False,
    )
    summary = run_job(cfg)
    assert summary.complete and summary.units_committed == 4
    assert summary.docs_read == summary.documents + summary.rejected
    assert summary.rejected == 5  # 4 bad lines of mixed.jsonl + the truncated gzip's tail
    assert verify_output(str(tmp_path / "out")).ok


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_cut_compressed_file_loses_only_what_the_cut_took(tmp_path, tokenizer, codec):
    """The read that meets the cut would lose everything it asked for (up to a whole read
    block: all of a small file); the file is read again up to there and then in small pieces
    (a .gz by zlib over its raw bytes: gzip's reader loses what its failing read decompressed),
    so every whole line the decompressor can still produce is kept, and the reject is the line
    the cut went through, with its offset and line number."""
    import zlib

    raw = corpus(1_500)  # under one read block (1 MiB) of JSON lines
    packed = gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw)
    cut = packed[: len(packed) * 2 // 3]
    if codec == "gzip":
        readable = zlib.decompressobj(31).decompress(cut)
    else:
        readable = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    whole_lines = readable.count(b"\n")
    path = tmp_path / ("in.jsonl.gz" if codec == "gzip" else "in.jsonl.zst")
    path.write_bytes(cut)
    entries, rejects, texts = tokenize(str(path), tokenizer, tmp_path / "out")
    assert len(rejects) == 1 and texts == [doc_text(i) for i in range(len(texts))]
    assert len(texts) == whole_lines
    cut_at = readable.rfind(b"\n") + 1
    assert (rejects[0]["offset"], rejects[0]["line"]) == (cut_at, whole_lines + 1)


def test_a_read_error_that_does_not_come_back_is_read_past():
    """Salvaging opens the file again after a failed read: when the second reading does not
    fail (a passing network error), every byte comes out and no error is raised."""
    import io

    from pipeline.tokenize.inputs.lines import Salvaging

    data = bytes(range(256)) * 4096  # 1 MiB
    opened = []

    class FailsOnce(io.BytesIO):
        def read(self, n=-1):
            if len(opened) == 1 and self.tell() >= 300_000:
                raise OSError("connection reset")
            return super().read(n)

    def opener():
        opened.append(1)
        return FailsOnce(data)

    stream, out = Salvaging(opener), bytearray()
    while chunk := stream.read(100_000):
        out += chunk
    assert bytes(out) == data and len(opened) == 2


def test_a_cut_compressed_text_file_in_file_mode_is_a_reject_not_a_short_document(tmp_path):
    """text_mode=file reads a whole file as one document: a cut .txt.gz must not become the
    document's first part (a read that met the cut returns what came before it; the error
    comes with the next read, which the whole-file reader makes)."""
    from pipeline.tokenize.inputs import ReadOptions, plan_units, read_unit

    text = "".join(doc_text(i) + "\n" for i in range(3_000)).encode()
    packed = gzip.compress(text)
    (tmp_path / "whole.txt.gz").write_bytes(packed)
    (tmp_path / "cut.txt.gz").write_bytes(packed[: len(packed) // 2])
    opts = ReadOptions(text_mode="file")
    for name, docs, rejects in (("whole.txt.gz", 1, 0), ("cut.txt.gz", 0, 1)):
        (unit,) = plan_units([str(tmp_path / name)], opts)
        batches = list(read_unit(unit, opts, None))
        assert sum(len(b.texts) for b in batches) == docs
        found = [r for b in batches for r in b.rejects]
        assert len(found) == rejects
    assert [t for b in read_unit(plan_units([str(tmp_path / "whole.txt.gz")], opts)[0], opts, None)
            for t in b.texts] == [text.decode()]  # fmt: skip
    assert found[0].reason.startswith("unreadable input: EOFError: Compressed file ended")


def test_a_unit_of_bad_records_is_read_in_bounded_batches(tmp_path, bpe_path):
    """Rejects count toward a batch's size too: 30,000 bad lines (and a few good ones) come out
    as rejects in batches of at most 4,096 (one batch held them all, 1.2 GB for 2 M lines), every
    one accounted for, each naming its line."""
    from pipeline.tokenize.inputs.batching import REJECTS_PER_BATCH

    path = tmp_path / "bad.jsonl"
    lines = [
        f"{i},not,json" if i % 10_000 else json.dumps({"text": f"good {i}"}) for i in range(30_000)
    ]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary = run_job(
        load_config(input=[str(path)], output=str(out), tokenizer=f"bpe:{bpe_path}", progress=False)
    )
    assert summary.complete and (summary.documents, summary.rejected) == (3, 29_997)
    (rejects,) = (out / "rejects").glob("*.arrow")
    with pa.memory_map(str(rejects)) as mapped:
        reader = pa.ipc.open_file(mapped)
        sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        table = reader.read_all()
    assert max(sizes) <= REJECTS_PER_BATCH and sum(sizes) == 29_997
    assert table.column("line").to_pylist() == [i + 1 for i in range(30_000) if i % 10_000]


def test_gzip_pieces_reads_what_gzip_reads_and_all_before_the_damage():
    """The salvage reader of a .gz: members and zero padding as gzip reads them; a cut or a
    corrupt byte gives every byte zlib can still produce, then the error."""
    import io
    import zlib

    from pipeline.tokenize.inputs.salvage import GzipPieces

    def read_all(data: bytes, piece: int) -> tuple[bytes, BaseException | None]:
        reader, out = GzipPieces(io.BytesIO(data)), bytearray()
        try:
            while chunk := reader.read(piece):
                out += chunk
        except (EOFError, zlib.error) as exc:
            return bytes(out), exc
        return bytes(out), None

    raw = corpus(3_000)
    members = gzip.compress(raw[:100_000]) + b"\0" * 9 + gzip.compress(raw[100_000:]) + b"\0" * 3
    for piece in (1, 777, 1 << 20, -1):
        assert read_all(members, piece) == (gzip.decompress(members), None)
    cut = members[: len(members) // 2]
    got, error = read_all(cut, 4096)
    inflate = zlib.decompressobj(31)
    first = inflate.decompress(cut)
    assert got == first + zlib.decompressobj(31).decompress(inflate.unused_data.lstrip(b"\0"))
    assert isinstance(error, EOFError) and raw.startswith(got) and len(got) > 100_000
    damaged = bytearray(gzip.compress(raw))
    damaged[len(damaged) // 2 :: 97] = b"\xff" * len(damaged[len(damaged) // 2 :: 97])
    got, error = read_all(bytes(damaged), 4096)
    assert isinstance(error, zlib.error)  # (deflate may decode damage to bytes before it sees it)
    inflate, expected = zlib.decompressobj(31), bytearray()
    for i in range(len(damaged)):  # zlib a byte at a time: all it gives before the damage
        try:
            expected += inflate.decompress(bytes(damaged[i : i + 1]))
        except zlib.error:
            break
    assert got == bytes(expected) and len(got) > len(raw) // 3


def test_a_whole_text_file_with_a_bom_names_the_bad_bytes_position_in_the_file(tmp_path, tokenizer):
    """The position was counted after the stripped BOM (byte 6 for the byte at 9), and the
    reject's raw bytes left the BOM out."""
    data = b"\xef\xbb\xbfhello \xff world"
    (tmp_path / "doc.txt").write_bytes(data)
    _, rejects, texts = tokenize(
        str(tmp_path / "doc.txt"), tokenizer, tmp_path / "o", text_mode="file"
    )
    assert texts == [] and [r["reason"] for r in rejects] == ["invalid UTF-8 at byte 9 of the file"]
    assert rejects[0]["raw"] == data and data[9:10] == b"\xff"


@pytest.mark.parametrize("damage", ["corrupt frame", "garbage after", "cut frame"])
def test_a_damaged_zstd_keeps_every_whole_line_of_its_intact_data(tmp_path, tokenizer, damage):
    """Arrow's reader loses what its failing read had decompressed: a corrupt 11th frame of 50
    lines each kept 475 of the 500 lines of the 10 intact frames, bytes that are no frame after
    an intact one lost its last 17 lines. Now the file is read again frame by frame from its
    raw bytes, so every line before the damaged block is a document."""
    raw = corpus(3000)
    ends = [i + 1 for i, byte in enumerate(raw) if byte == 0x0A]
    cuts = [0, *ends[49::50]]
    compress = zstandard.ZstdCompressor(level=3, write_checksum=True).compress
    frames = [compress(raw[a:b]) for a, b in itertools.pairwise(cuts)]
    if damage == "corrupt frame":
        bad = bytearray(frames[10])
        bad[len(bad) // 2] ^= 0xFF
        data, kept, reason = b"".join([*frames[:10], bytes(bad), *frames[11:]]), 500, "ZSTD"
    elif damage == "garbage after":
        data, kept, reason = b"".join(frames) + b"garbage!!", 3000, "ZSTD decompress failed"
    else:
        data, kept, reason = b"".join(frames[:20]) + frames[20][:-20], 1000, "Truncated"
    (tmp_path / "d.jsonl.zst").write_bytes(data)
    _, rejects, texts = tokenize(str(tmp_path / "d.jsonl.zst"), tokenizer, tmp_path / "o")
    assert texts[:kept] == [doc_text(i) for i in range(kept)]
    assert kept <= len(texts) < kept + 50 and len(rejects) == 1
    assert reason in rejects[0]["reason"]
    # the reject starts where the first line not read does
    assert rejects[0]["offset"] == sum(len(line) + 1 for line in raw.split(b"\n")[: len(texts)])


@pytest.mark.parametrize("scan", [False, True])
def test_a_failure_of_the_reader_itself_fails_the_unit_instead_of_rejecting_the_rest(
    tmp_path, tokenizer, monkeypatch, scan
):
    """Only a failed read (a cut or corrupt file) makes the `unreadable input` reject that ends a
    unit: a ValueError from the code that takes lines already in memory apart (the compiled pass
    or the per-line reader) is a bug, and it failed nothing but silently dropped the rest of the
    unit into that reject. Now the unit fails, naming the file and the record, and commits
    nothing."""
    from pipeline.tokenize.inputs import jsonl, jsonscan

    monkeypatch.setattr(jsonl, "_SCAN", jsonscan.__name__ if scan else "not loaded")
    real = jsonl._take if scan else jsonl.BatchBuilder.record
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise ValueError("a bug")
        return real(*args, **kwargs)

    if scan:
        monkeypatch.setattr(jsonl, "_take", failing)
    else:
        monkeypatch.setattr(jsonl, "orjson", None)  # (every line through the per-line reader)
        monkeypatch.setattr(jsonl.BatchBuilder, "record", failing)
    (tmp_path / "a.jsonl").write_bytes(corpus(400))
    with pytest.raises(RuntimeError, match=r"a\.jsonl: reading the record at offset \d+ failed"):
        tokenize(str(tmp_path / "a.jsonl"), tokenizer, tmp_path / "out", batch_docs=50)
    assert not (tmp_path / "out" / "ledger").exists() or not any(
        (tmp_path / "out" / "ledger").iterdir()
    )
