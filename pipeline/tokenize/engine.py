"""The streaming engine's driver: plan units, skip committed ones, run the rest on Ray actors
(pipeline/tokenize/actors.py) under the output's lease, and write the run summary."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from pipeline.output import (
    Output,
    check_manifest,
    committed_entries,
    committed_unit_ids,
    redact,
    write_run_summary,
)
from pipeline.output.lease import OutputLease
from pipeline.output.repair import uncommit_bad_units
from pipeline.tokenize.config import JobConfig
from pipeline.tokenize.inputs import plan_units
from pipeline.tokenize.unit import UnitTask
from schemas.layout import COMMITTED_PATHS
from schemas.records import RunCounts, RunSummary
from schemas.shards import SCHEMA_VERSION
from tokenizers_impl import TokenizerBase, load_tokenizer

log = logging.getLogger("tokenmill")


@dataclass(frozen=True)
class PreparedJob:
    """What the driver knows before planning: the loaded tokenizer, the output, the unit task."""

    tokenizer: TokenizerBase
    output: Output
    task: UnitTask
    manifest: dict[str, Any]


def reset_output(output: Output) -> None:
    for rel in COMMITTED_PATHS:
        output.remove(rel, recursive=True)


def prepare(cfg: JobConfig) -> PreparedJob:
    """Load the tokenizer once on the driver (validates it), open the output, check the manifest."""
    tokenizer = load_tokenizer(
        cfg.tokenizer.spec, storage_options=cfg.storage_options, **cfg.tokenizer.options
    )
    config_hash = cfg.config_hash(tokenizer.fingerprint)
    output = Output(cfg.output, cfg.storage_options)
    if cfg.overwrite:
        reset_output(output)
    manifest = {
        "config_hash": config_hash,
        "tokenizer": tokenizer.describe(),
        "tokenizer_spec": cfg.tokenizer.model_dump(),
        "options": cfg.output_options(),
        "inputs": cfg.input,
        "schema_version": SCHEMA_VERSION,
    }
    check_manifest(output, manifest)
    task = UnitTask(
        cfg.read_options(), config_hash, cfg.token_offsets, cfg.word_stats, cfg.storage_options
    )
    return PreparedJob(tokenizer, output, task, manifest)


def run_job(cfg: JobConfig) -> RunSummary:
    """Run (or resume) a tokenization job; returns the run summary (also written under runs/).

    The whole run holds the output's lease (pipeline/output/lease.py): a second driver on the same
    output refuses with LeaseError instead of interleaving its writes."""
    with OutputLease(Output(cfg.output, cfg.storage_options), ttl_s=cfg.lease_seconds) as lease:
        return _run_leased(cfg, lease)


def _run_leased(cfg: JobConfig, lease: OutputLease) -> RunSummary:
    started = time.time()
    job = prepare(cfg)
    repaired = uncommit_bad_units(job.output) if cfg.repair else []
    units = plan_units(cfg.input, cfg.read_options(), cfg.storage_options)
    done = committed_unit_ids(job.output, job.task.config_hash)
    todo = [u for u in units if u.unit_id not in done]
    log.info(
        "%d units planned, %d already committed, %d to run",
        len(units),
        len(units) - len(todo),
        len(todo),
    )
    this_run, n_actors = RunCounts(), 0
    if todo:
        from pipeline.tokenize.actors import cluster_cpus, dispatch, init_ray

        init_ray(cfg.ray_address)
        n_actors = max(1, min(cfg.actors or cluster_cpus(), len(todo)))
        this_run = dispatch(cfg, todo, job.task, n_actors)
    lease.check()
    entries = committed_entries(job.output, job.task.config_hash)
    elapsed = time.time() - started
    summary = RunSummary(
        run_nonce=uuid.uuid4().hex[:6],
        output=job.output.url,
        config_hash=job.task.config_hash,
        tokenizer=job.manifest["tokenizer"],
        encoder=str(job.manifest["tokenizer"].get("encoder") or job.tokenizer.kind),
        storage_options=redact(cfg.storage_options),
        units_planned=len(units),
        units_skipped=len(units) - len(todo),
        units_run=this_run.units,
        units_committed=len(entries),
        actors=n_actors,
        repaired=repaired,
        this_run=this_run,
        docs_read=sum(e.docs_read for e in entries),
        documents=sum(e.documents for e in entries),
        rejected=sum(e.rejected for e in entries),
        tokens=sum(e.tokens for e in entries),
        bytes=sum(e.bytes for e in entries),
        seconds=round(elapsed, 3),
        mb_per_s=round(this_run.bytes / 1e6 / elapsed, 3) if elapsed else 0.0,
        tokens_per_s=round(this_run.tokens / elapsed, 1) if elapsed else 0.0,
        complete=len(entries) == len(units),
    )
    return replace(summary, summary_path=write_run_summary(job.output, summary))
