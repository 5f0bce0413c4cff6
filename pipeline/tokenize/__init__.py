"""The tokenization job: inputs are planned into units (`inputs/`), each unit is read, tokenized
and committed by `unit.process_unit` (ledger entry last), on Ray actors driven by `engine.run_job`.

`load_config` and `run_job` are the entry points; `run_job` is imported on first use, so loading
a config does not import Ray."""

from __future__ import annotations

from typing import Any

from pipeline.tokenize.config import JobConfig, TokenizerSpec, load_config

__all__ = ["JobConfig", "TokenizerSpec", "load_config", "run_job"]


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from pipeline.tokenize.engine import run_job

        return run_job
    raise AttributeError(name)
