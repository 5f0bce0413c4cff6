"""Trainer-side shard access: the ledger's committed shards of one output, memory-mapped locally
(remote shards are first copied into a local cache directory), exposed as zero-copy numpy views."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import LoaderError
from pipeline.output import Output, iter_committed, read_manifest
from pipeline.output.shards import file_checksum
from schemas.records import LedgerEntry

OPEN_SHARDS = 16  # shards kept mapped per process (a few shuffle groups' worth)


@dataclass(frozen=True)
class ShardInfo:
    """One committed shard as the ledger lists it."""

    rel: str
    documents: int
    tokens: int
    checksum: str | None

    @classmethod
    def of(cls, entry: LedgerEntry) -> ShardInfo:
        return cls(entry.shard, int(entry.documents), int(entry.tokens), entry.shard_checksum)

    @property
    def stream_tokens(self) -> int:
        """Tokens this shard adds to a packed stream: its documents plus one EOS after each."""
        return self.tokens + self.documents


@dataclass
class ShardTokens:
    """Token ids of one mapped shard: the whole file as one zero-copy numpy array of the token
    dtype (`data`), and per document its start (an element offset into `data`) and length."""

    data: np.ndarray
    doc_start: np.ndarray
    doc_len: np.ndarray
    mapped: Any  # the pa.MemoryMappedFile (kept open while the views are used)


def committed_shards(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[list[ShardInfo], dict[str, Any]]:
    """The committed shards of an output (`iter_committed` order) and its tokenizer description
    (with the manifest's eos_id when the ledger's lacks one)."""
    output = Output(url, storage_options)
    shards, tokenizers = [], {}
    for entry in iter_committed(output):
        shards.append(ShardInfo.of(entry))
        tokenizers.setdefault(entry.tokenizer["fingerprint"], entry.tokenizer)
    if not shards:
        raise LoaderError(f"output {url} has no committed shards (ledger/ is empty)")
    if len(tokenizers) > 1:
        raise LoaderError(f"output {url} mixes tokenizers {sorted(tokenizers)}")
    tokenizer = dict(next(iter(tokenizers.values())))
    if tokenizer.get("eos_id") is None:
        manifest = read_manifest(output) or {}
        tokenizer["eos_id"] = manifest.get("tokenizer", {}).get("eos_id")
    return shards, tokenizer


def default_cache_dir(url: str) -> str:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "tokenmill-loader-cache", digest)


class ShardStore:
    """Opens shards of one output in the current process.

    Holds only the URL and options when pickled or forked: the fsspec filesystem is created lazily
    in the process that reads (an s3fs object must never cross into DataLoader workers).
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, cache_dir: str | None = None
    ):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.cache_dir = cache_dir or default_cache_dir(self.url)
        self._pid: int | None = None
        self._output: Output | None = None
        self._open: OrderedDict[str, ShardTokens] = OrderedDict()

    def __getstate__(self) -> dict:
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "cache_dir": self.cache_dir,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["storage_options"], state["cache_dir"])

    def _fresh(self) -> Output:
        if self._pid != os.getpid():  # first use here, or a forked child: rebuild everything
            self._pid = os.getpid()
            self._output = Output(self.url, self.storage_options)
            self._open = OrderedDict()
        assert self._output is not None
        return self._output

    def local_path(self, shard: ShardInfo) -> str:
        """A local file holding the shard: the shard itself, or its verified copy in the cache."""
        output = self._fresh()
        if output.local:
            return output.path(shard.rel)
        dest = os.path.join(self.cache_dir, shard.rel.replace("/", "__"))
        if os.path.exists(dest):
            return dest
        os.makedirs(self.cache_dir, exist_ok=True)
        with open(f"{dest}.lock", "wb") as lock:  # one download per shard per machine
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(dest):
                return dest
            tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
            try:
                output.fs.get_file(output.path(shard.rel), tmp)
                if shard.checksum and file_checksum(tmp) != shard.checksum:
                    raise LoaderError(f"{self.url}/{shard.rel}: checksum differs from the ledger's")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        return dest

    def tokens(self, shard: ShardInfo) -> ShardTokens:
        self._fresh()
        found = self._open.get(shard.rel)
        if found is not None:
            self._open.move_to_end(shard.rel)
            return found
        opened = map_shard(self.local_path(shard), shard, self.url)
        self._open[shard.rel] = opened
        while len(self._open) > OPEN_SHARDS:
            self._open.popitem(last=False)
        return opened


def numpy_view(array: pa.Array) -> np.ndarray:
    """Zero-copy numpy view of a primitive Arrow array without nulls. (Array.to_numpy imports
    pandas on first use: about half a second in every fresh DataLoader worker, every epoch.)"""
    if array.null_count:
        raise LoaderError(f"token array with {array.null_count} nulls")
    dtype = np.dtype(str(array.type))
    data = array.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def map_shard(path: str, shard: ShardInfo, url: str) -> ShardTokens:
    """Memory-map a shard and index its documents without copying any token: each document is
    located in the one array that views the whole file (record batches' token buffers lie in
    the file at offsets aligned to the token size, as Arrow IPC aligns every buffer)."""
    mapped = pa.memory_map(path, "r")
    whole = mapped.read_buffer(mapped.size())  # zero-copy: the mapping as one buffer
    reader = pa.ipc.open_file(whole)  # record batches are slices of `whole`
    dtype = np.dtype(str(reader.schema.field("tokens").type.value_type))
    data = np.frombuffer(whole, dtype=dtype, count=whole.size // dtype.itemsize)
    doc_start, doc_len = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i in range(reader.num_record_batches):
        column = reader.get_batch(i).column("tokens")
        offsets = numpy_view(column.offsets).astype(np.int64)
        values = column.values
        at = values.buffers()[1].address + values.offset * dtype.itemsize - whole.address
        if at % dtype.itemsize or not 0 <= at <= whole.size - len(values) * dtype.itemsize:
            raise LoaderError(f"{url}/{shard.rel}: record batch {i} tokens at file offset {at}")
        doc_start.append(at // dtype.itemsize + offsets[:-1])
        doc_len.append(np.diff(offsets))
    lengths = np.concatenate(doc_len)
    if len(lengths) != shard.documents or int(lengths.sum()) != shard.tokens:
        raise LoaderError(
            f"{url}/{shard.rel}: {len(lengths)} documents / {int(lengths.sum())} "
            f"tokens, ledger says {shard.documents} / {shard.tokens}"
        )
    return ShardTokens(data, np.concatenate(doc_start), lengths, mapped)
