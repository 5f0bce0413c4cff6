"""The output lease: one driver at a time may write an output prefix.

`<output>/_lease.json` holds the owner (a random id), host, pid, heartbeat time and expiry. It is
created with an atomic create-if-absent (local: O_EXCL; S3: a conditional PUT with
`If-None-Match: *`), refreshed by a heartbeat thread, and deleted at the end. A lease whose expiry
has passed, or whose owner is a dead process on this host, is stale and is taken over with a
compare-and-swap (local: under an flock; S3: a PUT with `If-Match: <etag>`), so two drivers racing
for a stale lease cannot both win. A driver that finds a live lease refuses with `LeaseError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil

from pipeline.errors import ConfigError, LeaseError, LeaseLost
from pipeline.output.storage import Output, with_retries
from schemas.layout import LEASE_FILE

_REFUSED = object()
log = logging.getLogger("tokenmill")


def _process_start(pid: int) -> float | None:
    """When the process started; None when it is gone, or a zombie (killed, not yet reaped by
    its parent: until then it still has its pid and start time)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _owner_dead(lease: dict[str, Any]) -> bool:
    """True when the lease's owner ran on this host and that process no longer exists."""
    if lease.get("host") != socket.gethostname():
        return False
    started = _process_start(int(lease.get("pid", -1)))
    return started is None or abs(started - float(lease.get("pid_started", 0))) > 1.0


def owner_dead(lease: dict[str, Any]) -> bool:
    """True when the lease's owner ran on this host and is gone (its Ray session may be left)."""
    return _owner_dead(lease)


def current_holder(output: Output) -> dict[str, Any] | None:
    """The lease document of an output as it is now (None when nobody holds it)."""
    try:
        return json.loads(output.read_bytes(LEASE_FILE))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"owner": "unreadable"}


def check_fence(output: Output, fence: dict[str, Any] | None, what: str) -> None:
    """Refuse to commit `what` unless the output's lease is still the one `fence` was made under
    (a driver that lost its lease, and its actors, commit nothing more)."""
    if not fence:
        return
    holder = current_holder(output)
    if holder is None or holder.get("owner") != fence["owner"]:
        now = "nobody" if holder is None else f"owner {holder.get('owner')}"
        raise LeaseLost(
            f"{what} not committed: the lease of {output.url} (generation "
            f"{fence['generation']}, owner {fence['owner']}) is now held by {now}"
        )


def is_stale(lease: dict[str, Any], now: float | None = None) -> bool:
    return (now or time.time()) > float(lease.get("expires_at", 0)) or _owner_dead(lease)


class OutputLease:
    """Acquire with `acquire()` (or as a context manager); a daemon thread keeps it fresh."""

    def __init__(
        self,
        output: Output,
        ttl_s: float = 60.0,
        heartbeat_s: float | None = None,
        holder: str = "run",
    ):
        self.output = output
        self.holder = holder  # what holds such a lease, for the refusal ("run", "export")
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s or max(ttl_s / 4, 0.05)
        self.owner = uuid.uuid4().hex
        self.generation = 1  # one more than the lease this one replaced
        self.replaced: dict[str, Any] | None = None  # the stale lease taken over, if any
        self.notes: dict[str, Any] = {}  # extra fields published in the lease (e.g. Ray session)
        self.lost: str | None = None
        self._version: str | None = None  # S3 ETag or local write token of our current lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshing = threading.Lock()  # the heartbeat and publish() never race
        self._path = output.path(LEASE_FILE)

    # -- the lease document ---------------------------------------------------------------------
    def _document(self) -> dict[str, Any]:
        now = time.time()
        pid = os.getpid()
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": pid,
            "pid_started": _process_start(pid),
            "heartbeat_at": now,
            "expires_at": now + self.ttl_s,
            "ttl_s": self.ttl_s,
            "token": uuid.uuid4().hex,
            "generation": self.generation,
            **self.notes,
        }

    def _describe(self, lease: dict[str, Any]) -> str:
        left = float(lease.get("expires_at", 0)) - time.time()
        return (
            f"output {self.output.url} is leased by another {self.holder} (owner "
            f"{lease.get('owner')}, host {lease.get('host')}, pid {lease.get('pid')}, lease expires "
            f"in {left:.0f} s); wait for it to finish, or delete {self.output.url}/{LEASE_FILE} if "
            f"that {self.holder} is gone"
        )

    # -- store primitives: read, create-if-absent, compare-and-swap, delete ---------------------
    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(lease, version) or (None, None) when absent; an unreadable lease counts as stale."""
        if self.output.local:
            try:
                with open(self._path, "rb") as handle:
                    raw = handle.read()
            except FileNotFoundError:
                return None, None
            try:
                lease = json.loads(raw)
                return lease, lease.get("token")
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {"expires_at": 0, "owner": "unreadable"}, None
        try:
            info = with_retries(lambda: self.output.fs.info(self._path, refresh=True), "stat lease")
            raw = with_retries(lambda: self.output.fs.cat_file(self._path), "read lease")
        except FileNotFoundError:
            return None, None
        try:
            lease = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            lease = {"expires_at": 0, "owner": "unreadable"}
        return lease, str(info.get("ETag") or info.get("etag") or "")

    def _put(self, doc: dict[str, Any], expect: str | None) -> bool:
        """Write doc if the lease is absent (expect None) or still at version `expect`."""
        data = json.dumps(doc, sort_keys=True, indent=1).encode()
        if self.output.local:
            return self._put_local(doc, data, expect)
        fs = self.output.fs
        kwargs: dict[str, Any] = {"mode": "create"} if expect is None else {"IfMatch": expect}

        def attempt() -> Any:
            try:
                return fs.pipe_file(self._path, data, **kwargs)
            except FileNotFoundError:  # If-Match on a lease that was deleted meanwhile
                return _REFUSED
            except OSError as exc:
                if _precondition_failed(exc):
                    return _REFUSED
                raise

        out = with_retries(attempt, "write lease")
        fs.invalidate_cache(self._path)
        if out is _REFUSED:
            return False
        etag = (out or {}).get("ETag") if isinstance(out, dict) else None
        self._version = etag or self._read()[1]
        return True

    @contextlib.contextmanager
    def _local_lock(self) -> Iterator[None]:
        folder = os.path.dirname(self._path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # (/proc/x, a read-only mount: a traceback before)
            raise ConfigError(f"output folder {folder} cannot be created: {exc}") from None
        fd = os.open(self._path + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _put_local(self, doc: dict[str, Any], data: bytes, expect: str | None) -> bool:
        with self._local_lock():
            if expect is None:
                try:
                    fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            else:
                current, version = self._read()
                if current is None or version != expect:
                    return False
                self.output.write_bytes(LEASE_FILE, data)
        self._version = doc["token"]
        return True

    def _delete_if_ours(self) -> None:
        if self.output.local:
            with self._local_lock():
                current, version = self._read()
                if current is not None and version == self._version:
                    os.remove(self._path)
            return
        current, version = self._read()
        if current is not None and current.get("owner") == self.owner:
            self.output.remove(LEASE_FILE)

    # -- public API -----------------------------------------------------------------------------
    def acquire(self) -> OutputLease:
        """Take the lease or raise LeaseError naming the holder; starts the heartbeat."""
        for _ in range(3):
            if self._put(self._document(), None):
                break
            current, version = self._read()
            if current is None:
                continue  # released between our create and our read: try again
            if not is_stale(current):
                raise LeaseError(self._describe(current))
            log.warning(
                "taking over a stale lease of %s (owner %s, host %s, pid %s)",
                self.output.url,
                current.get("owner"),
                current.get("host"),
                current.get("pid"),
            )
            self.generation = int(current.get("generation") or 0) + 1
            if self._put(self._document(), version):
                self.replaced = current
                break
        else:
            current, _ = self._read()
            raise LeaseError(self._describe(current or {}))
        self._thread = threading.Thread(target=self._heartbeat, name="tokenmill-lease", daemon=True)
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Extend the expiry; records `lost` if another run has replaced the lease."""
        with self._refreshing:
            if self.lost or self._put(self._document(), self._version):
                return
            current, _ = self._read()
            self.lost = self._describe(current) if current else f"lease {LEASE_FILE} disappeared"

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"this run lost its lease: {self.lost}")

    def fence(self) -> dict[str, Any]:
        """What a commit carries to prove it was made under this lease."""
        return {"owner": self.owner, "generation": self.generation}

    def publish(self, **notes: Any) -> None:
        """Add fields to the lease document (written at once), e.g. the Ray session it started."""
        self.notes.update(notes)
        self.refresh()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.refresh()
            except OSError as exc:  # storage outage: keep trying until the lease would expire
                log.warning("lease heartbeat failed: %s", exc)
            if self.lost:
                log.error("lost the output lease: %s", self.lost)
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 30)
        if not self.lost:
            try:
                self._delete_if_ours()
            except OSError as exc:  # it expires by itself; never mask the run's own outcome
                log.warning("could not release the lease of %s: %s", self.output.url, exc)

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _precondition_failed(exc: OSError) -> bool:
    """s3fs maps a failed If-None-Match to FileExistsError and a failed If-Match to EINVAL."""
    return isinstance(exc, FileExistsError) or exc.errno == errno.EINVAL
