"""Megatron-LM's indexed dataset (MMIDIDX, version 1): `part-NNNNN.bin` holds every sequence's
ids back to back; `part-NNNNN.idx` holds the magic `MMIDIDX\\x00\\x00`, version <Q 1, the dtype
code <B, the sequence count <Q, the document count <Q (sequences + 1), then the sequence lengths
(int32), the sequence byte pointers (int64) and the document indices (int64: 0, 1, ..., n). One
sequence per document, as `tools/preprocess_data.py` writes without sentence splitting; read by
`megatron.core.datasets.indexed_dataset.IndexedDataset(prefix)`."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pipeline.export.documents import ExportBatch
from pipeline.export.formats.base import ExportFormat, open_object, read_exactly
from pipeline.export.plan import Resolved
from pipeline.output import Output

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# megatron.core.datasets.indexed_dataset.DType
DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6,
               "float32": 7, "uint16": 8}  # fmt: skip
HEADER = struct.Struct("<9sQBQQ")


def index_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The .idx of sequences of `lengths` ids of `dtype`, one document each."""
    n = len(lengths)
    pointers = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    return b"".join(
        [
            HEADER.pack(MAGIC, VERSION, DTYPE_CODES[dtype.name], n, n + 1),
            lengths.astype("<i4").tobytes(),
            pointers.astype("<i8").tobytes(),
            np.arange(n + 1, dtype="<i8").tobytes(),
        ]
    )


def parse_index(data: bytes) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, lengths, pointers, document indices) of an .idx; a ValueError if malformed."""
    if len(data) < HEADER.size:
        raise ValueError(f"index of {len(data)} bytes is shorter than its header")
    magic, version, code, sequences, documents = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not an MMIDIDX v1 index (magic {magic!r}, version {version})")
    names = {v: k for k, v in DTYPE_CODES.items()}
    if code not in names:
        raise ValueError(f"unknown dtype code {code}")
    expected = HEADER.size + 4 * sequences + 8 * sequences + 8 * documents
    if len(data) != expected:
        raise ValueError(f"index holds {len(data)} bytes, its counts make {expected}")
    at = HEADER.size
    lengths = np.frombuffer(data, "<i4", sequences, at)
    pointers = np.frombuffer(data, "<i8", sequences, at + 4 * sequences)
    doc_index = np.frombuffer(data, "<i8", documents, at + 12 * sequences)
    return np.dtype(names[code]), lengths, pointers, doc_index


class MegatronFormat(ExportFormat):
    name = "megatron"
    default_max_tokens = 0  # one pair for the whole output unless --max-tokens-per-file
    library = "megatron-core"
    module = "megatron.core"

    def object_names(self, index: int, count: int) -> list[str]:
        return [f"part-{index:05d}.bin", f"part-{index:05d}.idx"]

    def write(
        self, resolved: Resolved, batches: Iterable[ExportBatch], paths: dict[str, str], index: int
    ) -> dict[str, Any]:
        bin_name, idx_name = self.object_names(index, 0)
        lengths = []
        with open(paths[bin_name], "wb") as handle:
            for batch in batches:
                handle.write(np.ascontiguousarray(batch.ids, resolved.np_dtype.newbyteorder("<")))
                lengths.append(np.diff(batch.offsets))
        sizes = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        if len(sizes) and int(sizes.max()) > np.iinfo(np.int32).max:
            raise ValueError("a document longer than 2**31 - 1 ids does not fit Megatron's index")
        with open(paths[idx_name], "wb") as handle:
            handle.write(index_bytes(sizes, resolved.np_dtype))
        return {"prefix": bin_name[: -len(".bin")]}

    def read(
        self, resolved: Resolved, dest: Output, record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        prefix = record["prefix"]
        with open_object(dest, f"{prefix}.idx") as handle:
            dtype, lengths, pointers, doc_index = parse_index(handle.read())
        if dtype != resolved.np_dtype:
            raise ValueError(f"{prefix}.idx: dtype {dtype}, the export's is {resolved.dtype}")
        expected = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64) * dtype.itemsize])
        if len(lengths) and not np.array_equal(pointers, expected):
            raise ValueError(f"{prefix}.idx: sequence pointers are not contiguous")
        if not np.array_equal(doc_index, np.arange(len(lengths) + 1)):
            raise ValueError(f"{prefix}.idx: document indices are not one sequence per document")
        with open_object(dest, f"{prefix}.bin") as handle:
            for n in lengths.tolist():
                data = read_exactly(handle, n * dtype.itemsize, f"{prefix}.bin")
                yield np.frombuffer(data, dtype.newbyteorder("<"))
            if handle.read(1):
                raise ValueError(f"{prefix}.bin holds bytes past its last sequence")

    def library_read(
        self, resolved: Resolved, paths: dict[str, str], record: dict[str, Any]
    ) -> Iterator[np.ndarray]:
        with warnings.catch_warnings():  # megatron.core warns about Transformer Engine / Apex
            warnings.simplefilter("ignore")
            from megatron.core.datasets.indexed_dataset import IndexedDataset

        prefix = paths[f"{record['prefix']}.bin"][: -len(".bin")]
        dataset = IndexedDataset(prefix, mmap=True)
        if not np.array_equal(dataset.document_indices, np.arange(len(dataset) + 1)):
            raise ValueError("IndexedDataset: document indices are not one sequence per document")
        for i in range(len(dataset)):
            yield np.array(dataset[i])
        del dataset
