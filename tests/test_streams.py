"""Big compressed files in parallel: one reader decompresses the file once and cuts it into
newline-aligned ranges that any actor tokenizes; shards are the same for any actor count, and a
crash redoes only the ranges that were in flight."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time

import pytest
import zstandard

from pipeline.output import Output, committed_entries
from pipeline.tokenize.engine import run_job
from pipeline.tokenize.inputs import ReadOptions, is_stream, iter_ranges, plan_units, read_unit
from pipeline.tokenize.inputs import streams as streams_module

from .helpers import (
    SAMPLE_DIR,
    job_config,
    read_jsonl,
    shard_files,
    shard_rows,
    start_run,
    wait_for_commits,
)

UNIT = 200_000


def records(copies=3):
    rows = []
    for copy in range(copies):
        for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
            rows += [{**r, "id": f"{r['id']}-{copy}"} for r in read_jsonl(path)]
    return rows


def write_compressed(path, rows, extra_lines=()):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    data += b"".join(line + b"\n" for line in extra_lines)
    if path.suffix == ".zst":
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    else:
        path.write_bytes(gzip.compress(data, mtime=0))
    return data


@pytest.mark.parametrize(("suffix", "block"), [(".zst", None), (".gz", None), (".zst", 333)])
def test_a_big_compressed_file_is_cut_into_newline_aligned_ranges(
    tmp_path, monkeypatch, suffix, block
):
    """(`block`: decompressed blocks smaller than a line, so that a range's end is searched for
    across many blocks read one at a time.)"""
    if block:
        monkeypatch.setattr(streams_module, "READ_BLOCK", block)
    path = tmp_path / f"big.jsonl{suffix}"
    data = write_compressed(path, records())
    opts = ReadOptions(unit_bytes=UNIT)
    (stream,) = plan_units([str(path)], opts)
    assert is_stream(stream)
    ranges = list(iter_ranges(stream, opts, None))
    assert len(ranges) == -(-len(data) // UNIT) or len(ranges) == len(data) // UNIT
    assert b"".join(chunk for _, chunk in ranges) == data
    assert [u.start for u, _ in ranges[1:]] == [u.end for u, _ in ranges[:-1]]
    assert all(data[u.start - 1 : u.start] == b"\n" for u, _ in ranges[1:])
    # the same boundaries as an uncompressed file of these bytes is planned with
    (tmp_path / "plain.jsonl").write_bytes(data)
    plain = plan_units([str(tmp_path / "plain.jsonl")], opts)
    assert [(u.start, u.end) for u, _ in ranges] == [(u.start, u.end) for u in plain]
    assert len({u.unit_id for u, _ in ranges}) == len(ranges)
    # a range reads the same from its handed-over bytes as from the file itself
    unit, chunk = ranges[2]
    from_bytes = [b.doc_ids for b in read_unit(unit, opts, None, chunk)]
    from_file = [b.doc_ids for b in read_unit(unit, opts, None)]
    assert from_bytes == from_file and sum(map(len, from_bytes)) > 0


def test_a_big_compressed_text_file_is_read_in_ranges_too(tmp_path):
    """Plain text, one document per line: a big .txt.gz is a stream cut into ranges like JSON
    lines, and each range reads the same documents from its handed-over bytes as from the
    file; together, the lines of the file in order."""
    lines = [r["text"].replace("\n", " ") for r in records()]
    data = "".join(line + "\n" for line in lines).encode()
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(data, mtime=0))
    opts = ReadOptions(unit_bytes=UNIT)
    (stream,) = plan_units([str(path)], opts)
    assert is_stream(stream)
    ranges = list(iter_ranges(stream, opts, None))
    assert len(ranges) > 2
    texts = []
    for unit, chunk in ranges:
        from_bytes = [t for b in read_unit(unit, opts, None, chunk) for t in b.texts]
        assert from_bytes == [t for b in read_unit(unit, opts, None) for t in b.texts]
        texts += from_bytes
    assert texts == lines


def test_one_and_two_actors_and_the_driver_write_the_same_shards(ray_session, tmp_path, bpe_path):
    rows = records()
    write_compressed(tmp_path / "big.jsonl.zst", rows)
    spec, inputs = f"bpe:{bpe_path}", tmp_path / "big.jsonl.zst"
    one = run_job(job_config(inputs, tmp_path / "one", spec, unit_bytes=UNIT, actors=1))
    two = run_job(job_config(inputs, tmp_path / "two", spec, unit_bytes=UNIT, actors=2))
    local = run_job(job_config(inputs, tmp_path / "local", spec, unit_bytes=UNIT))
    assert one.complete and two.complete and local.complete and local.actors == 0
    assert one.units_planned == two.units_planned == local.units_planned > 10
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "two")
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "local")
    assert [r["doc_id"] for r in shard_rows(tmp_path / "two")] == [r["id"] for r in rows]
    again = run_job(job_config(inputs, tmp_path / "two", spec, unit_bytes=UNIT, actors=2))
    assert again.units_run == 0 and again.units_skipped == again.units_planned and again.complete
    again = run_job(job_config(inputs, tmp_path / "local", spec, unit_bytes=UNIT))
    assert again.units_run == 0 and again.complete
    size = inputs.stat().st_size  # (the summary's bytes to do were all found committed)
    assert (
        f"{size} input bytes to do ({size} of them in ranges found already committed"
        in (again.notes[0])
    )


def test_a_line_too_long_for_any_range_is_read_by_its_actor(ray_session, tmp_path, bpe_path):
    rows = [{"id": f"r{i}", "text": f"Zeile {i}: ein kurzer Satz."} for i in range(2000)]
    # longer than what the reader reads at once: no range boundary can be found in memory
    long_line = b'{"id": "huge", "text": "' + b"x" * 3_000_000 + b'"}'
    write_compressed(tmp_path / "big.jsonl.gz", rows[:1000], [long_line])
    with open(tmp_path / "big.jsonl.gz", "ab") as handle:  # a second gzip member: more lines
        handle.write(
            gzip.compress("".join(json.dumps(r) + "\n" for r in rows[1000:]).encode(), mtime=0)
        )
    cfg = job_config(
        tmp_path / "big.jsonl.gz",
        tmp_path / "out",
        f"bpe:{bpe_path}",
        unit_bytes=5_000,  # under the file's compressed size: it is a stream
        max_record_bytes=1_000,
        actors=2,
    )
    summary = run_job(cfg)
    assert summary.complete and summary.rejected == 1 and summary.documents == 2000
    entries = committed_entries(Output(cfg.output))
    (tail,) = [e for e in entries if e.unit.end == -1]  # read by its actor from the file
    assert tail.unit.start > 0 and tail.rejected == 1
    assert sum(e.documents for e in entries) == 2000 and len(entries) > 2


def test_a_driver_killed_mid_file_redoes_only_the_ranges_in_flight(ray_session, tmp_path, bpe_path):
    write_compressed(tmp_path / "big.jsonl.zst", records(6))
    spec, inputs = f"bpe:{bpe_path}", tmp_path / "big.jsonl.zst"
    out = tmp_path / "out"
    proc = start_run(
        inputs, out, spec, "--unit-bytes", str(UNIT), "--actors", "2", start_new_session=True
    )
    wait_for_commits(out, proc, count=5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # what the dead run's actors were still committing
    committed = len(committed_entries(Output(str(out))))
    summary = run_job(job_config(inputs, out, spec, unit_bytes=UNIT, actors=2))
    assert summary.complete and 5 <= committed < summary.units_planned
    assert summary.units_run == summary.units_planned - committed
    assert summary.units_skipped == committed
    clean = run_job(job_config(inputs, tmp_path / "clean", spec, unit_bytes=UNIT, actors=1))
    assert shard_files(out) == shard_files(tmp_path / "clean") and clean.complete


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_big_file_cut_short_keeps_its_whole_lines_and_rejects_the_rest(
    ray_session, tmp_path, bpe_path, suffix
):
    """A stream (compressed file over unit_bytes) that cannot be decompressed to its end: the
    ranges before the failure are units as usual, the last is the whole lines read so far, and
    the failure is one reject after its last line; the run completes, the driver and two actors
    write the same shards, and a rerun has nothing to do (it used to abort the whole run)."""
    rows = records()
    path = tmp_path / f"big.jsonl{suffix}"
    data = write_compressed(path, rows)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    spec = f"bpe:{bpe_path}"
    local = run_job(job_config(path, tmp_path / "local", spec, unit_bytes=UNIT))
    two = run_job(job_config(path, tmp_path / "two", spec, unit_bytes=UNIT, actors=2))
    assert local.complete and two.complete and local.units_planned == two.units_planned > 2
    assert shard_files(tmp_path / "local") == shard_files(tmp_path / "two")
    kept = shard_rows(tmp_path / "local")
    assert 0 < len(kept) < len(rows)
    assert [r["doc_id"] for r in kept] == [r["id"] for r in rows[: len(kept)]]  # a prefix
    assert local.rejected == 1 and local.docs_read == len(kept) + 1
    entries = committed_entries(Output(str(tmp_path / "local")))
    (reject,) = [r for e in entries if e.rejects for r in reads(tmp_path / "local" / e.rejects)]
    last = kept[-1]["input_offset"]
    assert data[last:].startswith(json.dumps(rows[len(kept) - 1], ensure_ascii=False).encode())
    cut = data.index(b"\n", last) + 1  # the reject is the line the damage cut, after the last
    assert reject["offset"] == cut  # (a range after the first counts no lines: line None)
    why = "Compressed file ended" if suffix == ".gz" else "Truncated compressed stream"
    assert reject["reason"].startswith(f"unreadable input after decompressed offset {cut}: ")
    assert why in reject["reason"]
    again = run_job(job_config(path, tmp_path / "two", spec, unit_bytes=UNIT, actors=2))
    assert again.units_run == 0 and again.complete


def reads(path) -> list[dict]:
    """The rows of a committed rejects file."""
    import pyarrow.ipc as ipc

    with open(path, "rb") as f:
        return ipc.open_file(f).read_all().to_pylist()


def test_a_corrupt_gzip_is_a_reject_not_a_crash(tmp_path):
    """zlib's own error (a damaged deflate stream, not a cut one) ends the unit with a reject,
    as EOFError and OSError do, instead of escaping from the reader."""
    import random
    import zlib

    raw = "".join(json.dumps(r) + "\n" for r in records(1)).encode()
    packed = bytearray(gzip.compress(raw, mtime=0))
    rng = random.Random(0)
    for _ in range(200):  # (random bytes: here an invalid back-reference distance)
        packed[rng.randrange(20, len(packed) - 20)] = rng.randrange(256)
    with pytest.raises(zlib.error):
        gzip.decompress(bytes(packed))
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(packed))
    opts = ReadOptions()
    (unit,) = plan_units([str(path)], opts)
    rejects = [r for b in read_unit(unit, opts, None) for r in b.rejects]
    assert rejects[-1].reason.startswith("unreadable input after decompressed offset ")
    assert "zlib.error: Error -3 while decompressing data" in rejects[-1].reason


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_a_stream_counts_its_compressed_bytes_and_starts_ray_only_when_it_pays(
    tmp_path, bpe_path, suffix
):
    """Each range of a stream stands for the compressed bytes read for it (they add up to the
    file), so the driver's rate projects the stream's work in the bytes the plan counts, and a
    stream no longer starts Ray at once whatever `ray_after_seconds` says (a 27 MB .zst took
    6.3 s with Ray started for nothing, 1.7 s without)."""
    from pipeline.tokenize.feed import WorkFeed

    path = tmp_path / f"big.jsonl{suffix}"
    write_compressed(path, records())
    opts = ReadOptions(unit_bytes=UNIT)
    todo = plan_units([str(path)], opts)
    work = list(WorkFeed(todo, set(), opts, None))
    assert len(work) > 2 and all(w.planned_bytes is not None for w in work)
    assert sum(w.planned_bytes for w in work) == path.stat().st_size
    assert sum(w.planned_bytes > 0 for w in work) > 1  # (ranges cut from one read share it)
    resumed = WorkFeed(todo, {w.unit.unit_id for w in work[:2]}, opts, None)
    assert [w.unit for w in resumed] == [w.unit for w in work[2:]]
    assert resumed.skipped_bytes == work[0].planned_bytes + work[1].planned_bytes
    cfg = job_config(path, tmp_path / "out", f"bpe:{bpe_path}", unit_bytes=UNIT, local_bytes=0)
    summary = run_job(cfg.model_copy(update={"ray_after_seconds": 3600}))
    assert summary.complete and summary.actors == 0
    assert summary.notes[0].startswith("ran in the driver process (")


def test_a_stream_whose_first_line_is_longer_than_any_range_is_kept_by_the_rerun(
    tmp_path, bpe_path
):
    """Its reader hands the whole file over as one range (0, -1): the very unit a whole-file unit
    of it is. That entry was taken for one of an earlier plan, so every rerun uncommitted and
    redid it, listed the file as changed, and `--on-input-change refuse` refused untouched
    inputs."""
    rows = [{"id": f"d{i}", "text": f"Satz {i}: kurz."} for i in range(200)]
    noise = " ".join(f"{(i * 2654435761) % 2**32:x}" for i in range(130_000)).encode()
    long_line = b'{"id": "huge", "text": "' + noise + b'"}'  # no cut before its end
    write_compressed(tmp_path / "big.jsonl.gz", [], [long_line])
    with open(tmp_path / "big.jsonl.gz", "ab") as handle:
        handle.write(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0))
    cfg = job_config(
        tmp_path / "big.jsonl.gz",
        tmp_path / "out",
        f"bpe:{bpe_path}",
        unit_bytes=2_000,
        max_record_bytes=3_000,
    )
    first = run_job(cfg)
    (entry,) = committed_entries(Output(cfg.output))
    assert (entry.unit.start, entry.unit.end) == (0, -1)
    assert first.complete and first.documents == 200 and first.rejected == 1
    files = shard_files(cfg.output)
    again = run_job(cfg.model_copy(update={"on_input_change": "refuse"}))
    assert again.complete and again.units_skipped == 1 and again.units_run == 0
    assert again.inputs_changed == [] and again.units_uncommitted == 0
    assert shard_files(cfg.output) == files


def test_a_stream_whose_file_is_removed_while_it_is_cut_fails_the_run_naming_it(
    tmp_path, bpe_path, monkeypatch
):
    """The feed's reader could not open the file any more: a traceback (FileNotFoundError,
    exit 1); now UnitFailed naming the file (exit 3), and the rerun plans the inputs as they
    are."""
    from pipeline.errors import UnitFailed
    from pipeline.tokenize import feed as feed_module

    (tmp_path / "in").mkdir()
    write_compressed(tmp_path / "in" / "big.jsonl.zst", records(copies=1))
    cfg = job_config(
        tmp_path / "in" / "*.zst", tmp_path / "out", f"bpe:{bpe_path}", unit_bytes=UNIT
    )
    real = feed_module.iter_ranges

    def removed_first(stream, *args, **kwargs):
        os.remove(tmp_path / "in" / "big.jsonl.zst")
        return real(stream, *args, **kwargs)

    monkeypatch.setattr(feed_module, "iter_ranges", removed_first)
    with pytest.raises(UnitFailed, match=r"big\.jsonl\.zst .*FileNotFoundError"):
        run_job(cfg)


def test_the_held_blocks_cut_where_one_buffer_would():
    """The reader keeps decompressed blocks as read and searches each range's end across them,
    skipping what an earlier search covered: every cut, for random lines, blocks and range
    sizes, is the one a single buffer searched from the nominal end gives."""
    import random

    from pipeline.tokenize.inputs.streams import _Held

    rng = random.Random(5)
    for _ in range(300):
        lines = [b"x" * rng.choice([0, 1, 2, 7, 40, 300]) for _ in range(rng.randrange(1, 60))]
        data = b"".join(line + b"\n" for line in lines)
        unit = rng.choice([1, 2, 5, 16, 100, 1000])
        held, start, at, cuts = _Held(), 0, 0, []
        while at < len(data):
            size = rng.choice([1, 3, 8, 64, 500])
            held.add(data[at : at + size])
            at += size
            while (cut := held.cut(start, unit)) is not None:
                cuts.append(held.take(cut))
                start += cut
        want, pos = [], 0
        while True:  # a single buffer: the newline at or after each multiple of `unit`
            nominal = (pos // unit + 1) * unit
            nl = data.find(b"\n", nominal - 1)
            if nominal > len(data) or nl < 0:
                break
            want.append(data[pos : nl + 1])
            pos = nl + 1
        assert cuts == want and held.take(held.size) == data[pos:]
