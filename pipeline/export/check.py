"""Verification of a written export: every file's objects (size, sha256), its documents re-read by
tokenmill's own reader and by the format's own reader (its library, when installed), compared
with the checksums taken from the shards while writing (`digest.py`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from pipeline.errors import ExportError
from pipeline.export.digest import FileDigest, combine
from pipeline.export.formats import ExportFormat, get_format
from pipeline.export.formats.base import READ_BLOCK
from pipeline.export.plan import Resolved
from pipeline.output import Output, with_retries

MANIFEST = "export.json"
INSTALL_HINT = "pip install 'tokenmill[export-check]'"


def object_problems(dest: Output, record: dict[str, Any]) -> list[str]:
    """Each object of a file exists with the size and sha256 recorded when it was written."""
    problems = []
    for obj in record["objects"]:
        name = obj["name"]

        def checksum(name: str = name) -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with dest.fs.open(dest.path(name), "rb", block_size=READ_BLOCK) as handle:
                while block := handle.read(READ_BLOCK):
                    digest.update(block)
                    size += len(block)
            return size, "sha256:" + digest.hexdigest()

        try:
            size, sha = with_retries(checksum, f"checksum {name}")
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        if (size, sha) != (obj["bytes"], obj["sha256"]):
            problems.append(
                f"{name}: {size} bytes {sha}, written as {obj['bytes']} {obj['sha256']}"
            )
    return problems


def read_back(
    arrays: Iterable[np.ndarray], yields: str, resolved: Resolved, record: dict[str, Any]
) -> list[str]:
    """Problems with what a reader gave for one file: its documents (EODs stripped) must have the
    recorded per-document digest, or its stream the recorded stream checksum."""
    digest = FileDigest()
    for ids in arrays:
        digest.add_stream(ids)
        if yields == "stream":
            continue
        if resolved.append_eod:
            if not len(ids) or int(ids[-1]) != resolved.eos_id:
                return [f"document {digest.documents} does not end with EOD {resolved.eos_id}"]
            ids = ids[:-1]
        digest.add_document(ids)
    if digest.written != record["tokens_written"]:
        return [f"{digest.written} ids read, {record['tokens_written']} written"]
    if digest.stream != record["stream"]:
        return ["the token stream differs from the one written"]
    if yields == "stream":
        return []
    if digest.documents != record["documents"]:
        return [f"{digest.documents} documents read, {record['documents']} written"]
    if digest.digest != record["digest"]:
        return ["per-document checksums differ from the shards' documents"]
    return []


@contextlib.contextmanager
def local_copies(dest: Output, names: list[str]) -> Iterator[dict[str, str]]:
    """Local paths of a file's objects: themselves when the destination is local, else copies."""
    if dest.local:
        yield {name: dest.path(name) for name in names}
        return
    with tempfile.TemporaryDirectory(prefix="tokenmill-export-check-") as tmp:
        paths = {name: os.path.join(tmp, name.replace("/", "__")) for name in names}
        for name, path in paths.items():
            with_retries(lambda n=name, p=path: dest.fs.get_file(dest.path(n), p), f"fetch {name}")
        yield paths


def checked(label: str, reader: Callable[[], list[str]]) -> list[str]:
    """A reader's problems, with a reader that fails counted as one (a format's library may raise
    anything on a malformed file)."""
    try:
        problems = reader()
    except ExportError:
        raise
    except Exception as exc:  # any failure to read a file back is a finding, not a crash
        problems = [f"{type(exc).__name__}: {exc}"]
    return [f"{label}: {p}" for p in problems]


def verify_files(
    dest: Output, fmt: ExportFormat, resolved: Resolved, records: list[dict[str, Any]], mode: str
) -> tuple[list[str], list[int], dict[str, Any]]:
    """(problems, indices of the files with one, what verified them) for every file of an export,
    then the final objects."""
    library = fmt.library_version() if mode == "all" else None
    problems: list[str] = []
    bad: list[int] = []
    for record in records:
        found = verify_file(dest, fmt, resolved, record, library)
        if found:
            bad.append(record["index"])
            problems += found
    digest = combine(r["digest"] for r in records)
    problems += fmt.check_final(resolved, dest, records, digest)
    if mode != "all":
        note = "skipped (--verify tokenmill)"
    else:
        note = library or f"not installed ({fmt.library}; {INSTALL_HINT})"
    how = {
        "tokenmill_reader": True,
        "format_reader": note,
        "format_reader_reads": fmt.library_yields,
    }
    return problems, bad, how


def verify_file(
    dest: Output, fmt: ExportFormat, resolved: Resolved, record: dict[str, Any], library: str | None
) -> list[str]:
    name = ", ".join(record["names"])
    problems = [f"{name}: {p}" for p in object_problems(dest, record)]
    problems += checked(
        f"{name}: tokenmill reader",
        lambda: read_back(fmt.read(resolved, dest, record), "documents", resolved, record),
    )
    if library and not problems:
        with local_copies(dest, record["names"]) as paths:
            problems += checked(
                f"{name}: {library}",
                lambda: read_back(
                    fmt.library_read(resolved, paths, record), fmt.library_yields, resolved, record
                ),
            )
    return problems


def verify_export(dest_url: str, storage_options: dict[str, Any] | None = None, mode: str = "all"):
    """Re-verify a finished export from its export.json alone; returns (problems, manifest)."""
    dest = Output(dest_url, storage_options)
    try:
        manifest = dest.read_json(MANIFEST)
    except FileNotFoundError as exc:
        raise ExportError(f"{dest.url} holds no finished export ({MANIFEST} is missing)") from exc
    fmt = get_format(manifest["format"])
    resolved = Resolved.from_json(manifest["options"])
    problems, _, _ = verify_files(dest, fmt, resolved, manifest["files"], mode)
    if combine(f["digest"] for f in manifest["files"]) != manifest["checksum"]["digest"]:
        problems.append("the export digest differs from its files' digests")
    return problems, manifest
