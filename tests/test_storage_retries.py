"""Storage retries (pipeline/output/storage.py): transient errors are retried with jittered
exponential backoff under a total deadline, permanent ones are raised at once, giving up is a
StorageError naming the operation, and the S3 client's own retries are bounded where tokenmill
creates the filesystem. The S3 cases run against a real local S3 server that is stopped and
restarted (a server of this module's own, so the session's `s3` fixture keeps its buckets)."""

from __future__ import annotations

import errno
import threading
import time

import pytest

from infra.s3_server import S3Server
from pipeline.errors import StorageError
from pipeline.output import storage
from pipeline.output.storage import Output, url_to_fs, with_retries

FAST = {"first_delay": 0.01, "max_delay": 0.05}


class Flaky:
    """A storage operation that fails with `error` the first `failures` calls, then returns."""

    def __init__(self, failures: float, error: BaseException | None = None, result: object = "ok"):
        self.failures = failures
        self.error = error or ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        self.result = result
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result


def test_success_is_one_call_and_returns_the_value():
    op = Flaky(0, result={"a": 1})
    assert with_retries(op, "read x") == {"a": 1}
    assert op.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        OSError(errno.EIO, "We encountered an internal error. Please try again."),  # S3 500
        OSError(errno.EBUSY, "Please reduce your request rate."),  # S3 SlowDown / 503
    ],
    ids=["reset", "timeout", "s3-500", "s3-slowdown"],
)
def test_transient_errors_are_retried_until_the_operation_succeeds(error):
    op = Flaky(3, error)
    assert with_retries(op, "write x", **FAST) == "ok"
    assert op.calls == 4


def test_botocore_connection_errors_are_transient():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    op = Flaky(1, EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert with_retries(op, "list ledger", **FAST) == "ok"
    op = Flaky(1, ReadTimeoutError(endpoint_url="http://127.0.0.1:9"))
    assert with_retries(op, "list ledger", **FAST) == "ok"


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "no such key"),
        IsADirectoryError(errno.EISDIR, "a directory"),
        FileExistsError(errno.EEXIST, "exists"),
        OSError(errno.ELOOP, "too many levels of symbolic links"),
        OSError(errno.EROFS, "read-only file system"),
        OSError(errno.EINVAL, "InvalidArgument"),  # what s3fs makes of a 400
        StorageError("refusing path '../x' outside the output prefix"),  # a nested give-up too
        ValueError("not a storage error at all"),
    ],
    ids=lambda e: (
        type(e).__name__ + (f"-{errno.errorcode[e.errno]}" if e.errno else "")
        if isinstance(e, OSError)
        else type(e).__name__
    ),
)
def test_permanent_errors_are_raised_at_once_as_they_are(error):
    op = Flaky(float("inf"), error)
    with pytest.raises(type(error)) as info:
        with_retries(op, "read x", **FAST)
    assert info.value is error  # not wrapped: callers catch FileNotFoundError and the like
    assert op.calls == 1


def test_an_output_path_outside_the_prefix_fails_without_retrying(tmp_path):
    started = time.monotonic()
    with pytest.raises(StorageError, match="outside the output prefix"):
        Output(str(tmp_path)).exists("../escape")
    assert time.monotonic() - started < 5  # was retried for ~15 s before tenacity


def test_max_attempts_bounds_the_tries_and_the_error_says_so():
    op = Flaky(float("inf"))
    with pytest.raises(StorageError) as info:
        with_retries(op, "upload shards/u1.arrow", attempts=3, deadline_s=30, **FAST)
    assert op.calls == 3
    message = str(info.value)
    assert "upload shards/u1.arrow failed after 3 attempts" in message
    assert "ConnectionResetError" in message and "connection reset by peer" in message
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_the_deadline_bounds_the_total_time_of_an_always_failing_operation():
    op = Flaky(float("inf"))
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        with_retries(op, "list ledger", attempts=1000, first_delay=0.05, deadline_s=0.2)
    elapsed = time.monotonic() - started
    # Full-jitter waits of up to 0.05*2**n s fit a 0.2 s deadline only a few times.
    assert 1 <= op.calls <= 12, op.calls
    assert "list ledger failed after" in str(info.value)
    assert "deadline 0.2 s" in str(info.value)
    assert elapsed < 10  # a generous sanity bound, not a timing assertion


def test_the_default_deadline_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(storage, "DEFAULT_DEADLINE_S", 0.0)
    op = Flaky(float("inf"))
    with pytest.raises(StorageError, match=r"after 1 attempt in .* \(deadline 0 s\)"):
        with_retries(op, "exists x")
    assert op.calls == 1


# -- the S3 client's inner retries ---------------------------------------------------------------


def test_s3_filesystems_get_bounded_inner_retries_without_touching_the_options():
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    fs, path = url_to_fs("s3://bucket/out", options)
    assert path == "bucket/out"
    assert options == {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    assert fs.config_kwargs["retries"] == {
        "total_max_attempts": storage.S3_CLIENT_ATTEMPTS,
        "mode": "standard",
    }
    assert fs.retries == storage.S3FS_ATTEMPTS


def test_retries_the_user_chose_are_kept(monkeypatch):
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    mine = {"retries": {"max_attempts": 9, "mode": "adaptive"}, "connect_timeout": 2}
    options = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": mine}
    fs, _ = url_to_fs("s3://bucket/out", options)
    assert fs.config_kwargs == mine
    # Other client settings of the user are kept, and the bounded retries added beside them.
    fs, _ = url_to_fs("s3://bucket/out", {"config_kwargs": {"connect_timeout": 2}})
    assert fs.config_kwargs["connect_timeout"] == 2
    assert fs.config_kwargs["retries"]["total_max_attempts"] == storage.S3_CLIENT_ATTEMPTS
    # Retries set through botocore's environment are the user's choice too.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    fs, _ = url_to_fs("s3://bucket/out", {"endpoint_url": "http://127.0.0.1:9", "anon": True})
    assert "retries" not in fs.config_kwargs


def test_local_paths_are_unchanged(tmp_path):
    fs, path = url_to_fs(str(tmp_path / "out"))
    assert storage.is_local(fs) and path.endswith("/out")


# -- a real S3 server, stopped and restarted -----------------------------------------------------


@pytest.fixture(scope="module")
def own_s3():
    server = S3Server().start()
    server.create_bucket("retries")
    yield server
    server.stop()


def test_a_stopped_s3_server_gives_a_storage_error_within_the_deadline(own_s3, monkeypatch):
    output = Output("s3://retries/stopped", own_s3.storage_options)
    output.write_bytes("probe.txt", b"up")
    assert output.read_bytes("probe.txt") == b"up"
    monkeypatch.setattr(storage, "DEFAULT_DEADLINE_S", 3.0)
    own_s3.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            output.read_bytes("probe.txt")
        elapsed = time.monotonic() - started
    finally:
        own_s3.start()
        own_s3.create_bucket("retries")
    message = str(info.value)
    assert message.startswith("read probe.txt failed after ")
    assert "(deadline 3 s)" in message and "Could not connect to the endpoint URL" in message
    # The deadline plus one attempt: botocore's 5 tries wait at most 1+2+4+8 s on a refused port.
    assert elapsed < 3.0 + 30, elapsed


def test_an_s3_outage_shorter_than_the_deadline_is_ridden_out(own_s3):
    # The client's own retries set by the user (one try per request) are kept, so here every retry
    # is one of with_retries: a 5 s outage takes several.
    options = {**own_s3.storage_options, "config_kwargs": {"retries": {"total_max_attempts": 1}}}
    output = Output("s3://retries/outage", options)
    assert output.fs.config_kwargs["retries"] == {"total_max_attempts": 1}
    output.write_bytes("ledger/a.json", b"{}")
    calls = []

    def listing() -> list[str]:
        calls.append(time.monotonic())
        output.fs.invalidate_cache()
        try:
            return output.fs.ls(output.path("ledger"), detail=False)
        except FileNotFoundError:  # the restarted server has no bucket: an answer all the same
            return []

    own_s3.stop()
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(5.0)
        own_s3.start()  # a fresh moto server: what it held is gone, the endpoint answers again
        restarted.set()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        assert with_retries(listing, "list ledger", deadline_s=60) == []
    finally:
        thread.join()
        own_s3.create_bucket("retries")
    assert restarted.is_set() and len(calls) >= 2
    output.write_bytes("ledger/b.json", b"{}")
    assert output.list("ledger") == ["b.json"]


def test_an_object_store_without_credentials_is_one_line_that_says_what_to_set(
    s3, bpe_path, tmp_path, monkeypatch
):
    """No credentials anywhere: botocore's NoCredentialsError ended the command in a traceback.
    It is a StorageError (exit 2) naming the operation and the settings that give them; a
    PermissionError (s3fs's access denied) says so too. Other errors are untouched."""
    from click.testing import CliRunner

    from jobs.cli import main as cli

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    args = ["run", "--input", "s3://corpus/x.jsonl", "--output", str(tmp_path / "out")]
    args += ["--tokenizer", f"bpe:{bpe_path}", "--storage-option", f"endpoint_url={s3.endpoint}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "stat s3://corpus/x.jsonl: no credentials for the object store" in result.output
    assert "AWS_ACCESS_KEY_ID" in result.output and "NoCredentialsError" in result.output
    denied = Flaky(float("inf"), PermissionError(errno.EACCES, "no"))
    with pytest.raises(StorageError, match=r"^read x: access denied: .*PermissionError.*no"):
        with_retries(denied, "read x", **FAST)  # (at once: a StorageError is an OSError too)
    assert denied.calls == 1
    with pytest.raises(FileNotFoundError):
        with_retries(Flaky(1, FileNotFoundError(errno.ENOENT, "gone")), "read x", **FAST)


def test_a_store_that_cannot_be_opened_is_one_line_naming_the_url(monkeypatch):
    """An fsspec protocol whose package is not installed (gs:// without gcsfs) or an unknown
    protocol: a StorageError naming the URL, not fsspec's ImportError / ValueError traceback."""
    from fsspec.registry import known_implementations

    monkeypatch.setitem(
        known_implementations,
        "nopkg",
        {"class": "tokenmill_no_such_pkg.FileSystem", "err": "Install tokenmill_no_such_pkg"},
    )
    with pytest.raises(StorageError, match=r"^nopkg://b/x: the nopkg:// store needs a package: "):
        url_to_fs("nopkg://b/x")
    with pytest.raises(StorageError, match=r"^foo://x: cannot open the foo:// store: ValueError"):
        url_to_fs("foo://x")
