"""Packs of small files (`pack_small_files`): many small JSON lines and text files share units, one
shard and ledger entry per pack. Every document and reject is exactly what the same files give one
unit each (ids, tokens, offsets, rejects naming their own file); provenance names each record's
file; packs are the same for any worker count; a changed or added file redoes its own pack only,
and the output equals a fresh run over the current files."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pyarrow as pa
import pytest

from pipeline.errors import LedgerError
from pipeline.loader import find_documents
from pipeline.tokenize.engine import run_job
from tests.helpers import SAMPLE_DIR, job_config, shard_files, shard_rows

UNIT = 400_000  # bytes per unit: the ~260 files below (2.8 MB) make a few dozen packs
PACK = 64_000  # files up to this size are packed
STRIP = ("timings", "lease")


def small_files(folder, copies: int = 2):
    """The sample corpus cut into small files: JSON lines files of 1-3 records (some gzipped, some
    with a bad line), text files of a few lines, and a few files too big to pack."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for copy in range(copies):
        for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for i in range(0, len(records), 3):
                part = records[i : i + 1 + n % 3]
                lines = [
                    json.dumps({**r, "id": f"{r['id']}-{copy}-{i}"}, ensure_ascii=False)
                    for r in part
                ]
                if n % 17 == 5:
                    lines.insert(1, '{"text": broken')  # a reject in the middle of a file
                body = ("\n".join(lines) + "\n").encode("utf-8")
                name = f"{path.stem}-{copy}-{i:04d}.jsonl"
                if n % 11 == 3:
                    (folder / f"{name}.gz").write_bytes(gzip.compress(body, mtime=0))
                else:
                    (folder / name).write_bytes(body)
                if n % 13 == 7:
                    text = "\n".join(r["text"].splitlines()[0] for r in part if r["text"].strip())
                    (folder / f"{path.stem}-{copy}-{i:04d}.txt").write_text(text + "\n")
                n += 1
    return folder


def run(src, out, bpe_path, **fields):
    inputs = [src / "*.jsonl", src / "*.jsonl.gz", src / "*.txt"]
    return run_job(job_config(inputs, out, f"bpe:{bpe_path}", unit_bytes=UNIT, **fields))


def ledger(out) -> dict[str, dict]:
    return {
        p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in STRIP}
        for p in sorted((out / "ledger").glob("*.json"))
    }


def rejects(out) -> list[tuple]:
    rows = []
    for path in sorted((out / "rejects").glob("*.arrow")):
        with pa.memory_map(str(path)) as mapped:
            table = pa.ipc.open_file(mapped).read_all()
        rows += [(r["source"], r["offset"], r["line"], r["reason"]) for r in table.to_pylist()]
    return sorted(rows)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, bpe_path):
    root = tmp_path_factory.mktemp("packs")
    src = small_files(root / "in")
    one_each = run(src, root / "one-each", bpe_path)
    packs = run(src, root / "packed", bpe_path, pack_small_files=PACK)
    return src, root, one_each, packs


def test_packed_files_give_exactly_the_documents_and_rejects_of_one_unit_each(packed):
    src, root, one_each, packs = packed
    files = len(list(src.iterdir()))
    assert one_each.complete and packs.complete
    assert one_each.units_planned >= files > 250  # (a few big files are cut in ranges)
    assert 10 <= packs.units_planned < files // 5  # packs, and the files too big to pack
    assert (packs.documents, packs.rejected, packs.tokens) == (
        one_each.documents,
        one_each.rejected,
        one_each.tokens,
    )
    assert packs.rejected > 5
    mine = {r["doc_id"]: r for r in shard_rows(str(root / "packed"))}
    theirs = {r["doc_id"]: r for r in shard_rows(str(root / "one-each"))}
    assert mine.keys() == theirs.keys()
    for doc_id, row in theirs.items():
        got = mine[doc_id]
        assert got["tokens"] == row["tokens"] and got["input_offset"] == row["input_offset"]
    assert rejects(root / "packed") == rejects(root / "one-each")  # each names its own file
    entries = [json.loads(p.read_text()) for p in (root / "packed" / "ledger").glob("*.json")]
    pack = next(e for e in entries if e["unit"]["fmt"] == "pack")
    assert len(pack["unit"]["members"]) > 1
    assert pack["unit"]["url"] == pack["unit"]["members"][0]["url"]


def test_each_record_s_file_is_named_by_provenance(packed):
    src, root, _, _ = packed
    ids = [r["doc_id"] for r in shard_rows(str(root / "packed"))][::5]
    found, missing = find_documents(str(root / "packed"), ids)
    alone, _ = find_documents(str(root / "one-each"), ids)
    assert not missing and len(found) == len(ids)
    where = {hit["doc_id"]: (hit["url"], hit["offset"]) for hit in alone}
    assert {hit["doc_id"]: (hit["url"], hit["offset"]) for hit in found} == where
    from pipeline.loader import TokenDataset

    ds = TokenDataset(str(root / "packed"), 512, seed=0)
    segments = [seg for i in range(0, 40, 3) for seg in ds.provenance(i)]
    hits, _ = find_documents(str(root / "one-each"), {seg["doc_id"] for seg in segments})
    where = {hit["doc_id"]: (hit["url"], hit["offset"]) for hit in hits}
    assert {seg["doc_id"]: (seg["url"], seg["offset"]) for seg in segments}.items() <= where.items()
    assert len({seg["url"] for seg in segments}) > 3  # records of several files of the packs
    for hit in found:  # a JSON lines file holds the record at that offset
        path = hit["url"]
        if ".jsonl" not in path:
            continue
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            handle.seek(hit["offset"])
            line = handle.readline().decode("utf-8")
        assert json.loads(line)["id"] == hit["doc_id"]


def test_packs_are_the_same_bytes_for_any_worker_count(packed, bpe_path, ray_session, tmp_path):
    src, root, _, packs = packed
    actors = run(src, tmp_path / "actors", bpe_path, pack_small_files=PACK, actors=2)
    helpers = run(
        src,
        tmp_path / "helpers",
        bpe_path,
        pack_small_files=PACK,
        local_bytes=0,
        driver_threads=2,
        driver_processes=True,
    )
    assert actors.units_planned == helpers.units_planned == packs.units_planned
    assert shard_files(tmp_path / "actors") == shard_files(root / "packed")
    assert shard_files(tmp_path / "helpers") == shard_files(root / "packed")
    assert ledger(tmp_path / "actors") == ledger(root / "packed") == ledger(tmp_path / "helpers")


def test_a_changed_or_added_file_redoes_its_own_pack_only(packed, bpe_path, tmp_path):
    src, root, _, packs = packed
    mine = tmp_path / "in"
    shutil.copytree(src, mine)
    out = tmp_path / "out"
    first = run(mine, out, bpe_path, pack_small_files=PACK)
    assert first.complete and first.units_run < first.docs_read // 5
    changed = sorted(mine.glob("de-0-*.jsonl"))[3]
    changed.write_text(changed.read_text(encoding="utf-8").replace("e", "E"), encoding="utf-8")
    (mine / "added-0001.jsonl").write_text('{"id": "new-1", "text": "A new small file."}\n')
    again = run(mine, out, bpe_path, pack_small_files=PACK)
    assert again.complete and again.inputs_changed == [str(changed)]
    # its own pack, and the one the new file joins (cut in two at most; a pack at the size cap can
    # shift the next one): a few units, never a full redo, whatever the temporary folder's name
    assert 1 <= again.units_run <= max(6, first.units_run // 4), (again.units_run, first.units_run)
    run(mine, tmp_path / "fresh", bpe_path, pack_small_files=PACK)
    assert shard_files(out) == shard_files(tmp_path / "fresh")
    assert ledger(out) == ledger(tmp_path / "fresh")


def test_switching_packing_on_for_an_output_is_refused_not_mixed(packed, bpe_path):
    src, root, _, _ = packed
    with pytest.raises(LedgerError):
        run(src, root / "one-each", bpe_path, pack_small_files=PACK)
    assert os.path.isdir(root / "one-each" / "ledger")


def test_where_packs_end_depends_on_each_file_not_on_its_position():
    """20,000 tiny files and a few big ones: packs stay within unit_bytes and 8,192 files, keep
    the plan's order, and inserting or removing one file changes at most two packs."""
    from pipeline.tokenize.inputs import ReadOptions, WorkUnit
    from pipeline.tokenize.inputs.packs import MEMBERS_MAX, pack_units

    opts = ReadOptions(unit_bytes=1 << 20, pack_small_files=4096)

    def unit(i: int, size: int = 300) -> WorkUnit:
        return WorkUnit(f"/corpus/f{i:06d}.jsonl", "jsonl", None, 0, -1, size, f"e{i}")

    files = [unit(i, 300 + i % 500) if i % 5000 else unit(i, 1 << 21) for i in range(20_000)]
    packs = pack_units(files, opts)
    flat = [m for p in packs for m in (p.members or (p,))]
    assert flat == files  # every file once, in order
    assert all(
        len(p.members) <= MEMBERS_MAX and p.size <= opts.unit_bytes for p in packs if p.members
    )
    assert 15 <= sum(bool(p.members) for p in packs) <= 60  # ~1,024 files a pack on average
    assert all(m.size <= 4096 for p in packs for m in p.members)  # the big files stand alone
    for edited in (files[:7000] + [unit(99_999)] + files[7000:], files[:12_345] + files[12_346:]):
        again = {p.unit_id for p in pack_units(edited, opts)}
        assert len(again - {p.unit_id for p in packs}) <= 2
    same_name = [  # one file name in 20,000 folders: the whole URL decides where packs end
        WorkUnit(f"/corpus/d{i:05d}/data.jsonl", "jsonl", None, 0, -1, 300) for i in range(20_000)
    ]
    assert 15 <= len(pack_units(same_name, opts)) <= 60


def test_a_plan_of_many_small_unpacked_files_suggests_packing(tmp_path, bpe_path):
    from pipeline.tokenize.engine import small_file_note
    from pipeline.tokenize.inputs import WorkUnit

    def units(n: int, size: int = 500) -> list[WorkUnit]:
        return [WorkUnit(f"/c/f{i}.jsonl", "jsonl", None, 0, -1, size) for i in range(n)]

    cfg = job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "o", f"bpe:{bpe_path}")
    assert small_file_note(cfg, units(999)) is None
    assert small_file_note(cfg, units(1000, 2 << 20)) is None  # not small
    note = small_file_note(cfg, units(1500))
    assert note.startswith("1500 of 1500 units are whole files under 1 MiB")
    assert "--pack-small-files 1048576" in note
    packing = job_config(
        SAMPLE_DIR / "*.jsonl", tmp_path / "o", f"bpe:{bpe_path}", pack_small_files=1
    )
    assert small_file_note(packing, units(1500)) is None


def test_only_files_that_changed_are_reported_when_packs_are_cut_otherwise():
    """A file alone in its unit that an added file's pack takes in, or a pack re-cut around its
    unchanged files, is redone but never reported as a changed input; a changed member is."""
    from types import SimpleNamespace

    from pipeline.tokenize.engine import _changed_files, _file_identity
    from pipeline.tokenize.inputs import WorkUnit

    a, b = (WorkUnit(f"/c/{n}.jsonl", "jsonl", None, 0, -1, 10, version="v1") for n in "ab")
    b2 = WorkUnit("/c/b.jsonl", "jsonl", None, 0, -1, 12, version="v2")  # b edited
    new = WorkUnit("/c/0.jsonl", "jsonl", None, 0, -1, 5)
    plan = [WorkUnit(new.url, "pack", None, 0, -1, 15, members=(new, a)), b2]
    files = {_file_identity(m) for u in plan for m in (u.members or (u,))}
    assert _changed_files(SimpleNamespace(unit=a), files) == []  # now packed with the new file
    old_pack = WorkUnit(a.url, "pack", None, 0, -1, 20, members=(a, b))
    assert _changed_files(SimpleNamespace(unit=old_pack), files) == ["/c/b.jsonl"]
    assert _changed_files(SimpleNamespace(unit=b), files) == ["/c/b.jsonl"]
    # a Parquet file's row groups packed otherwise (a newer version's plan): not a changed input
    group = WorkUnit("/c/t.parquet", "parquet", None, 3, 4, 99, version="v1")
    packed = WorkUnit("/c/t.parquet", "parquet", None, 0, 8, 99, version="v1")
    assert _changed_files(SimpleNamespace(unit=group), {_file_identity(packed)}) == []
    edited = WorkUnit("/c/t.parquet", "parquet", None, 0, 8, 99, version="v2")
    assert _changed_files(SimpleNamespace(unit=group), {_file_identity(edited)}) == [group.url]
