"""LitData's optimized format, as `litdata.optimize(..., item_loader=TokensLoader())` writes it:
one chunk `chunk-0-N.bin` per planned file (uint32 item count, uint32 item byte offsets, then the
items: each document's ids, EOD included when asked, with no header) and `index.json` naming the
chunks (with each chunk's token count, `dim`) and the config (`item_loader: TokensLoader`), read by
`litdata.StreamingDataset(DEST, item_loader=TokensLoader(block_size=...))`.

Chunks are written by litdata's own BinaryWriter when litdata is installed, else by the faithful
writer below (the tests check that both give the same bytes)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pipeline.export.documents import ExportBatch
from pipeline.export.formats.base import ExportFormat, open_object, read_exactly
from pipeline.export.plan import Resolved
from pipeline.output import Output

INDEX = "index.json"
CHUNK_BYTES = (1 << 32) - 1  # a chunk's offsets are uint32: the format's own limit
# What litdata's serializers call 1-D int32 torch tensors and 1-D uint16 numpy arrays.
DATA_FORMATS = {"int32": "no_header_tensor:16", "uint16": "no_header_numpy:5"}
LEAF_SPEC = '[1, {"type": null, "context": null, "children_spec": []}]'


def chunk_config(resolved: Resolved) -> dict[str, Any]:
    """The `config` of index.json, as BinaryWriter.get_config() gives it for these items."""
    return {
        "compression": None,
        "chunk_size": None,
        "chunk_bytes": CHUNK_BYTES,
        "data_format": [DATA_FORMATS[resolved.dtype]],
        "data_spec": LEAF_SPEC,
        "encryption": None,
        "item_loader": "TokensLoader",
    }


def chunk_info(sizes: np.ndarray, itemsize: int, name: str) -> dict[str, Any]:
    """A chunk's entry of index.json (litdata leaves `dim` null when the first item is empty)."""
    return {
        "chunk_bytes": int(4 + 4 * (len(sizes) + 1) + int(sizes.sum()) * itemsize),
        "chunk_size": len(sizes),
        "dim": int(sizes.sum()) if len(sizes) and sizes[0] else None,
        "filename": name,
    }


def write_faithful(batches: Iterable[ExportBatch], dtype: np.dtype, path: str) -> np.ndarray:
    """A TokensLoader chunk written without litdata; returns the item lengths (ids)."""
    lengths = []
    with tempfile.TemporaryFile(dir=os.path.dirname(path)) as body:
        for batch in batches:
            body.write(np.ascontiguousarray(batch.ids, dtype.newbyteorder("<")))
            lengths.append(np.diff(batch.offsets))
        sizes = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        header = 4 + 4 * (len(sizes) + 1)
        offsets = header + np.concatenate([[0], np.cumsum(sizes * dtype.itemsize)])
        if offsets[-1] > CHUNK_BYTES:
            raise ValueError(f"a chunk of {offsets[-1]} bytes: use a smaller --max-tokens-per-file")
        body.seek(0)
        with open(path, "wb") as out:
            out.write(np.uint32(len(sizes)).tobytes() + offsets.astype("<u4").tobytes())
            shutil.copyfileobj(body, out, 8 << 20)
    return sizes


def write_with_litdata(
    batches: Iterable[ExportBatch], resolved: Resolved, path: str
) -> dict[str, Any]:
    """The chunk written by litdata's own BinaryWriter; returns its index.json chunk entry."""
    import torch
    from litdata.streaming.item_loader import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        writer = BinaryWriter(tmp, chunk_bytes=CHUNK_BYTES, item_loader=TokensLoader())
        index = 0
        for batch in batches:
            for start, end in zip(
                batch.offsets[:-1].tolist(), batch.offsets[1:].tolist(), strict=True
            ):
                ids = batch.ids[start:end]
                writer.add_item(index, torch.from_numpy(ids) if ids.dtype == np.int32 else ids)
                index += 1
        writer.done()
        (written,) = [n for n in os.listdir(tmp) if n.endswith(INDEX)]
        with open(os.path.join(tmp, written)) as handle:
            index_json = json.load(handle)
        if index_json["config"] != chunk_config(resolved):
            raise ValueError(f"litdata wrote config {index_json['config']}, not the expected one")
        if len(index_json["chunks"]) != 1:
            raise ValueError(
                f"litdata split one file into {len(index_json['chunks'])} chunks (over "
                f"{CHUNK_BYTES} bytes): use a smaller --max-tokens-per-file"
            )
        (chunk,) = index_json["chunks"]
        os.replace(os.path.join(tmp, chunk["filename"]), path)
    return chunk


@contextlib.contextmanager
def no_version_check() -> Iterator[None]:
    """StreamingDataset() asks PyPI whether a newer litdata exists (a request with a 30 s
    timeout, once per process): verifying an export makes no network call, so not that one."""
    import litdata.streaming.dataset as module

    check = module._check_version_and_prompt_upgrade
    module._check_version_and_prompt_upgrade = lambda version: None
    try:
        yield
    finally:
        module._check_version_and_prompt_upgrade = check


class LitDataFormat(ExportFormat):
    name = "litdata"
    default_max_tokens = 1 << 24
    library = "litdata"
    module = "litdata"
    library_yields = "stream"

    def object_names(self, index: int, count: int) -> list[str]:
        return [f"chunk-0-{index}.bin"]

    def final_objects(self) -> list[str]:
        return [INDEX]

    def write(
        self, resolved: Resolved, batches: Iterable[ExportBatch], paths: dict[str, str], index: int
    ) -> dict[str, Any]:
        ((name, path),) = paths.items()
        if self.library_version() is not None:  # litdata's own writer when installed
            chunk = write_with_litdata(batches, resolved, path)
        else:
            sizes = write_faithful(batches, resolved.np_dtype, path)
            chunk = chunk_info(sizes, resolved.np_dtype.itemsize, name)
        return {"chunk": {**chunk, "filename": name}}

    def read(
        self, resolved: Resolved, dest: Output, record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        chunk, dtype = record["chunk"], resolved.np_dtype.newbyteorder("<")
        with open_object(dest, chunk["filename"]) as handle:
            what = chunk["filename"]
            (count,) = np.frombuffer(read_exactly(handle, 4, what), "<u4")
            offsets = np.frombuffer(read_exactly(handle, 4 * (int(count) + 1), what), "<u4")
            if count != chunk["chunk_size"] or int(offsets[-1]) != chunk["chunk_bytes"]:
                raise ValueError(f"{what}: header disagrees with its index entry {chunk}")
            if offsets[0] != 4 + 4 * (int(count) + 1) or np.any(
                np.diff(offsets.astype(np.int64)) < 0
            ):
                raise ValueError(f"{what}: item offsets are not contiguous")
            total = 0
            for size in np.diff(offsets.astype(np.int64)).tolist():
                ids = np.frombuffer(read_exactly(handle, size, what), dtype)
                total += len(ids)
                yield ids
            if handle.read(1):
                raise ValueError(f"{what} holds bytes past its last item")
        if chunk["dim"] not in (total, None):
            raise ValueError(f"{what}: {total} ids, its index entry says dim {chunk['dim']}")

    def library_read(
        self, resolved: Resolved, paths: dict[str, str], record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        from litdata import StreamingDataset
        from litdata.streaming.item_loader import TokensLoader

        chunk = record["chunk"]
        if not chunk["dim"]:
            raise ValueError(f"{chunk['filename']}: TokensLoader cannot read a chunk whose "
                             "first document is empty (litdata records no dim)")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:  # litdata reads a folder: this chunk alone
            os.symlink(
                os.path.abspath(paths[chunk["filename"]]), os.path.join(tmp, chunk["filename"])
            )
            index = {"chunks": [chunk], "config": chunk_config(resolved), "updated_at": "0"}
            with open(os.path.join(tmp, INDEX), "w") as handle:
                json.dump(index, handle, sort_keys=True)
            with no_version_check():
                dataset = StreamingDataset(tmp, item_loader=TokensLoader(block_size=chunk["dim"]))
            if len(dataset) != 1:
                raise ValueError(f"StreamingDataset sees {len(dataset)} blocks, expected 1")
            stream = dataset[0]
            yield np.asarray(stream.numpy() if hasattr(stream, "numpy") else stream)

    def index(self, resolved: Resolved, records: list[dict[str, Any]], digest: str) -> dict:
        chunks = [record["chunk"] for record in records]
        return {
            "chunks": chunks,
            "config": chunk_config(resolved),
            "updated_at": digest.split(":")[-1],
        }

    def finish(
        self, resolved: Resolved, dest: Output, records: list[dict[str, Any]], digest: str
    ) -> None:
        data = json.dumps(self.index(resolved, records, digest), sort_keys=True)
        dest.write_bytes(INDEX, data.encode())

    def check_final(
        self, resolved: Resolved, dest: Output, records: list[dict[str, Any]], digest: str
    ) -> list[str]:
        try:
            found = dest.read_json(INDEX)
        except (FileNotFoundError, ValueError) as exc:
            return [f"{INDEX} is missing or unreadable: {exc}"]
        if found != self.index(resolved, records, digest):
            return [f"{INDEX} does not list the export's chunks as written"]
        return []
