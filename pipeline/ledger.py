"""The ledger: one JSON entry per committed unit, written LAST (the commit point), plus the job
manifest and run summaries. Readers only ever read what the ledger lists."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipeline.storage import Output
from schemas.shards import LEDGER_DIR, RUNS_DIR

JOB_MANIFEST = "job.json"


class LedgerError(RuntimeError):
    """The output's ledger or manifest disagrees with the job (e.g. written with another config)."""


@dataclass(frozen=True)
class UnitNames:
    """Object names of one unit's outputs: a pure function of (unit id, config hash)."""

    stem: str

    @classmethod
    def of(cls, unit_id: str, config_hash: str) -> UnitNames:
        return cls(f"{unit_id}.{config_hash[:12]}")

    @property
    def shard(self) -> str:
        return f"shards/{self.stem}.arrow"

    @property
    def rejects(self) -> str:
        return f"rejects/{self.stem}.arrow"

    @property
    def sidecar(self) -> str:
        return f"sidecar/{self.stem}.arrow"

    @property
    def unigrams(self) -> str:
        return f"unigrams/{self.stem}.arrow"

    @property
    def ledger(self) -> str:
        return f"{LEDGER_DIR}/{self.stem}.json"


def committed_entries(output: Output, config_hash: str | None = None) -> list[dict[str, Any]]:
    """Every ledger entry of the output (optionally only those of one config), sorted by unit."""
    suffix = f".{config_hash[:12]}.json" if config_hash else ".json"
    entries = [output.read_json(f"{LEDGER_DIR}/{name}") for name in output.list(LEDGER_DIR, suffix)]
    return sorted(entries, key=lambda e: (e["unit"]["url"], e["unit"]["start"]))


def committed_unit_ids(output: Output, config_hash: str) -> set[str]:
    suffix = f".{config_hash[:12]}.json"
    return {name.split(".", 1)[0] for name in output.list(LEDGER_DIR, suffix)}


def read_manifest(output: Output) -> dict[str, Any] | None:
    return output.read_json(JOB_MANIFEST) if output.exists(JOB_MANIFEST) else None


def check_manifest(output: Output, manifest: dict[str, Any]) -> None:
    """Refuse to mix two configurations in one output; write the manifest on first use."""
    existing = read_manifest(output)
    if existing is None:
        output.write_json(JOB_MANIFEST, manifest)
        return
    if existing.get("config_hash") != manifest["config_hash"]:
        raise LedgerError(
            f"output {output.url} already holds shards of another configuration "
            f"(config {existing.get('config_hash')}, tokenizer {existing.get('tokenizer', {}).get('fingerprint')}); "
            f"this job has config {manifest['config_hash']}. Use --overwrite or another output."
        )


def write_run_summary(output: Output, summary: dict[str, Any]) -> str:
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{summary.get('run_nonce', '0')}"
    rel = f"{RUNS_DIR}/{run_id}.json"
    output.write_json(rel, {"run_id": run_id, **summary})
    return rel
