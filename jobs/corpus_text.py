"""Stream the accepted texts of a corpus (same planning and validation as a job), e.g. for training."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.config import JobConfig
from pipeline.sources import UnitReader, plan_units


def iter_texts(cfg: JobConfig, max_docs: int | None = None) -> Iterator[str]:
    seen = 0
    for unit in plan_units(cfg.input, cfg.read_options(), cfg.storage_options):
        for batch in UnitReader(unit, cfg.read_options(), cfg.storage_options):
            for text in batch.texts:
                if max_docs is not None and seen >= max_docs:
                    return
                seen += 1
                yield text
