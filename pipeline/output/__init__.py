"""What every subsystem shares about a committed output: storage (one fsspec wrapper with atomic
commits and retries), the ledger (the commit record of each unit, and `iter_committed`, the only way a
reader learns which files count), shard and rejects files, the driver's lease, verify and repair."""

from pipeline.output.ledger import (
    check_manifest,
    committed_entries,
    committed_unit_ids,
    iter_committed,
    read_manifest,
    write_run_summary,
)
from pipeline.output.storage import Output, redact, url_to_fs, with_retries
from schemas.layout import UnitNames
from schemas.records import LedgerEntry, RunSummary, VerifyReport

__all__ = [
    "LedgerEntry",
    "Output",
    "RunSummary",
    "UnitNames",
    "VerifyReport",
    "check_manifest",
    "committed_entries",
    "committed_unit_ids",
    "iter_committed",
    "read_manifest",
    "redact",
    "url_to_fs",
    "with_retries",
    "write_run_summary",
]
