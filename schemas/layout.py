"""Where everything lives under an output URL: every object name tokenmill writes, in one place.

A committed unit's objects are named by a pure function of (unit id, config hash), so a retried or
resumed unit rewrites the same names with the same bytes."""

from __future__ import annotations

from dataclasses import dataclass

SHARDS_DIR = "shards"
REJECTS_DIR = "rejects"
LEDGER_DIR = "ledger"
RUNS_DIR = "runs"
SIDECAR_DIR = "sidecar"  # per-shard side tables (e.g. dynamic-merge batch vocabularies)
UNIGRAMS_DIR = "unigrams"  # per-shard token counts per (source, lang, token id), for reports
JOB_MANIFEST = "job.json"  # the configuration every committed unit of the output was made with
LEASE_FILE = "_lease.json"  # the driver that may write the output now
SPOOL_DIR = ".tmp"  # local scratch for files being built (never read as output)

# What `--overwrite` discards: every committed object and the manifest (run summaries stay).
COMMITTED_PATHS = (LEDGER_DIR, SHARDS_DIR, REJECTS_DIR, SIDECAR_DIR, UNIGRAMS_DIR, JOB_MANIFEST)


@dataclass(frozen=True)
class UnitNames:
    """Object names of one unit's outputs: a pure function of (unit id, config hash)."""

    stem: str

    @classmethod
    def of(cls, unit_id: str, config_hash: str) -> UnitNames:
        return cls(f"{unit_id}.{config_hash[:12]}")

    @property
    def shard(self) -> str:
        return f"{SHARDS_DIR}/{self.stem}.arrow"

    @property
    def rejects(self) -> str:
        return f"{REJECTS_DIR}/{self.stem}.arrow"

    @property
    def sidecar(self) -> str:
        return f"{SIDECAR_DIR}/{self.stem}.arrow"

    @property
    def unigrams(self) -> str:
        return f"{UNIGRAMS_DIR}/{self.stem}.arrow"

    @property
    def ledger(self) -> str:
        return f"{LEDGER_DIR}/{self.stem}.json"


def ledger_suffix(config_hash: str | None = None) -> str:
    """The name suffix of ledger entries (of one configuration when config_hash is given)."""
    return f".{config_hash[:12]}.json" if config_hash else ".json"
