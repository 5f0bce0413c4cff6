"""Stream the accepted texts of a corpus (same planning and validation as a job), e.g. for training."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.tokenize.config import JobConfig
from pipeline.tokenize.inputs import plan_units, read_unit


def iter_texts(cfg: JobConfig, max_docs: int | None = None) -> Iterator[str]:
    seen = 0
    opts = cfg.read_options()
    for unit in plan_units(cfg.input, opts, cfg.storage_options):
        for batch in read_unit(unit, opts, cfg.storage_options):
            for text in batch.texts:
                if max_docs is not None and seen >= max_docs:
                    return
                seen += 1
                yield text
