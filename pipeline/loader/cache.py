"""Local cache of remote shards, shared by every process of a machine (ranks, DataLoader workers).

A cached shard is one file in the cache directory. A process *holds* a shard while it reads it: a
shared `flock` on an open descriptor of that file, taken before the file is used and released when
the last array viewing the mapped file is gone (`Held`). With `limit` (bytes), a shard is admitted
under the directory's lock (`.cache.lock`): shard files plus reservations of downloads under way
must stay within the limit, so least-recently-used shards (by modification time, touched at every
use) are evicted first, and only those no process holds (an exclusive non-blocking `flock` on them
succeeds). When nothing can be evicted the admission waits for a holder to let go, and after
`wait_s` raises LoaderError (the limit is too small for the shards in use at once: about
2 * group_shards per reading process and output); it raises at once when this process's own
holdings leave no room (no other process can free those, and this one is waiting). A download reserves its size first (`<name>.reserve`, held
under an exclusive lock while the download runs, so a crashed download's reservation is seen as
stale and removed), fetches to a temporary file, checks it, takes its shared lock and renames it
into place: a fresh shard is held before anyone can see it.

An admission counts the usage by scanning the directory only when its running bound (`.usage`,
kept under the directory lock) says the shard might not fit, and a scan then evicts down to 9/10 of
the limit, so scans are rare however many shards the directory holds. Downloads of one shard are
serialized by one of 64 fixed lock files (`.download-NN.lock`).

Set TOKENMILL_CACHE_LOG to a file to have every admission append `name size usage limit` (usage
after the admission, counted under the directory lock): the tests check the limit with it.
"""

from __future__ import annotations

import fcntl
import gc
import os
import time
import uuid
import weakref
import zlib
from collections.abc import Callable

from pipeline.errors import LoaderError

LOCK, RESERVE, TMP, DOCS = ".cache.lock", ".reserve", ".tmp-", ".docs.npy"
USAGE = ".usage"  # a bound on the bytes cached and reserved (see ShardCache._usage_bound)
SLACK = 10  # a scan frees room for 1/SLACK of the limit beyond what the admission needs
DOWNLOAD_LOCKS = 64  # lock files that serialize downloads of one shard (a shard hashes to one)
_HELD: dict[int, Held] = {}  # descriptor -> holder, to close inherited ones after a fork


class Held:
    """A shared lock on one cached file (its open descriptor), released by `release()` once."""

    def __init__(self, fd: int, path: str = ""):
        self.fd, self.path = fd, path
        _HELD[fd] = self

    def release(self) -> None:
        if self.fd >= 0:
            _HELD.pop(self.fd, None)
            os.close(self.fd)
            self.fd = -1

    def tie(self, owner: object) -> None:
        """Release when `owner` (the array viewing the mapped file) is garbage collected."""
        weakref.finalize(owner, self.release)


def _forget_inherited() -> None:
    """In a forked child: the parent's holds are the parent's (closing our copy of a descriptor
    leaves its lock with the parent)."""
    for held in list(_HELD.values()):
        held.release()


os.register_at_fork(after_in_child=_forget_inherited)


def _download_lock(name: str) -> str:
    """The lock file of a shard's download: one of DOWNLOAD_LOCKS, never removed (a lock file
    per shard grew the directory by one file per shard ever fetched, and every scan with it)."""
    return f".download-{zlib.crc32(name.encode()) % DOWNLOAD_LOCKS:02d}.lock"


def _is_shard(name: str) -> bool:
    return not (
        name.startswith(".") or name.endswith((".lock", RESERVE, DOCS, ".npy")) or TMP in name
    )


class ShardCache:
    """The cache directory of one machine (see the module docstring)."""

    def __init__(self, directory: str, limit: int | None = None, wait_s: float = 600.0):
        self.directory, self.limit, self.wait_s = directory, limit, wait_s

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def hold(self, name: str) -> tuple[str, Held] | None:
        """The cached file, held, or None when it is not cached."""
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # evicted (and replaced) meanwhile
                os.close(fd)
                return None
        except FileNotFoundError:
            os.close(fd)
            return None
        os.utime(path)  # most recently used
        return path, Held(fd, path)

    def acquire(
        self, name: str, size: Callable[[], int], fetch: Callable[[str], None]
    ) -> tuple[str, Held]:
        """The cached file `name`, held by this process: fetched into the cache when missing
        (`fetch(path)` writes it; `size()` says how many bytes it will take)."""
        found = self.hold(name)
        if found is not None:
            return found
        os.makedirs(self.directory, exist_ok=True)
        with open(self.path(_download_lock(name)), "wb") as lock:  # one download per shard
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.hold(name)
            if found is not None:
                return found
            reservation = self._reserve(name, size()) if self.limit is not None else None
            tmp = f"{self.path(name)}{TMP}{uuid.uuid4().hex}"
            try:
                fetch(tmp)
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(fd, fcntl.LOCK_SH)
                os.replace(tmp, self.path(name))
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
                if reservation is not None:
                    os.remove(self.path(name) + RESERVE)
                    os.close(reservation)
            return self.path(name), Held(fd, self.path(name))

    def _reserve(self, name: str, size: int) -> int:
        """Room for `size` more bytes (evicting unheld shards, least recently used first), and
        a reservation of it; returns the reservation's locked descriptor."""
        if size > self.limit:
            raise LoaderError(f"shard {name} ({size} bytes) exceeds cache_limit={self.limit}")
        deadline = time.monotonic() + self.wait_s
        while True:
            with open(self.path(LOCK), "wb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                usage = self._usage_bound()
                if usage is None or usage + size > self.limit:
                    usage = self._make_room(size)
                if usage + size <= self.limit:
                    fd = os.open(self.path(name) + RESERVE, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, str(size).encode())
                    self._set_usage_bound(usage + size)
                    self._log(name, size, usage + size)
                    return fd
            own, count = self._own_holdings()
            if own + size > self.limit:  # a hold whose arrays are only garbage ends with them
                gc.collect()
                own, count = self._own_holdings()
            if own + size > self.limit:  # what blocks it is this process's own: no use waiting
                raise LoaderError(
                    f"cache {self.directory}: cache_limit={self.limit} cannot hold what this "
                    f"process reads at once: it holds {count} shard(s), {own} bytes, and needs "
                    f"{name} ({size} bytes) too. A reading process holds up to about "
                    "2 * group_shards shards of each output of a mixture: raise cache_limit to "
                    f"at least {own + size} bytes (more with other readers), or lower group_shards"
                )
            if time.monotonic() > deadline:
                raise LoaderError(
                    f"cache {self.directory}: no room for {name} ({size} bytes) within "
                    f"cache_limit={self.limit} after {self.wait_s:.0f} s: every cached shard is "
                    "in use; raise cache_limit (about 2 * group_shards shards per reading process)"
                )
            time.sleep(0.05)

    def _own_holdings(self) -> tuple[int, int]:
        """(bytes, count) of the shards of this directory that this process holds: no other
        process can let go of them, and a reader waiting for room does not either."""
        own = count = 0
        for held in list(_HELD.values()):
            if held.fd >= 0 and os.path.dirname(held.path) == self.directory:
                try:
                    own += os.fstat(held.fd).st_size
                    count += 1
                except OSError:  # released meanwhile (another thread)
                    pass
        return own, count

    def _usage_bound(self) -> int | None:
        """Under the directory lock: the bytes admitted since the last scan counted on top of
        what it found (`.usage`; None when there is none). Never below the usage: admissions
        add to it, and what leaves (evictions, failed downloads, a user's clean-up) only makes
        it higher than the files. While it leaves room, an admission scans nothing (a scan per
        admission was quadratic in the shards cached)."""
        try:
            with open(self.path(USAGE), "rb") as f:
                return int(f.read() or b"0")
        except (FileNotFoundError, ValueError):
            return None

    def _set_usage_bound(self, usage: int) -> None:
        tmp = f"{self.path(USAGE)}{TMP}{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(str(usage).encode())
        os.replace(tmp, self.path(USAGE))

    def _make_room(self, size: int) -> int:
        """Under the directory lock: evict unheld shards, oldest use first, until `size` more
        bytes fit with 1/SLACK of the limit to spare (so that the next admissions need no scan;
        the hard bound is the limit), or nothing more can go; returns the usage left (shards +
        reservations)."""
        shards, usage = [], 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith(RESERVE):
                usage += self._reservation(entry.path)
            elif _is_shard(entry.name):
                stat = entry.stat()
                shards.append((stat.st_mtime_ns, entry.name, stat.st_size))
                usage += stat.st_size
        for _, name, nbytes in sorted(shards):
            if usage + size <= self.limit - self.limit // SLACK:
                break
            if self._evict(name):
                usage -= nbytes
        return usage

    def _reservation(self, path: str) -> int:
        """Bytes a download under way reserved; a stale reservation (its process died) goes."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its download is running
                return int(os.read(fd, 32) or b"0")
            os.remove(path)
            for name in os.listdir(self.directory):  # the dead download's partial file
                if name.startswith(os.path.basename(path)[: -len(RESERVE)] + TMP):
                    os.remove(self.path(name))
            return 0
        finally:
            os.close(fd)

    def _evict(self, name: str) -> bool:
        """Remove a shard no process holds; False when one does."""
        try:
            fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            os.remove(self.path(name))
            return True
        finally:
            os.close(fd)

    def _log(self, name: str, size: int, usage: int) -> None:
        log = os.environ.get("TOKENMILL_CACHE_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{name} {size} {usage} {self.limit}\n")

    def usage(self) -> int:
        """Bytes of cached shards now (reservations not counted)."""
        return sum(e.stat().st_size for e in os.scandir(self.directory) if _is_shard(e.name))
