"""Un-committing units: `--repair` (units whose committed files fail `verify`) and units whose
inputs changed or disappeared. The ledger entry goes first: once it is gone the unit is
uncommitted whatever happens next, and a rerun rewrites it."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.output.ledger import entry_unit_id, read_ledger
from pipeline.output.storage import Output
from pipeline.output.verify import verify_output
from schemas.layout import UnitNames
from schemas.records import LedgerEntry

log = logging.getLogger("tokenmill")


def uncommit(output: Output, entry: LedgerEntry, *, remove_files: bool) -> None:
    """Uncommit one unit: its ledger entry first, then (when asked) the files it listed."""
    output.remove(UnitNames.of(entry.unit_id, entry.config_hash).ledger)
    if remove_files:
        for name, _ in entry.files().values():
            output.remove(name)


def uncommit_bad_units(output: Output) -> list[dict[str, Any]]:
    """Drop the ledger entries of the units `verify` flags; returns [{unit_id, problems}]. Their
    files are left in place: the rerun rewrites the same names."""
    report = verify_output(output.url, output.storage_options)
    bad = set(report.bad_units)
    if not bad:
        return []
    of_unit: dict[str, list[str]] = {}  # (grouped once: a scan per bad unit was quadratic)
    for problem in report.problems:
        if problem.startswith("unit "):
            of_unit.setdefault(problem[5:].split(":", 1)[0], []).append(problem)
    dropped = []
    entries, damaged = read_ledger(output)
    for rel in damaged:  # an entry that does not read: its object goes, the rerun redoes the unit
        unit_id = entry_unit_id(rel)
        log.warning("repair: re-running unit %s (its ledger entry is malformed)", unit_id)
        output.remove(rel)
        dropped.append({"unit_id": unit_id, "problems": of_unit.get(unit_id, [])})
    for entry in entries:
        if entry.unit_id not in bad:
            continue
        problems = of_unit.get(entry.unit_id, [])
        log.warning("repair: re-running unit %s (%s)", entry.unit_id, "; ".join(problems))
        uncommit(output, entry, remove_files=False)
        dropped.append({"unit_id": entry.unit_id, "problems": problems})
    return dropped
