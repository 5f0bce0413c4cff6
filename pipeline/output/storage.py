"""One fsspec wrapper for every read and write: URLs, storage options, atomic commits, retries."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import StorageError
from schemas.layout import SPOOL_DIR

T = TypeVar("T")

# Keys whose values must never be printed (credentials given as storage options).
SECRET_KEYS = (
    "key",
    "secret",
    "token",
    "password",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "session_token",
    "credentials",
    "sas_token",
    "account_key",
)


# Local errors that a retry cannot fix (a symlink loop would otherwise be retried for 15 s).
PERMANENT_ERRNOS = frozenset({errno.ELOOP, errno.ENAMETOOLONG, errno.EROFS})


def redact(options: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options safe to log: credential values replaced by '***'."""

    def _clean(value: Any, key: str) -> Any:
        if any(s in key.lower() for s in SECRET_KEYS):
            return "***"
        if isinstance(value, dict):
            return {k: _clean(v, k) for k, v in value.items()}
        return value

    return {k: _clean(v, k) for k, v in (options or {}).items()}


def url_to_fs(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path for a URL (plain paths are local)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network errors that object-storage clients raise without wrapping them in OSError."""
    errors: list[type[BaseException]] = [OSError]  # TimeoutError is an OSError
    try:
        from botocore import exceptions as boto

        errors += [
            boto.EndpointConnectionError,
            boto.ConnectionClosedError,
            boto.ReadTimeoutError,
            boto.ConnectTimeoutError,
        ]
    except ImportError:
        pass
    try:
        import aiohttp

        errors.append(aiohttp.ClientConnectionError)
    except ImportError:
        pass
    return tuple(errors)


TRANSIENT_ERRORS = _transient_errors()


def with_retries(fn: Callable[[], T], what: str, attempts: int = 6, first_delay: float = 0.5) -> T:
    """Run a storage operation, retrying transient OS/network errors with exponential backoff."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
            raise
        except TRANSIENT_ERRORS as exc:  # refused/reset connections, 5xx, timeouts
            if getattr(exc, "errno", None) in PERMANENT_ERRNOS:
                raise
            if attempt == attempts:
                raise StorageError(f"{what} failed after {attempts} attempts: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


class Output:
    """An output prefix (local folder or object-storage URL) with atomic, idempotent commits."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, root = url_to_fs(self.url, self.storage_options)
        self.root = root.rstrip("/")
        self.local = is_local(self.fs)

    def __reduce__(self):  # fsspec objects are not fork/pickle-safe everywhere: rebuild remotely
        return (Output, (self.url, self.storage_options))

    def path(self, *parts: str) -> str:
        for part in parts:
            if part.startswith("/") or ".." in part.split("/"):
                raise StorageError(f"refusing path {part!r} outside the output prefix")
        return "/".join([self.root, *parts])

    def exists(self, rel: str) -> bool:
        return with_retries(lambda: self.fs.exists(self.path(rel)), f"exists {rel}")

    def list(self, rel_dir: str, suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly under rel_dir, sorted."""
        full = self.path(rel_dir)

        def _ls() -> list[str]:
            try:
                self.fs.invalidate_cache(full)
                entries = self.fs.ls(full, detail=False)
            except FileNotFoundError:
                return []
            return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

        return [
            n
            for n in with_retries(_ls, f"list {rel_dir}")
            if n.endswith(suffix) and not n.startswith(".")
        ]

    def read_bytes(self, rel: str) -> bytes:
        return with_retries(lambda: self.fs.cat_file(self.path(rel)), f"read {rel}")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a small object atomically: temp name + rename locally, one PUT on object storage."""
        dest = self.path(rel)
        if self.local:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, dest)
        else:
            with_retries(lambda: self.fs.pipe_file(dest, data), f"write {rel}")

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode())

    @contextmanager
    def spool(self) -> Iterator[str]:
        """A local scratch file path for building a file before `commit_file` (removed afterwards)."""
        if self.local:
            scratch = self.path(SPOOL_DIR)
            os.makedirs(scratch, exist_ok=True)
        else:
            scratch = tempfile.gettempdir()
        tmp = os.path.join(scratch, f"spool-{uuid.uuid4().hex}")
        try:
            yield tmp
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def commit_file(self, local_tmp: str, rel: str) -> None:
        """Publish a finished local file under `rel` in one atomic step."""
        dest = self.path(rel)
        if self.local:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(local_tmp, dest)
        else:
            with_retries(lambda: self.fs.put_file(local_tmp, dest), f"upload {rel}")

    def remove(self, rel: str, recursive: bool = False) -> None:
        full = self.path(rel)
        if self.local:
            if os.path.isdir(full):
                shutil.rmtree(full)
            elif os.path.exists(full):
                os.remove(full)
            return
        with contextlib.suppress(FileNotFoundError):
            with_retries(lambda: self.fs.rm(full, recursive=recursive), f"remove {rel}")
