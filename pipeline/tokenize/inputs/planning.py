"""Planning: expand input globs into files and split every file into WorkUnits (deterministic
order: by URL, then offset), each by its format."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from pipeline.errors import InputError
from pipeline.output.storage import url_to_fs, with_retries
from pipeline.tokenize.inputs.registry import detect, get_format
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, WorkUnit

log = logging.getLogger("tokenmill")


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def url_of(fs: Any, path: str) -> str:
    """The URL a unit records: a plain path for local files, protocol://path otherwise."""
    protocol = _protocol(fs)
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _matches(fs: Any, path: str, pattern: str) -> dict[str, dict]:
    """path -> info of what a pattern names (a glob, or one path that must exist)."""
    if any(ch in path for ch in "*?["):
        return with_retries(lambda: fs.glob(path, detail=True), f"glob {pattern}")
    try:
        return {path: with_retries(lambda: fs.info(path), f"stat {pattern}")}
    except (FileNotFoundError, OSError) as exc:
        looping = _protocol(fs) in ("file", "local") and os.path.islink(path)
        if not looping and not isinstance(exc, FileNotFoundError):
            raise
        what = "is a broken or looping symlink" if looping else "does not exist"
        raise InputError(f"input {pattern!r} {what}") from exc


def expand_inputs(inputs: list[str], storage_options: dict | None) -> list[tuple[Any, str, dict]]:
    """Expand globs into sorted (fs, path, info) triples; every pattern must match a regular file."""
    found: dict[str, tuple[Any, str, dict]] = {}
    for pattern in inputs:
        fs, path = url_to_fs(pattern, storage_options)
        matches = {p: _follow_link(fs, p, info) for p, info in _matches(fs, path, pattern).items()}
        files = {p: info for p, info in matches.items() if info.get("type") == "file"}
        skipped = [
            f"{p} ({_not_a_file(info)})" for p, info in sorted(matches.items()) if p not in files
        ]
        if skipped:
            log.warning(
                "input %r: skipping what is not a regular file: %s", pattern, ", ".join(skipped)
            )
        if not files:
            extra = f" (skipped: {', '.join(skipped)})" if skipped else ""
            raise InputError(f"input {pattern!r} matches no files{extra}")
        for p, info in files.items():
            found[url_of(fs, p)] = (fs, p, info)
    return [found[k] for k in sorted(found)]


def _follow_link(fs: Any, path: str, info: dict) -> dict:
    """Listings describe a symlink itself; a link to a regular file is that file."""
    if not info.get("islink") or info.get("type") == "file":
        return info
    try:
        target = fs.info(path)
    except OSError:
        return info  # broken or looping: reported as skipped
    return {**target, "islink": True}


def _not_a_file(info: dict) -> str:
    if info.get("islink") and info.get("type") != "directory":
        return "a broken or looping symlink"
    return "a directory" if info.get("type") == "directory" else f"type {info.get('type')}"


def plan_units(
    inputs: list[str], opts: ReadOptions, storage_options: dict | None = None
) -> list[WorkUnit]:
    """Split every input into WorkUnits (deterministic order: by URL, then offset)."""
    if opts.format != "auto" and get_format(opts.format).plans_inputs:
        return get_format(opts.format).plan_inputs(inputs, opts, storage_options)
    units: list[WorkUnit] = []
    for fs, path, info in expand_inputs(inputs, storage_options):
        fmt, compression = detect(path, opts)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        file = InputFile(fs, path, url_of(fs, path), int(info.get("size") or 0), etag, compression)
        units.extend(fmt.plan_file(file, opts))
    return units


def read_unit(
    unit: WorkUnit, opts: ReadOptions, storage_options: dict | None = None
) -> Iterator[DocBatch]:
    """Stream one unit as DocBatches of bounded size, by its format."""
    return get_format(unit.fmt).read(unit, opts, storage_options)
