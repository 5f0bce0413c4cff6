"""`tokenmill export`: committed shards (only what the ledger lists) written in the formats
trainers already read (Megatron-LM indexed datasets, Hugging Face Parquet, LitData chunks),
resumable after a kill with the same bytes, and verified after writing by tokenmill's own reader
and the format's own one, against per-document checksums of the shards. See docs/export.md."""

from pipeline.export.check import verify_export
from pipeline.export.engine import ExportReport, export_output
from pipeline.export.formats import FORMATS, get_format
from pipeline.export.plan import DTYPES, FORMAT_NAMES, VERIFY_MODES, ExportOptions

__all__ = [
    "DTYPES",
    "FORMATS",
    "FORMAT_NAMES",
    "VERIFY_MODES",
    "ExportOptions",
    "ExportReport",
    "export_output",
    "get_format",
    "verify_export",
]
