"""The export formats, by name: Megatron-LM's indexed dataset, Hugging Face Parquet, LitData."""

from __future__ import annotations

from pipeline.errors import ExportError
from pipeline.export.formats.base import ExportFormat
from pipeline.export.formats.hf import HFFormat
from pipeline.export.formats.litdata import LitDataFormat
from pipeline.export.formats.megatron import MegatronFormat

FORMATS: dict[str, type[ExportFormat]] = {
    "megatron": MegatronFormat,
    "hf": HFFormat,
    "litdata": LitDataFormat,
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; one of {', '.join(FORMATS)}")
    return FORMATS[name]()


__all__ = ["FORMATS", "ExportFormat", "get_format"]
