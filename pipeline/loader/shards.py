"""Trainer-side shard access: the ledger's committed shards of one output, memory-mapped locally
(remote shards are first copied into a local cache directory, pipeline/loader/cache.py), exposed
as zero-copy numpy views; per-shard document lengths and ids for packing, provenance and skips."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import LoaderError
from pipeline.loader.cache import DOCS, Held, ShardCache
from pipeline.output import Output, iter_committed, read_manifest
from pipeline.output.shards import bits, file_checksum, string_array, values_view
from schemas.records import LedgerEntry
from schemas.shards import LOSS_MASK  # noqa: F401 (importable from here)

OPEN_SHARDS = 16  # shards kept mapped per process (a few shuffle groups' worth)


@dataclass(frozen=True)
class ShardInfo:
    """One committed shard as the ledger lists it."""

    rel: str
    documents: int
    tokens: int
    checksum: str | None
    url: str = ""  # the input file of its unit
    start: int = 0  # the unit's byte offset in that file (row group for Parquet)
    bytes: int = 0  # UTF-8 bytes of its documents' text
    members: tuple[str, ...] = ()  # a pack's files (its `input_file` column indexes them)

    @classmethod
    def of(cls, entry: LedgerEntry) -> ShardInfo:
        return cls(
            entry.shard,
            int(entry.documents),
            int(entry.tokens),
            entry.shard_checksum,
            entry.unit.url,
            int(entry.unit.start),
            int(entry.bytes),
            tuple(m.url for m in entry.unit.members),
        )

    @property
    def stream_tokens(self) -> int:
        """Tokens this shard adds to a packed stream: its documents plus one EOS after each."""
        return self.tokens + self.documents

    def stream(self, lead: int) -> int:
        """Stream tokens with `lead` (0 or 1) BOS tokens before each document too."""
        return self.tokens + self.documents * (1 + lead)


@dataclass
class ShardTokens:
    """Token ids of one mapped shard: the whole file as one zero-copy numpy array of the token
    dtype (`data`), and per document its start (an element offset into `data`) and length."""

    data: np.ndarray
    doc_start: np.ndarray
    doc_len: np.ndarray
    mapped: Any  # the pa.MemoryMappedFile (kept open while the views are used)
    reader: Any = None  # the IPC file reader (doc_id and other columns)
    mask: np.ndarray | None = None  # the whole file as uint8 when it has a loss_mask column
    mask_start: np.ndarray | None = None  # each document's first loss_mask entry (-1: null)


def committed_shards(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[list[ShardInfo], dict[str, Any]]:
    """The committed shards of an output (`iter_committed` order) and its tokenizer description
    (with the manifest's eos_id / bos_id when the ledger's lacks them)."""
    output = Output(url, storage_options)
    shards, tokenizers, specials = [], {}, set()
    try:
        for entry in iter_committed(output):
            shards.append(ShardInfo.of(entry))
            tokenizers.setdefault(entry.tokenizer["fingerprint"], entry.tokenizer)
            specials.add((entry.tokenizer.get("eos_id"), entry.tokenizer.get("bos_id")))
    except NotADirectoryError as exc:
        raise LoaderError(f"{url} is a file: give the output folder (ledger/, shards/)") from exc
    if not shards:
        if not output.exists(""):
            raise LoaderError(f"output {url} does not exist")
        raise LoaderError(f"output {url} has no committed shards (ledger/ is empty)")
    if len(tokenizers) > 1:
        raise LoaderError(f"output {url} mixes tokenizers {sorted(tokenizers)}")
    tokenizer = dict(next(iter(tokenizers.values())))
    for k, key in enumerate(("eos_id", "bos_id")):  # entries that disagree (resumed after a
        # tokenizer_config.json moved them, before that was refused): the dataset must be told
        if len({pair[k] for pair in specials}) > 1:
            tokenizer[key] = None
            tokenizer.setdefault("mixed", {})[key] = sorted({pair[k] for pair in specials}, key=str)
    if tokenizer.get("eos_id") is None or "bos_id" not in tokenizer:
        described = (read_manifest(output) or {}).get("tokenizer", {})
        for key in ("eos_id", "bos_id"):
            if tokenizer.get(key) is None:
                tokenizer[key] = described.get(key)
    return shards, tokenizer


def default_cache_dir(url: str) -> str:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "tokenmill-loader-cache", digest)


class ShardStore:
    """Opens shards of one output in the current process.

    Holds only the URL and options when pickled or forked: the fsspec filesystem is created lazily
    in the process that reads (an s3fs object must never cross into DataLoader workers). Remote
    shards are read from the machine's cache (`cache_limit` bytes at most, see cache.py), each
    held while an array of its mapping is alive.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        cache_limit: int | None = None,
        open_shards: int = OPEN_SHARDS,
    ):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.cache_dir = cache_dir or default_cache_dir(self.url)
        self.cache_limit, self.open_shards = cache_limit, open_shards
        self.cache = ShardCache(self.cache_dir, cache_limit)
        self._pid: int | None = None
        self._output: Output | None = None
        self._open: OrderedDict[str, ShardTokens] = OrderedDict()
        self._lengths: dict[str, np.ndarray] = {}
        self._ids: OrderedDict[tuple[str, str], pa.Array | None] = OrderedDict()

    def __getstate__(self) -> dict:
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "cache_dir": self.cache_dir,
            "cache_limit": self.cache_limit,
            "open_shards": self.open_shards,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _fresh(self) -> Output:
        if self._pid != os.getpid():  # first use here, or a forked child: rebuild everything
            self._pid = os.getpid()
            self._output = Output(self.url, self.storage_options)
            self._open = OrderedDict()
            self._ids = OrderedDict()
        assert self._output is not None
        return self._output

    @property
    def local(self) -> bool:
        return self._fresh().local

    def has_column(self, shard: ShardInfo, name: str) -> bool:
        """Whether the shard's schema has the column (read from the file's footer only)."""
        output = self._fresh()
        try:
            with output.fs.open(output.path(shard.rel), "rb") as handle:
                return name in pa.ipc.open_file(handle).schema.names
        except FileNotFoundError as exc:
            raise LoaderError(f"{self.url}/{shard.rel} listed by the ledger is missing") from exc
        except pa.ArrowException as exc:
            raise damaged(f"{self.url}/{shard.rel}", exc) from exc

    def _name(self, shard: ShardInfo) -> str:
        return shard.rel.replace("/", "__")

    def local_path(self, shard: ShardInfo) -> tuple[str, Held | None]:
        """A local file holding the shard: the shard itself, or its verified copy in the cache
        (then held by this process until the returned Held is released)."""
        output = self._fresh()
        if output.local:
            return output.path(shard.rel), None

        def fetch(tmp: str) -> None:
            output.fs.get_file(output.path(shard.rel), tmp)
            if shard.checksum and file_checksum(tmp) != shard.checksum:
                raise LoaderError(f"{self.url}/{shard.rel}: checksum differs from the ledger's")

        return self.cache.acquire(
            self._name(shard), lambda: int(output.fs.size(output.path(shard.rel))), fetch
        )

    def tokens(self, shard: ShardInfo) -> ShardTokens:
        """The shard mapped (kept among the `open_shards` most recently used of this process)."""
        self._fresh()
        found = self._open.get(shard.rel)
        if found is not None:
            self._open.move_to_end(shard.rel)
            return found
        while len(self._open) >= self.open_shards:  # before mapping: the limit counts it
            self._open.popitem(last=False)
        opened = self._map(shard)
        self._open[shard.rel] = opened
        return opened

    def _map(self, shard: ShardInfo) -> ShardTokens:
        """The shard mapped; a cached copy is held until no array of the mapping is left."""
        found = self._open.get(shard.rel)
        if found is not None:
            return found
        path, held = self.local_path(shard)
        try:
            opened = map_shard(path, shard, self.url)
        except BaseException:
            if held is not None:
                held.release()
            raise
        if held is not None:
            held.tie(opened.data)
        return opened

    def lengths(self, shard: ShardInfo) -> np.ndarray:
        """Token count of each document of the shard (shard order)."""
        return self._documents(shard)[0]

    def doc_bytes(self, shard: ShardInfo) -> np.ndarray:
        """UTF-8 bytes of each document's text (the n_bytes column, shard order)."""
        return self._documents(shard)[1]

    def _documents(self, shard: ShardInfo) -> np.ndarray:
        """[2, documents] int64: token counts (the mapped shard's offsets) and n_bytes; kept per
        process and, for a remote output, next to the cache as `<shard>.docs.npy` (evicting the
        shard does not lose them)."""
        found = self._lengths.get(shard.rel)
        if found is not None:
            return found
        saved = None if self.local else os.path.join(self.cache_dir, self._name(shard) + DOCS)
        if saved is not None and os.path.exists(saved):
            table = np.load(saved)
        else:
            mapped = self._map(shard)
            reader = mapped.reader
            n_bytes = [np.zeros(0, np.int64)]  # (a unit whose every record was rejected: none)
            n_bytes += [
                numpy_view(reader.get_batch(i).column("n_bytes"))
                for i in range(reader.num_record_batches)
            ]
            table = np.stack([mapped.doc_len, np.concatenate(n_bytes)]).astype(np.int64)
            del mapped, reader
            if saved is not None:
                tmp = f"{saved}.{os.getpid()}.npy"
                np.save(tmp, table)
                os.replace(tmp, saved)
        self._lengths[shard.rel] = table
        return table

    def doc_ids(self, shard: ShardInfo) -> pa.Array:
        """The shard's doc_id column (a few kept per process)."""
        return self.column(shard, "doc_id")

    def column(self, shard: ShardInfo, name: str) -> pa.Array | None:
        """One column of the shard as a single array (None when the shard has no such column;
        a few kept per process)."""
        self._fresh()
        key = (shard.rel, name)
        if key not in self._ids:
            reader = self._map(shard).reader
            found = None
            if reader.schema.get_field_index(name) >= 0:
                parts = [reader.get_batch(i).column(name) for i in range(reader.num_record_batches)]
                kind = reader.schema.field(name).type  # (no batches: every record was rejected)
                found = pa.concat_arrays(parts) if parts else pa.array([], type=kind)
            self._ids[key] = found
            while len(self._ids) > 2 * self.open_shards:
                self._ids.popitem(last=False)
        return self._ids[key]


def id_matches(doc_ids: pa.Array, ids: frozenset[str]) -> np.ndarray:
    """Which rows of a shard's doc_id column hold one of `ids` (a bool per row). O(rows) per
    shard whatever the size of `ids`: Arrow's is_in builds a table of its value set on every
    call, so a set bigger than the shard is looked up row by row in the frozenset instead (a
    million ids over a hundred thousand shards was hours)."""
    import pyarrow.compute as pc

    if len(ids) > len(doc_ids):
        return np.fromiter(
            (value in ids for value in doc_ids.to_pylist()), dtype=bool, count=len(doc_ids)
        )
    names = pc.cast(_id_column(ids), doc_ids.type)
    return bits(pc.is_in(doc_ids, value_set=names).fill_null(False))


@functools.lru_cache(maxsize=4)
def _id_column(ids: frozenset[str]) -> pa.Array:
    """The ids as one string column, built once per set (not once per shard)."""
    return string_array(sorted(ids))


def numpy_view(array: pa.Array) -> np.ndarray:
    """Zero-copy numpy view of a primitive Arrow array without nulls (`values_view`: no pandas
    import, which `Array.to_numpy` costs every fresh DataLoader worker)."""
    try:
        return values_view(array)
    except ValueError as exc:
        raise LoaderError(f"token array: {exc}") from exc


def map_shard(path: str, shard: ShardInfo, url: str) -> ShardTokens:
    """Memory-map a shard and index its documents without copying any token: each document is
    located in the one array that views the whole file (record batches' token buffers lie in
    the file at offsets aligned to the token size, as Arrow IPC aligns every buffer); so is its
    loss_mask, when the shard has one (a uint8 view of the same file)."""
    name = f"{url}/{shard.rel}"
    try:
        return _mapped(path, shard, name)
    except (pa.ArrowException, KeyError) as exc:  # (KeyError: a footer without "tokens")
        raise damaged(name, exc) from exc
    except FileNotFoundError as exc:
        raise LoaderError(
            f"{name}: listed by the ledger is missing: the output changed after this dataset "
            "read its ledger (a run redoing units, --overwrite); make the dataset again"
        ) from exc


def damaged(name: str, exc: BaseException) -> LoaderError:
    return LoaderError(
        f"{name}: damaged shard, not the Arrow file the ledger lists ({exc}); "
        "`tokenmill run ... --repair` with the job's options redoes its unit"
    )


def _mapped(path: str, shard: ShardInfo, name: str) -> ShardTokens:
    mapped = pa.memory_map(path, "r")
    whole = mapped.read_buffer(mapped.size())  # zero-copy: the mapping as one buffer
    reader = pa.ipc.open_file(whole)  # record batches are slices of `whole`
    dtype = np.dtype(str(reader.schema.field("tokens").type.value_type))
    data = np.frombuffer(whole, dtype=dtype, count=whole.size // dtype.itemsize)
    masked = reader.schema.get_field_index(LOSS_MASK) >= 0
    kind = reader.schema.field(LOSS_MASK).type if masked else None
    if masked and not (pa.types.is_list(kind) and kind.value_type == pa.uint8()):
        raise LoaderError(f"{name}: {LOSS_MASK} is {kind}, not list<uint8>")
    doc_start, doc_len = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    mask_start = [np.zeros(0, np.int64)]
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        starts, lengths = _located(batch.column("tokens"), whole, data.nbytes, dtype, name)
        doc_start.append(starts)
        doc_len.append(lengths)
        if masked:
            mask_start.append(_mask_starts(batch.column(LOSS_MASK), whole, data, lengths, name, i))
    lengths = np.concatenate(doc_len)
    if len(lengths) != shard.documents or int(lengths.sum()) != shard.tokens:
        raise LoaderError(
            f"{name}: {len(lengths)} documents / {int(lengths.sum())} "
            f"tokens, ledger says {shard.documents} / {shard.tokens}"
        )
    mask = data.view(np.uint8) if masked else None  # a view of `data`: one lifetime (cache hold)
    starts = np.concatenate(mask_start) if masked else None
    return ShardTokens(data, np.concatenate(doc_start), lengths, mapped, reader, mask, starts)


def _mask_starts(
    column: pa.ListArray, whole: pa.Buffer, data: np.ndarray, lengths: np.ndarray, name: str, i: int
) -> np.ndarray:
    """Each document's first loss_mask entry in the file (bytes), -1 for a null mask (a plain
    document of a chat job: every token trained); every other mask has one entry per token."""
    starts, mask_len = _located(column, whole, data.nbytes, np.dtype(np.uint8), name, nulls=True)
    if column.null_count:
        bits = np.unpackbits(np.frombuffer(column.buffers()[0], np.uint8), bitorder="little")
        null = bits[column.offset : column.offset + len(column)] == 0  # (no pandas import)
        starts[null], mask_len[null] = -1, lengths[null]
    if not np.array_equal(mask_len, lengths):
        row = int(np.flatnonzero(mask_len != lengths)[0])
        raise LoaderError(
            f"{name}: record batch {i} row {row} has {mask_len[row]} {LOSS_MASK} entries for "
            f"{lengths[row]} tokens"
        )
    return starts


def _located(
    column: pa.ListArray,
    whole: pa.Buffer,
    limit: int,
    dtype: np.dtype,
    name: str,
    nulls: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(first element of each list in the file viewed as `dtype`, list lengths) of a list
    column of a record batch of the mapped file `whole` (values within its first `limit`
    bytes; null lists only when `nulls`)."""
    if (column.null_count and not nulls) or column.values.null_count:
        raise LoaderError(f"{name}: nulls in a list column")
    offsets = numpy_view(column.offsets).astype(np.int64)
    values = column.values
    if len(values) == 0:  # no element to locate (an empty buffer need not lie in the file)
        return np.zeros(len(column), np.int64), np.diff(offsets)
    at = values.buffers()[1].address + values.offset * dtype.itemsize - whole.address
    if at % dtype.itemsize or not 0 <= at <= limit - len(values) * dtype.itemsize:
        raise LoaderError(f"{name}: list values at file offset {at}")
    return at // dtype.itemsize + offsets[:-1], np.diff(offsets)
