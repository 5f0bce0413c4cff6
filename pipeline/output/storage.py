"""One fsspec wrapper for every read and write: URLs, storage options, atomic commits, retries."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import fsspec
import tenacity
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import StorageError, TokenmillError
from schemas.layout import SPOOL_DIR

T = TypeVar("T")
log = logging.getLogger("tokenmill")

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


# Errors that a retry cannot fix, raised at once: a missing or forbidden object, a path of the
# wrong kind, and (by errno) a symlink loop, a name too long, a read-only or full file system, an
# object too large, a request the store rejects as malformed (s3fs maps 400/412 to EINVAL), an
# operation it does not implement, a redirect to another region. Any TokenmillError is permanent
# too, which also keeps a nested with_retries from multiplying its caller's attempts.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    TokenmillError,
)
PERMANENT_ERRNOS = frozenset(
    {
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EMSGSIZE,
        errno.EINVAL,
        errno.ENOSYS,
        errno.EREMCHG,
    }
)

# The retry budget of one storage operation (`with_retries`): jittered exponential backoff ("full
# jitter": each wait is uniform in [0, min(MAX_DELAY_S, FIRST_DELAY_S * 2**n)]), at most
# DEFAULT_ATTEMPTS attempts, and no wait that would end past DEFAULT_DEADLINE_S after the first.
DEFAULT_DEADLINE_S = 60.0
DEFAULT_ATTEMPTS = 10
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0

# The S3 client's own retries, set explicitly so that one attempt of `with_retries` has a known
# bound and the deadline above bounds the whole: botocore's "standard" mode (jittered backoff
# capped at 20 s, and a retry quota, so a fleet of clients does not storm a throttling store) with
# S3_CLIENT_ATTEMPTS tries per HTTP request (waits of at most 1+2+4+8 s), inside s3fs's own loop
# of S3FS_ATTEMPTS tries per call (its default is 5; it retries timeouts, not refused
# connections). Reads streamed through `fs.open` (inputs, shards) have no outer retry, so the
# inner tries are what rides out a short outage there: 5 keeps botocore's default count.
# Left alone when the user set `config_kwargs={"retries": ...}` or AWS_MAX_ATTEMPTS/AWS_RETRY_MODE.
S3_CLIENT_ATTEMPTS = 5
S3FS_ATTEMPTS = 2
S3_PROTOCOLS = ("s3", "s3a")


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
    """The filesystem and path for a URL (plain paths are local). On S3, the client's inner
    retries are bounded (S3_CLIENT_ATTEMPTS, S3FS_ATTEMPTS) unless the user set their own."""
    protocol = fsspec.core.split_protocol(url)[0]
    options = dict(storage_options or {})
    if protocol in S3_PROTOCOLS:
        options = s3_retry_options(options)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:  # gs:// without gcsfs, az:// without adlfs, ...
        raise StorageError(f"{url}: the {protocol}:// store needs a package: {exc}") from exc
    except Exception as exc:  # an unknown protocol, a storage option the store refuses, ...
        given = f" with storage options {sorted(options)}" if storage_options else ""
        raise StorageError(
            f"{url}: cannot open the {protocol}:// store{given}: {type(exc).__name__}: {exc}"
        ) from exc
    # s3fs 2026.9 takes no `retries=` argument (it would reach AioSession and fail): an attribute.
    if protocol in S3_PROTOCOLS and hasattr(fs, "retries") and "retries" not in vars(fs):
        fs.retries = S3FS_ATTEMPTS
    return fs, path


def s3_retry_options(options: dict[str, Any]) -> dict[str, Any]:
    """Storage options for s3fs with botocore's retries set to S3_CLIENT_ATTEMPTS in "standard"
    mode, unless the user chose retries already (options or environment); never mutates options."""
    config = dict(options.get("config_kwargs") or {})
    if (
        "retries" in config
        or os.environ.get("AWS_MAX_ATTEMPTS")
        or os.environ.get("AWS_RETRY_MODE")
    ):
        return options
    config["retries"] = {"total_max_attempts": S3_CLIENT_ATTEMPTS, "mode": "standard"}
    return {**options, "config_kwargs": config}


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network errors that object-storage clients raise without wrapping them in OSError: those
    of the clients this process has loaded (an error of a client never imported cannot have been
    raised; importing botocore and aiohttp only to name their errors costs 0.17 s of start-up)."""
    errors: list[type[BaseException]] = [OSError]  # TimeoutError, ConnectionError are OSErrors
    boto, parsers = sys.modules.get("botocore.exceptions"), sys.modules.get("botocore.parsers")
    if boto is not None:
        errors += [
            boto.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
            boto.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
        ]
    if parsers is not None:
        errors.append(parsers.ResponseParserError)  # a truncated or garbled response
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        errors += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    return tuple(errors)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may fix this error: a network/OS error that is not a permanent one."""
    if isinstance(exc, PERMANENT_ERRORS) or not isinstance(exc, _transient_errors()):
        return False
    return getattr(exc, "errno", None) not in PERMANENT_ERRNOS


NO_CREDENTIALS = {  # (names: the client libraries are not imported to name their errors)
    "NoCredentialsError",  # botocore (s3://)
    "PartialCredentialsError",
    "DefaultCredentialsError",  # google.auth (gs://)
    "ClientAuthenticationError",  # azure (az://, abfs://)
}


def access_problem(exc: BaseException) -> str | None:
    """What to do about a store that refuses us (no credentials found, or access denied), or
    None for any other error."""
    if any(cls.__name__ in NO_CREDENTIALS for cls in type(exc).__mro__):
        return (
            "no credentials for the object store: set them in the environment (AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS) or pass "
            "--storage-option key=... --storage-option secret=... (endpoint_url=... for a server "
            "other than AWS)"
        )
    if isinstance(exc, PermissionError) and not isinstance(exc, TokenmillError):
        return "access denied: check the credentials and what they may read or write there"
    return None


def _log_retry(what: str, state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info(
        "%s: %s: %s (attempt %d); retrying in %.2f s",
        what,
        type(exc).__name__,
        exc,
        state.attempt_number,
        state.upcoming_sleep,
    )


def with_retries(
    fn: Callable[[], T],
    what: str,
    attempts: int | None = None,
    first_delay: float = FIRST_DELAY_S,
    *,
    deadline_s: float | None = None,
    max_delay: float = MAX_DELAY_S,
) -> T:
    """Run a storage operation, retrying transient OS/network errors (tenacity, jittered
    exponential backoff) until it succeeds, `attempts` tries are spent (DEFAULT_ATTEMPTS), or the
    next wait would end past `deadline_s` (DEFAULT_DEADLINE_S, read at call time) after the first
    try. A permanent error (`is_transient` false) is raised at once as it is (callers catch
    FileNotFoundError); giving up raises StorageError naming the operation, the attempts, the time
    spent and the cause. The total is at most the deadline plus one attempt, which the S3 client's
    bounded inner retries keep to a few seconds (`url_to_fs`)."""
    attempts = DEFAULT_ATTEMPTS if attempts is None else attempts
    deadline_s = DEFAULT_DEADLINE_S if deadline_s is None else deadline_s
    started = time.monotonic()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(deadline_s),
        wait=tenacity.wait_random_exponential(multiplier=first_delay, max=max_delay),
        before_sleep=functools.partial(_log_retry, what),
        reraise=True,
    )
    try:
        return retrying(fn)
    except Exception as exc:
        denied = access_problem(exc)
        if denied:
            raise StorageError(f"{what}: {denied} ({type(exc).__name__}: {exc})") from exc
        if not is_transient(exc):
            raise
        tries = retrying.statistics.get("attempt_number", 1)
        raise StorageError(
            f"{what} failed after {tries} attempt{'s' if tries != 1 else ''} in "
            f"{time.monotonic() - started:.1f} s (deadline {deadline_s:g} s): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


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
                # (and not kept: s3fs answers a later read's size from a cached listing, so an
                # object another process wrote after it read as missing in this one)
                self.fs.invalidate_cache(full)
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
            scratch = remote_spool_dir(self.url)
        tmp = os.path.join(scratch, f"spool-{os.getpid()}-{uuid.uuid4().hex}")
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


_SWEPT: set[str] = set()  # remote outputs' spool folders this process has swept


def remote_spool_dir(url: str) -> str:
    """This machine's scratch folder for an object-store output (its files are built here, then
    uploaded): one per output under the temporary folder. The first use in a process removes the
    files that dead processes of this machine left there (a run, helper or actor killed while it
    built a unit); a file names its process (`spool-<pid>-<id>`). Before, they stayed in the
    temporary folder for good, a unit's worth per kill, and nothing listed them."""
    scratch = os.path.join(
        tempfile.gettempdir(),
        "tokenmill-spool",
        hashlib.sha256(url.encode()).hexdigest()[:16],
    )
    os.makedirs(scratch, exist_ok=True)
    if scratch not in _SWEPT:
        _SWEPT.add(scratch)
        for name in os.listdir(scratch):
            pid = name.split("-")[1] if name.startswith("spool-") else ""
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(scratch, name))
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
