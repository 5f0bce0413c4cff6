"""Where documents enter: input globs are planned into WorkUnits and each unit is read back as
bounded DocBatches, by an `InputFormat` from the registry (one module per format).

A WorkUnit is a newline-aligned byte range of an uncompressed JSONL/text file, one Parquet row
group, the byte range of whole record batches of an Arrow IPC file, one whole compressed file (or
whole text file in `text_mode: file`), one committed shard, or with `pack_small_files` a pack of
small whole files (packs.py: each member read as its own unit would be).
Every record read ends up as a document or as a `Reject` naming its file, byte offset and line.
A unit records its file's canonical URL (a local file's real path) and version (`expand`), so its
id changes exactly when the bytes it covers may have changed; nothing under the job's output is
ever planned as input."""

from pipeline.tokenize.inputs import arrow, jsonl, parquet, shards, text  # noqa: F401  (formats)
from pipeline.tokenize.inputs.expand import current_identity, expand_inputs
from pipeline.tokenize.inputs.lines import is_stream, same_file
from pipeline.tokenize.inputs.planning import plan_units, read_unit
from pipeline.tokenize.inputs.registry import InputFormat, detect, format_names, register_format
from pipeline.tokenize.inputs.streams import iter_ranges, one_range
from pipeline.tokenize.inputs.types import DocBatch, InputFile, ReadOptions, Reject, WorkUnit

__all__ = [
    "DocBatch",
    "InputFile",
    "InputFormat",
    "ReadOptions",
    "Reject",
    "WorkUnit",
    "current_identity",
    "detect",
    "expand_inputs",
    "format_names",
    "is_stream",
    "iter_ranges",
    "plan_units",
    "read_unit",
    "register_format",
    "one_range",
    "same_file",
]
