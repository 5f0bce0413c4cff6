"""Stream the accepted texts of a corpus (same planning and validation as a job), e.g. for training,
counting the records that were not (`Rejected`: a trainer's caller says how many, and where)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.tokenize.config import JobConfig
from pipeline.tokenize.inputs import plan_units, read_unit
from schemas.records import Reject


@dataclass
class Rejected:
    """Records read but not taken as texts: how many, and the first few."""

    count: int = 0
    first: list[Reject] = field(default_factory=list)
    keep: int = 3

    def add(self, rejects: list[Reject]) -> None:
        self.count += len(rejects)
        self.first += rejects[: max(self.keep - len(self.first), 0)]

    def describe(self) -> str:
        """'N records rejected (FILE line L: REASON; ...)', or '' when none was."""
        if not self.count:
            return ""
        where = "; ".join(f"{_place(r)}: {r.reason}" for r in self.first)
        more = ", ..." if self.count > len(self.first) else ""
        return f"{self.count:,} record(s) rejected ({where}{more})"


def _place(reject: Reject) -> str:
    if reject.line is not None:
        return f"{reject.source} line {reject.line}"
    if reject.row is not None:
        return f"{reject.source} row {reject.row}"
    return f"{reject.source} offset {reject.offset}"


def iter_texts(
    cfg: JobConfig, max_docs: int | None = None, rejected: Rejected | None = None
) -> Iterator[str]:
    seen = 0
    opts = cfg.read_options()
    for unit in plan_units(cfg.input, opts, cfg.storage_options):
        for batch in read_unit(unit, opts, cfg.storage_options):
            if rejected is not None:
                rejected.add(batch.rejects)
            for text in batch.texts:
                if max_docs is not None and seen >= max_docs:
                    return
                seen += 1
                yield text
