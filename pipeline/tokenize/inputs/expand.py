"""Finding input files: every pattern (a glob, or a name that exists literally) becomes regular
files, each under one canonical URL and with what identifies its current version.

- A local path is canonicalised with `os.path.realpath`, so one file reached two ways (a symlinked
  folder and the real one, a symlink given by name) is one input. Remote URLs are
  `protocol://path` as fsspec normalises them.
- Nothing under an `exclude` prefix (the job's output) is ever an input.
- A folder named literally that `datasets` `save_to_disk` wrote (a Dataset, or a DatasetDict and all
  its splits) stands for the data files its state.json lists (hf_disk.py); any other folder is an
  error, and folders a glob matches are skipped with a warning.
- A local file's version is `mtime_ns=<st_mtime_ns>`, plus `;sha256=<16 hex>` of its bytes when it
  is at most HASH_MAX_BYTES (so a same-size, same-mtime edit of a small file is still seen). A
  remote file keeps its ETag in `etag`; a version id, when the store has one, is its version."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from pipeline.errors import InputError
from pipeline.output.storage import url_to_fs, with_retries
from pipeline.tokenize.inputs.hf_disk import saved_dataset_files
from pipeline.tokenize.inputs.types import InputFile

log = logging.getLogger("tokenmill")

GLOB_CHARS = "*?["
# Local files up to this size are hashed at planning: cheap next to tokenizing them, and it makes
# an in-place edit that keeps the size and mtime change the file's version (and its unit ids).
HASH_MAX_BYTES = 8 << 20
HASH_BLOCK = 1 << 20
HASH_THREADS = min(8, os.cpu_count() or 1)  # hashlib releases the GIL: small files hash in parallel
# fsspec info keys of a remote file's modification time, used only when it has no ETag/version id.
_MTIME_KEYS = ("mtime", "last_modified", "LastModified", "updated", "created")
_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
)
LINK = "broken or looping symlink"
MISSING = "missing"


def protocol_of(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def is_local(fs: Any) -> bool:
    return protocol_of(fs) in ("file", "local")


def url_of(fs: Any, path: str) -> str:
    """The canonical URL a unit records: the real path of a local file, protocol://path otherwise."""
    return os.path.realpath(path) if is_local(fs) else f"{protocol_of(fs)}://{path}"


def _with_article(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def local_kind(path: str) -> tuple[str | None, os.stat_result | None]:
    """(None, stat) for a regular file (symlinks followed), else (what it is, None): a directory,
    character/block device, FIFO, socket, broken or looping symlink, or MISSING."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            return LINK, None
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            return MISSING, None
        raise
    if stat.S_ISREG(st.st_mode):
        return None, st
    return next((name for test, name in _KINDS if test(st.st_mode)), "special file"), None


def _sha256_prefix(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
    except OSError:
        return None  # unreadable now: its units say so when read
    return digest.hexdigest()[:16]


def local_version(path: str, st: os.stat_result) -> str:
    """`mtime_ns=...`, plus `;sha256=...` of the bytes of a file of at most HASH_MAX_BYTES."""
    version = f"mtime_ns={st.st_mtime_ns}"
    if st.st_size <= HASH_MAX_BYTES:
        sha = _sha256_prefix(path)
        if sha:
            version += f";sha256={sha}"
    return version


def remote_identity(info: dict) -> tuple[str, str]:
    """(etag, version) of an object from its fsspec info: the version id when the store keeps
    versions, else (only when there is no ETag either) its modification time."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    version_id = info.get("VersionId") or info.get("version_id")
    if version_id and str(version_id) != "null":
        return etag, f"version_id={version_id}"
    if not etag:
        mtime = next((info[k] for k in _MTIME_KEYS if info.get(k) is not None), None)
        if mtime is not None:
            return etag, f"mtime={mtime}"
    return etag, ""


def is_under(url: str, prefixes: Iterable[str]) -> bool:
    return any(url == p or url.startswith(p.rstrip("/") + "/") for p in prefixes)


def canonical_prefixes(exclude: Iterable[str], storage_options: dict | None) -> list[str]:
    """The canonical URLs of the excluded prefixes (compared with the inputs' canonical URLs)."""
    out = []
    for url in exclude:
        fs, path = url_to_fs(str(url), storage_options)
        out.append(url_of(fs, path.rstrip("/") or "/"))
    return out


def _names_literally(fs: Any, path: str, pattern: str) -> bool:
    """Whether a pattern is one path: no glob characters, or an existing name that has some."""
    if not any(ch in path for ch in GLOB_CHARS):
        return True
    if is_local(fs):
        return os.path.lexists(path)
    try:
        with_retries(lambda: fs.info(path), f"stat {pattern}")
    except Exception:  # noqa: BLE001  (not an object: the glob says what it matches)
        return False
    return True


def _local_file(fs: Any, path: str, st: os.stat_result) -> InputFile:
    """A local regular file: its URL is its real path; `path` stays the name it was found under
    (a symlink's name tells its format even when the target's does not, as in blob stores)."""
    real = os.path.realpath(path)
    return InputFile(fs, path, real, st.st_size, "", None, f"mtime_ns={st.st_mtime_ns}")


def _hashed(files: list[InputFile]) -> list[InputFile]:
    """The files, local ones of at most HASH_MAX_BYTES with `;sha256=...` added to their version
    (as `local_version` gives it), hashed in threads."""
    todo = [i for i, f in enumerate(files) if is_local(f.fs) and f.size <= HASH_MAX_BYTES]
    if not todo:
        return files
    with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(todo))) as pool:
        shas = list(pool.map(lambda i: _sha256_prefix(files[i].url), todo))
    out = list(files)
    for i, sha in zip(todo, shas, strict=True):
        if sha:
            out[i] = replace(files[i], version=f"{files[i].version};sha256={sha}")
    return out


def _remote_file(fs: Any, path: str, info: dict) -> InputFile:
    etag, version = remote_identity(info)
    return InputFile(fs, path, url_of(fs, path), int(info.get("size") or 0), etag, None, version)


def _saved_dataset(fs: Any, path: str, pattern: str) -> list[InputFile] | None:
    """The data files of a `datasets` save_to_disk folder (hf_disk.py); None for another folder."""
    listed = saved_dataset_files(fs, path)
    if listed is None:
        return None
    return [f for p in listed for f in _one_path(fs, p, f"{p} (a data file of {pattern})")]


def _one_path(fs: Any, path: str, pattern: str) -> list[InputFile]:
    """The file a pattern names literally, or the data files of a `datasets` save_to_disk folder;
    an InputError says what it is when neither."""
    if is_local(fs):
        kind, st = local_kind(path)
        if kind is None:
            return [_local_file(fs, path, st)]
        info = None
    else:
        try:
            info = with_retries(lambda: fs.info(path), f"stat {pattern}")
        except FileNotFoundError:
            info, kind = None, MISSING
        else:
            kind = None if info.get("type") == "file" else str(info.get("type") or "unknown")
            if kind is None:
                return [_remote_file(fs, path, info)]
    if kind == "directory" and (listed := _saved_dataset(fs, path, pattern)) is not None:
        return listed
    if kind == MISSING:
        raise InputError(f"input {pattern!r} does not exist")
    if kind == LINK:
        raise InputError(f"input {pattern!r} is a {LINK}")
    if kind == "directory":
        folder = pattern.rstrip("/")
        raise InputError(
            f"input {pattern!r} is a directory: name its files, e.g. '{folder}/*.jsonl', or "
            f"'{folder}/**' for every file under it"
        )
    raise InputError(f"input {pattern!r} is not a regular file ({kind})")


def _glob(fs: Any, path: str, pattern: str) -> tuple[list[InputFile], dict[str, tuple[str, str]]]:
    """(regular files, path -> (canonical URL, what it is) of every other match) of a glob."""
    files, others = [], {}
    if is_local(fs):
        for p in sorted(with_retries(lambda: fs.glob(path), f"glob {pattern}")):
            kind, st = local_kind(p)
            if kind is None:
                files.append(_local_file(fs, p, st))
            elif kind != MISSING:  # vanished since the listing: not an input
                others[p] = (p if kind == LINK else url_of(fs, p), kind)
        return files, others
    found = with_retries(lambda: fs.glob(path, detail=True), f"glob {pattern}")
    for p, info in sorted(found.items()):
        if info.get("type") == "file":
            files.append(_remote_file(fs, p, info))
        else:
            others[p] = (url_of(fs, p), str(info.get("type") or "unknown"))
    return files, others


def _pattern_files(
    pattern: str, storage_options: dict | None, excluded: list[str]
) -> list[InputFile]:
    """The regular files one pattern names, less those under an excluded prefix."""
    fs, path = url_to_fs(pattern, storage_options)
    if not is_local(fs):  # a cached filesystem's listings may predate the current versions
        fs.invalidate_cache()
    files, others = (
        (_one_path(fs, path, pattern), {})
        if _names_literally(fs, path, pattern)
        else _glob(fs, path, pattern)
    )
    kept = [f for f in files if not is_under(f.url, excluded)]
    # what is not a regular file, less the output folder itself and what is under it
    recursive = "**" in pattern  # (the folders it passes through are no surprise)
    skipped = [
        f"{p} ({_with_article(kind)})"
        for p, (url, kind) in others.items()
        if not is_under(url, excluded) and not (recursive and kind == "directory")
    ]
    note = ""
    if len(kept) < len(files):
        dropped = len(files) - len(kept)
        note = f"{dropped} file(s) under the output {', '.join(excluded)}, which is never an input"
        log.warning("input %r: skipping %s", pattern, note)
    if skipped:
        log.warning(
            "input %r: skipping what is not a regular file: %s", pattern, ", ".join(skipped)
        )
    if not kept:
        why = [f"skipped: {', '.join(skipped)}"] if skipped else []
        why += [f"excluded: {note}"] if note else []
        extra = f" ({'; '.join(why)})" if why else ""
        raise InputError(f"input {pattern!r} matches no files{extra}")
    return kept


def expand_inputs(
    inputs: list[str], storage_options: dict | None = None, exclude: Iterable[str] = ()
) -> list[InputFile]:
    """Every regular file the patterns name, once per canonical URL, sorted by URL, none under an
    `exclude` prefix; every pattern must name at least one (compression is left to the planner)."""
    excluded = canonical_prefixes(exclude, storage_options)
    found: dict[str, InputFile] = {}
    for pattern in inputs:
        for file in _pattern_files(pattern, storage_options, excluded):
            found.setdefault(file.url, file)
    return _hashed([found[url] for url in sorted(found)])


def current_identity(url: str, storage_options: dict | None = None) -> tuple[int, str, str]:
    """(size, etag, version) of a unit's file as it is now, computed as planning does: a unit whose
    (size, etag, version) differ was planned from another version of its file."""
    fs, path = url_to_fs(url, storage_options)
    if is_local(fs):
        st = os.stat(path)
        return st.st_size, "", local_version(path, st)
    fs.invalidate_cache(path)
    info = with_retries(lambda: fs.info(path), f"stat {url}")
    return (int(info.get("size") or 0), *remote_identity(info))
