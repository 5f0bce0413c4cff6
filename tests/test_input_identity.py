"""Input identity (issue 17, input side): a unit's id changes exactly when the bytes it covers may
have changed, one file reached two ways is one unit, the job's output is never its input, planning is
linear in the bytes it scans, literal names with glob characters are files, special files say what
they are, and unusable document ids are never silently replaced."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.tokenize.inputs import (
    ReadOptions,
    current_identity,
    expand,
    lines,
    plan_units,
    read_unit,
)
from pipeline.tokenize.inputs.expand import remote_identity
from schemas.records import LedgerEntry, WorkUnit

from .helpers import LANGS


def ids(units: list[WorkUnit]) -> dict[str, list[str]]:
    """url -> unit ids of that url, in order."""
    out: dict[str, list[str]] = {}
    for unit in units:
        out.setdefault(unit.url, []).append(unit.unit_id)
    return out


def real(path) -> str:
    return os.path.realpath(path)


@pytest.fixture
def corpus(tmp_path, sample_dir):
    """A copy of the sample corpus (several units per file at OPTS) in tmp_path/in."""
    src = tmp_path / "in"
    src.mkdir()
    for lang in LANGS:
        shutil.copyfile(sample_dir / f"{lang}.jsonl", src / f"{lang}.jsonl")
    return src


OPTS = ReadOptions(unit_bytes=100_000)


# --- WorkUnit.version ---------------------------------------------------------------------------


def legacy_unit_id(unit: WorkUnit) -> str:
    """unit_id as computed before `version` existed."""
    key = json.dumps(
        [
            unit.url,
            unit.fmt,
            unit.compression,
            unit.start,
            unit.end,
            unit.size,
            unit.etag,
            unit.whole_file_text,
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def test_version_enters_the_id_only_when_set_and_old_entries_still_read():
    unit = WorkUnit("s3://b/in/en.jsonl", "jsonl", None, 0, 200_000, 623_241, "e1a2")
    assert unit.version == ""
    assert unit.unit_id == legacy_unit_id(unit)
    assert "version" not in unit.describe()  # ledger entries of unversioned units are unchanged
    versioned = WorkUnit(
        "s3://b/in/en.jsonl", "jsonl", None, 0, 200_000, 623_241, "e1a2", False, "v"
    )
    assert versioned.unit_id != unit.unit_id
    assert versioned.describe()["version"] == "v"
    assert WorkUnit.from_dict(versioned.describe()) == versioned
    old = {k: v for k, v in unit.describe().items()}
    assert WorkUnit.from_dict(old) == unit
    entry = {
        "unit_id": unit.unit_id,
        "unit": old,
        "config_hash": "c" * 16,
        "shard": "shards/x.arrow",
        "shard_checksum": "0",
        "docs_read": 0,
        "documents": 0,
        "rejected": 0,
        "tokens": 0,
        "bytes": 0,
        "tokenizer": {},
        "schema_version": 1,
    }
    read = LedgerEntry.from_json(entry)
    assert read.unit == unit and read.unit.unit_id == entry["unit_id"]
    assert read.to_json()["unit"] == old


def local_version(path) -> str:
    st = os.stat(path)
    with open(path, "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()[:16]
    return f"mtime_ns={st.st_mtime_ns};sha256={sha}"


def test_local_units_carry_mtime_and_content_hash_and_replans_keep_their_ids(corpus):
    a = plan_units([str(corpus / "*.jsonl")], OPTS)
    b = plan_units([str(corpus / "*.jsonl")], OPTS)
    assert [u.describe() for u in a] == [u.describe() for u in b]
    assert sorted(ids(a)) == [real(corpus / f"{lang}.jsonl") for lang in LANGS]
    assert all(len(v) >= 4 for v in ids(a).values())
    for unit in a:
        assert unit.version == local_version(unit.url)
        assert unit.etag == ""
    assert len({u.unit_id for u in a}) == len(a)


def test_appending_lines_gives_the_file_new_ids_and_leaves_other_files_alone(corpus):
    before = ids(plan_units([str(corpus / "*.jsonl")], OPTS))
    with open(corpus / "de.jsonl", "a", encoding="utf-8") as handle:
        for i in range(5):
            handle.write(json.dumps({"id": f"new{i}", "text": f"appended {i}"}) + "\n")
    after = ids(plan_units([str(corpus / "*.jsonl")], OPTS))
    changed = real(corpus / "de.jsonl")
    assert set(after[changed]).isdisjoint(before[changed])
    assert {k: v for k, v in after.items() if k != changed} == {
        k: v for k, v in before.items() if k != changed
    }


def test_a_same_size_edit_with_the_old_mtime_gives_new_ids(corpus):
    path = corpus / "en.jsonl"
    st = os.stat(path)
    before = ids(plan_units([str(path)], OPTS))[real(path)]
    data = bytearray(path.read_bytes())
    at = data.index(b'"text": "') + len(b'"text": "')
    data[at] = ord("Z") if data[at] != ord("Z") else ord("Y")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    after = ids(plan_units([str(path)], OPTS))[real(path)]
    assert len(after) == len(before) and set(after).isdisjoint(before)


def test_touch_gives_new_ids(corpus):
    path = corpus / "ru.jsonl"
    before = ids(plan_units([str(path)], OPTS))[real(path)]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = ids(plan_units([str(path)], OPTS))[real(path)]
    assert len(after) == len(before) and set(after).isdisjoint(before)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # back to the old mtime: the old ids
    assert ids(plan_units([str(path)], OPTS))[real(path)] == before


def test_current_identity_tells_whether_a_unit_was_planned_from_the_current_file(corpus):
    units = plan_units([str(corpus / "*.jsonl")], OPTS)
    assert all(current_identity(u.url) == (u.size, u.etag, u.version) for u in units)
    with open(corpus / "zh.jsonl", "ab") as handle:
        handle.write(b'{"text": "more"}\n')
    changed = {u.url for u in units if current_identity(u.url) != (u.size, u.etag, u.version)}
    assert changed == {real(corpus / "zh.jsonl")}


def test_files_over_the_hash_limit_are_versioned_by_mtime_only(corpus, monkeypatch):
    assert expand.HASH_MAX_BYTES == 8 << 20
    monkeypatch.setattr(expand, "HASH_MAX_BYTES", 420_000)
    units = plan_units([str(corpus / "en.jsonl"), str(corpus / "zh.jsonl")], OPTS)
    versions = {u.url: u.version for u in units}
    en, zh = real(corpus / "en.jsonl"), real(corpus / "zh.jsonl")
    assert versions[en] == f"mtime_ns={os.stat(en).st_mtime_ns}"  # 623241 bytes: not hashed
    assert versions[zh] == local_version(zh)  # 418106 bytes: hashed


def test_every_format_stamps_the_version(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b", "c"]}), tmp_path / "t.parquet", row_group_size=1)
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    (tmp_path / "t.jsonl.gz").write_bytes(b"")
    for opts in (ReadOptions(), ReadOptions(text_mode="file")):
        units = plan_units([str(tmp_path / "t.*")], opts)
        assert len(units) == 3  # (the Parquet file's three small row groups are one unit)
        assert all(u.version == local_version(u.url) for u in units)


# --- object stores ------------------------------------------------------------------------------


def test_remote_identity_from_fsspec_info():
    assert remote_identity({"ETag": '"abc"', "VersionId": None}) == ("abc", "")
    assert remote_identity({"ETag": '"abc"'}) == ("abc", "")
    assert remote_identity({"ETag": '"abc"', "VersionId": "null"}) == ("abc", "")
    assert remote_identity({"ETag": '"abc"', "VersionId": "3HL4k"}) == ("abc", "version_id=3HL4k")
    assert remote_identity({"etag": "0x8D", "version_id": "2024-01-01T00:00:00Z"}) == (
        "0x8D",
        "version_id=2024-01-01T00:00:00Z",
    )
    assert remote_identity({"mtime": 1700000000.5}) == ("", "mtime=1700000000.5")
    assert remote_identity({}) == ("", "")


def _client(s3):
    opts = s3.storage_options
    return boto3.client(
        "s3",
        endpoint_url=opts["endpoint_url"],
        aws_access_key_id=opts["key"],
        aws_secret_access_key=opts["secret"],
        region_name="us-east-1",
    )


def test_s3_units_use_the_version_id_of_a_versioned_bucket_and_none_otherwise(s3):
    client = _client(s3)
    client.create_bucket(Bucket="ident-plain")
    client.create_bucket(Bucket="ident-versioned")
    client.put_bucket_versioning(
        Bucket="ident-versioned", VersioningConfiguration={"Status": "Enabled"}
    )
    body = b'{"text": "one"}\n{"text": "two"}\n'
    for bucket in ("ident-plain", "ident-versioned"):
        client.put_object(Bucket=bucket, Key="in/a.jsonl", Body=body)
    plain = plan_units(["s3://ident-plain/in/*.jsonl"], OPTS, s3.storage_options)
    etag = client.head_object(Bucket="ident-plain", Key="in/a.jsonl")["ETag"].strip('"')
    assert [(u.url, u.etag, u.version) for u in plain] == [
        ("s3://ident-plain/in/a.jsonl", etag, "")
    ]
    assert plain[0].unit_id == legacy_unit_id(plain[0])  # ids of unversioned objects unchanged

    aware = {**s3.storage_options, "version_aware": True}
    first = client.head_object(Bucket="ident-versioned", Key="in/a.jsonl")["VersionId"]
    for pattern in ("s3://ident-versioned/in/*.jsonl", "s3://ident-versioned/in/a.jsonl"):
        units = plan_units([pattern], OPTS, aware)
        assert [u.version for u in units] == [f"version_id={first}"]
    client.put_object(Bucket="ident-versioned", Key="in/a.jsonl", Body=body)  # same bytes
    second = client.head_object(Bucket="ident-versioned", Key="in/a.jsonl")["VersionId"]
    assert second != first
    again = plan_units(["s3://ident-versioned/in/a.jsonl"], OPTS, aware)
    assert [u.version for u in again] == [f"version_id={second}"]
    assert again[0].unit_id != units[0].unit_id
    assert current_identity(units[0].url, aware) == (again[0].size, again[0].etag, again[0].version)
    assert current_identity(plain[0].url, s3.storage_options) == (plain[0].size, etag, "")


# --- canonical paths ----------------------------------------------------------------------------


def test_a_symlinked_folder_and_the_real_folder_plan_each_file_once(corpus, tmp_path):
    (tmp_path / "alias").symlink_to(corpus, target_is_directory=True)
    both = plan_units([str(tmp_path / "alias" / "*.jsonl"), str(corpus / "*.jsonl")], OPTS)
    alone = plan_units([str(corpus / "*.jsonl")], OPTS)
    assert sorted(ids(both)) == [real(corpus / f"{lang}.jsonl") for lang in LANGS]
    assert [u.describe() for u in both] == [u.describe() for u in alone]
    via_link = plan_units([str(tmp_path / "alias" / "*.jsonl")], OPTS)
    assert [u.describe() for u in via_link] == [u.describe() for u in alone]


def test_a_symlink_given_by_name_plans_the_targets_canonical_path(corpus, tmp_path):
    (tmp_path / "link.jsonl").symlink_to(corpus / "en.jsonl")
    units = plan_units([str(tmp_path / "link.jsonl"), str(corpus / "en.jsonl")], OPTS)
    assert set(ids(units)) == {real(corpus / "en.jsonl")}
    assert units == plan_units([str(corpus / "en.jsonl")], OPTS)


def test_a_link_name_tells_the_format_of_a_target_without_a_suffix(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "9f2c").write_bytes(b'{"id": "x", "text": "from a blob"}\n')
    (tmp_path / "train.jsonl").symlink_to(blobs / "9f2c")
    units = plan_units([str(tmp_path / "*.jsonl")], ReadOptions())
    assert [(u.url, u.fmt) for u in units] == [(real(blobs / "9f2c"), "jsonl")]
    batches = list(read_unit(units[0], ReadOptions()))
    assert [t for b in batches for t in b.texts] == ["from a blob"]


# --- the output is never an input ---------------------------------------------------------------


def _output_inside(folder):
    """A committed-looking output folder `folder/out` next to one real input."""
    (folder / "data.json").write_text('{"text": "input"}\n')
    out = folder / "out"
    (out / "ledger").mkdir(parents=True)
    (out / "runs").mkdir()
    (out / "job.json").write_text('{"job": 1}\n')
    (out / "_lease.json").write_text('{"owner": "x"}\n')
    (out / "ledger" / "abc.0123.json").write_text('{"unit_id": "abc"}\n')
    (out / "runs" / "r1.json").write_text('{"run": 1}\n')
    return out


def test_files_under_the_output_are_never_planned(tmp_path, caplog):
    out = _output_inside(tmp_path)
    caplog.set_level(logging.WARNING, logger="tokenmill")
    for pattern, dropped in (("*.json", 0), ("**/*.json", 4), ("out/*.json", 2)):
        caplog.clear()
        if pattern.startswith("out/"):
            with pytest.raises(InputError) as err:
                plan_units([str(tmp_path / pattern)], ReadOptions(), exclude=[str(out)])
            assert "matches no files" in str(err.value)
            assert f"2 file(s) under the output {real(out)}" in str(err.value)
            continue
        units = plan_units([str(tmp_path / pattern)], ReadOptions(), exclude=[str(out)])
        assert [u.url for u in units] == [real(tmp_path / "data.json")]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if dropped:
            assert warnings == [
                f"input {str(tmp_path / pattern)!r}: skipping {dropped} file(s) under the output "
                f"{real(out)}, which is never an input"
            ]
        else:
            assert warnings == []


def test_the_output_is_compared_in_canonical_form(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    out = _output_inside(work)
    (tmp_path / "alias").symlink_to(work, target_is_directory=True)
    (tmp_path / "out-link").symlink_to(out, target_is_directory=True)
    for exclude in (str(out), str(tmp_path / "out-link"), str(tmp_path / "alias" / "out") + "/"):
        units = plan_units(
            [str(tmp_path / "alias" / "**" / "*.json")], ReadOptions(), exclude=[exclude]
        )
        assert [u.url for u in units] == [real(work / "data.json")]
    # without the exclusion the same glob reads the output back (what issue 17 found)
    units = plan_units([str(tmp_path / "alias" / "**" / "*.json")], ReadOptions())
    assert len(units) == 5


def test_remote_outputs_are_excluded_by_protocol_and_path():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/ident/in/a.jsonl", b'{"text": "a"}\n')
    fs.pipe_file("/ident/in/out/ledger/u.json", b"{}\n")
    fs.pipe_file("/ident/in/out/job.json", b"{}\n")
    try:
        units = plan_units(
            ["memory://ident/in/**/*.json*"], ReadOptions(), exclude=["memory://ident/in/out/"]
        )
        assert [u.url for u in units] == ["memory:///ident/in/a.jsonl"]
        with pytest.raises(InputError, match="matches no files .*under the output"):
            plan_units(
                ["memory://ident/in/out/*.json"], ReadOptions(), exclude=["memory://ident/in/out"]
            )
    finally:
        fs.rm("/ident", recursive=True)


# --- linear planning ----------------------------------------------------------------------------


class CountingFS:
    """An fsspec-like filesystem whose files count the bytes and calls of every read()."""

    def __init__(self):
        self.bytes_read = 0
        self.reads = 0

    def open(self, path, mode="rb"):
        fs = self
        raw = open(path, mode)  # noqa: SIM115  (closed by the wrapper's __exit__)

        class Counting:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                raw.close()

            def seek(self, pos, whence=0):
                return raw.seek(pos, whence)

            def read(self, n=-1):
                data = raw.read(n)
                fs.reads += 1
                fs.bytes_read += len(data)
                return data

        return Counting()


def test_a_file_without_newlines_is_read_once_whatever_the_unit_size(tmp_path):
    path = tmp_path / "zeros.jsonl"
    size = 6 << 20
    path.write_bytes(b"\0" * size)
    for unit_bytes in (1 << 20, 64 << 10, 4 << 10):
        fs = CountingFS()
        assert lines.aligned_bounds(fs, str(path), size, unit_bytes) == [0, size]
        assert fs.bytes_read <= size  # once, not once per nominal boundary (1535 of them at 4 KiB)
        assert fs.reads <= size // lines.READ_BLOCK + 2


def test_long_lines_spanning_many_boundaries_are_read_once(tmp_path):
    path = tmp_path / "long.jsonl"
    data = b"\0" * (3 << 20) + b"\n" + b"x" * (2 << 20) + b"\n" + b"short\n" * 1000
    path.write_bytes(data)
    fs = CountingFS()
    bounds = lines.aligned_bounds(fs, str(path), len(data), 16 << 10)
    first, second = (3 << 20) + 1, (3 << 20) + 1 + (2 << 20) + 1
    assert bounds[:3] == [0, first, second] and bounds[-1] == len(data)
    assert fs.bytes_read <= len(data)


def reference_bounds(data: bytes, unit_bytes: int) -> list[int]:
    """The definition: each nominal boundary moves to just after the next newline at or after
    nominal - 1; duplicates and the end are dropped."""
    bounds = [0]
    for nominal in range(unit_bytes, len(data), unit_bytes):
        nl = data.find(b"\n", nominal - 1)
        pos = len(data) if nl < 0 else nl + 1
        if bounds[-1] < pos < len(data):
            bounds.append(pos)
    return [*bounds, len(data)]


@pytest.mark.parametrize("seed", range(6))
def test_aligned_bounds_match_the_definition(tmp_path, monkeypatch, seed):
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(lines, "READ_BLOCK", rng.choice([7, 64, 1000]))
    parts = []
    for _ in range(rng.randint(0, 60)):
        parts.append(b"a" * rng.choice([0, 1, 5, 50, 300, 2000]) + b"\n")
    data = b"".join(parts) + (b"tail" if rng.random() < 0.5 else b"")
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    for unit_bytes in (1, 2, 3, 10, 64, 333, 5000):
        fs = CountingFS()
        assert lines.aligned_bounds(fs, str(path), len(data), unit_bytes) == reference_bounds(
            data, unit_bytes
        ), (seed, unit_bytes)
        assert fs.bytes_read <= len(data)


# --- literal names and special files ------------------------------------------------------------


def test_a_name_with_glob_characters_that_exists_is_that_file(tmp_path):
    (tmp_path / "a[1].jsonl").write_text('{"text": "literal"}\n')
    (tmp_path / "a1.jsonl").write_text('{"text": "glob match"}\n')
    (tmp_path / "what?.jsonl").write_text('{"text": "question"}\n')
    units = plan_units([str(tmp_path / "a[1].jsonl")], ReadOptions())
    assert [u.url for u in units] == [real(tmp_path / "a[1].jsonl")]
    units = plan_units([str(tmp_path / "what?.jsonl")], ReadOptions())
    assert [u.url for u in units] == [real(tmp_path / "what?.jsonl")]
    units = plan_units([str(tmp_path / "a[0-9].jsonl")], ReadOptions())  # not a name: a glob
    assert [u.url for u in units] == [real(tmp_path / "a1.jsonl")]


def test_a_folder_is_named_by_its_files_and_double_star_takes_all_of_them(s3, tmp_path, caplog):
    """A folder given as an input is an error that says how to name its files; `folder/**`
    takes every file under it, at any depth, without warning about the folders on the way."""
    (tmp_path / "in" / "a" / "b").mkdir(parents=True)
    for name in ("one.jsonl", "a/two.jsonl", "a/b/three.jsonl"):
        (tmp_path / "in" / name).write_text(json.dumps({"text": name}) + "\n")
    with pytest.raises(
        InputError, match=r"is a directory: name its files, e\.g\. '.*/in/\*\.jsonl'"
    ):
        plan_units([str(tmp_path / "in")], ReadOptions())
    s3.create_bucket("folders")
    s3.filesystem().put(str(tmp_path / "in"), "folders/in", recursive=True)
    caplog.set_level(logging.WARNING, logger="tokenmill")
    for root, opts in ((str(tmp_path / "in"), None), ("s3://folders/in", s3.storage_options)):
        units = plan_units([f"{root}/**"], ReadOptions(), storage_options=opts)
        names = sorted(u.url.split("/in/")[-1] for u in units)
        assert names == ["a/b/three.jsonl", "a/two.jsonl", "one.jsonl"], root
    assert "skipping" not in caplog.text


def test_special_files_say_what_they_are(tmp_path, caplog):
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "gone.jsonl").symlink_to(tmp_path / "nowhere")
    (tmp_path / "ok.jsonl").write_text('{"text": "ok"}\n')
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock.jsonl"))
        has_socket = True
    except OSError:  # a path too long for AF_UNIX
        has_socket = False
    try:
        expected = {
            "zero.jsonl": "is not a regular file (character device)",
            "fifo.jsonl": "is not a regular file (FIFO)",
            "dir.jsonl": f"is a directory: name its files, e.g. '{tmp_path / 'dir.jsonl'}/*.jsonl',"
            f" or '{tmp_path / 'dir.jsonl'}/**' for every file under it",
            "gone.jsonl": "is a broken or looping symlink",
            "nope.jsonl": "does not exist",
        }
        if has_socket:
            expected["sock.jsonl"] = "is not a regular file (socket)"
        for name, what in expected.items():
            with pytest.raises(InputError) as err:
                plan_units([str(tmp_path / name)], ReadOptions())
            assert str(err.value) == f"input {str(tmp_path / name)!r} {what}"
        caplog.set_level(logging.WARNING, logger="tokenmill")
        units = plan_units([str(tmp_path / "*.jsonl")], ReadOptions())
        assert [u.url for u in units] == [real(tmp_path / "ok.jsonl")]
        for name, kind in (
            ("zero.jsonl", "a character device"),
            ("fifo.jsonl", "a FIFO"),
            ("dir.jsonl", "a directory"),
            ("gone.jsonl", "a broken or looping symlink"),
            *((("sock.jsonl", "a socket"),) if has_socket else ()),
        ):
            assert f"{tmp_path / name} ({kind})" in caplog.text
    finally:
        sock.close()


# --- ids that are not strings -------------------------------------------------------------------


def read_all(units, opts):
    docs = []
    for unit in units:
        for batch in read_unit(unit, opts):
            docs.extend(zip(batch.doc_ids, batch.texts, strict=True))
    return docs


def test_non_string_ids_get_hash_ids_with_one_warning_per_unit(tmp_path, caplog):
    records = [
        {"id": "s1", "text": "a"},
        {"id": 7, "text": "b"},
        {"id": [1, 2], "text": "c"},
        {"id": None, "text": "d"},
        {"id": {"k": 1}, "text": "e"},
        {"text": "f"},
        {"id": 1.5, "text": "g"},
        {"id": True, "text": "h"},
    ]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    caplog.set_level(logging.WARNING, logger="tokenmill")
    units = plan_units([str(path)], ReadOptions())
    docs = read_all(units, ReadOptions())
    assert [d[1] for d in docs] == list("abcdefgh")
    assert [d[0] for d in docs][:2] == ["s1", "7"]
    assert all(re.fullmatch(r"[0-9a-f]{24}", d[0]) for d in docs[2:])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{real(path)}: 4 records have a non-string id field 'id' (first at line 3, a list); "
        "they get hash ids"
    ]


def test_non_string_id_warnings_name_the_unit_and_the_first_offset(tmp_path, caplog):
    first = b'{"id": "ok", "text": "' + b"x" * 100 + b'"}\n'
    path = tmp_path / "split.jsonl"
    path.write_bytes(first * 3 + b'{"id": 2.5, "text": "y"}\n' + b'{"id": false, "text": "z"}\n')
    caplog.set_level(logging.WARNING, logger="tokenmill")
    opts = ReadOptions(unit_bytes=len(first) * 2)
    units = plan_units([str(path)], opts)
    assert [(u.start, u.end) for u in units] == [
        (0, len(first) * 2),
        (len(first) * 2, path.stat().st_size),
    ]
    read_all(units, opts)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{real(path)} (bytes {units[1].start}..{units[1].end}): 2 records have a non-string id "
        f"field 'id' (first at offset {len(first) * 3}, a float); they get hash ids"
    ]


def test_parquet_non_string_ids_are_reported_by_row(tmp_path, caplog):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "id": [1.0, None, 3.5]}), path)
    caplog.set_level(logging.WARNING, logger="tokenmill")
    docs = read_all(plan_units([str(path)], ReadOptions()), ReadOptions())
    assert [d[1] for d in docs] == ["a", "b", "c"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{real(path)} (row group 0): 2 records have a non-string id field 'id' "
        "(first at row 0, a float); they get hash ids"
    ]
