"""`--repair`: verify the output, then un-commit every unit whose committed files fail the check
(missing, corrupted, unreadable), so the run that follows rewrites exactly those units."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.output.ledger import committed_entries
from pipeline.output.storage import Output
from pipeline.output.verify import verify_output
from schemas.layout import UnitNames

log = logging.getLogger("tokenmill")


def uncommit_bad_units(output: Output) -> list[dict[str, Any]]:
    """Drop the ledger entries of the units `verify` flags; returns [{unit_id, problems}]."""
    report = verify_output(output.url, output.storage_options)
    bad = set(report.bad_units)
    if not bad:
        return []
    dropped = []
    for entry in committed_entries(output):
        if entry.unit_id not in bad:
            continue
        problems = [p for p in report.problems if p.startswith(f"unit {entry.unit_id}:")]
        log.warning("repair: re-running unit %s (%s)", entry.unit_id, "; ".join(problems))
        # The ledger entry goes first: once it is gone the unit is uncommitted, whatever follows.
        output.remove(UnitNames.of(entry.unit_id, entry.config_hash).ledger)
        dropped.append({"unit_id": entry.unit_id, "problems": problems})
    return dropped
