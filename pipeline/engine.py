"""The streaming engine: plan units, skip committed ones, and run the rest through a bounded pool of
Ray tokenizer actors (one tokenizer load per actor), with a progress bar and a run summary."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from typing import Any

import ray
from tqdm import tqdm

from pipeline.config import JobConfig
from pipeline.lease import OutputLease
from pipeline.ledger import check_manifest, committed_entries, committed_unit_ids, write_run_summary
from pipeline.repair import uncommit_bad_units
from pipeline.sources import WorkUnit, plan_units
from pipeline.storage import Output, redact
from pipeline.tokenize_unit import UnitTask, process_unit
from schemas.shards import (
    LEDGER_DIR,
    REJECTS_DIR,
    SCHEMA_VERSION,
    SHARDS_DIR,
    SIDECAR_DIR,
    UNIGRAMS_DIR,
)
from tokenizers_impl import load_tokenizer

log = logging.getLogger("tokenmill")

# One thread per actor: N single-threaded actors beat one multi-threaded tokenizer on few cores.
WORKER_ENV = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


class UnitFailed(RuntimeError):
    """A work unit raised (after the storage retries); names the unit and the cause."""


@ray.remote
class TokenizeWorker:
    """A Ray actor holding one loaded tokenizer; processes whole units, one at a time."""

    def __init__(self, spec: str, tokenizer_options: dict, output_url: str, task: UnitTask):
        # Set before the tokenizer libraries start their thread pools. (Not a runtime_env: that
        # would start dedicated worker processes instead of reusing Ray's prestarted ones.)
        os.environ.update(WORKER_ENV)
        self.tokenizer = load_tokenizer(
            spec, storage_options=task.storage_options, **tokenizer_options
        )
        self.output = Output(output_url, task.storage_options)
        self.task = task

    def process(self, unit: dict[str, Any]) -> dict[str, Any]:
        entry = process_unit(WorkUnit.from_dict(unit), self.tokenizer, self.task, self.output)
        return {
            k: entry[k]
            for k in ("unit_id", "docs_read", "documents", "rejected", "tokens", "bytes")
        } | {"already_committed": entry.get("already_committed", False)}

    def pid(self) -> int:
        return os.getpid()


def init_ray(address: str | None = None) -> None:
    """Connect to RAY_ADDRESS/--ray-address if given, else start a local Ray (dashboard off)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:  # a fresh local cluster: never attach silently to some other cluster found on this machine
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )


def reset_output(output: Output) -> None:
    for rel in (LEDGER_DIR, SHARDS_DIR, REJECTS_DIR, SIDECAR_DIR, UNIGRAMS_DIR, "job.json"):
        output.remove(rel, recursive=True)


def prepare(cfg: JobConfig) -> tuple[Any, Output, UnitTask, dict[str, Any]]:
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
    return tokenizer, output, task, manifest


def run_job(cfg: JobConfig) -> dict[str, Any]:
    """Run (or resume) a tokenization job; returns the run summary (also written under runs/).

    The whole run holds the output's lease (pipeline/lease.py): a second driver on the same output
    refuses with LeaseError instead of interleaving its writes."""
    with OutputLease(Output(cfg.output, cfg.storage_options), ttl_s=cfg.lease_seconds) as lease:
        return _run_leased(cfg, lease)


def _run_leased(cfg: JobConfig, lease: OutputLease) -> dict[str, Any]:
    started = time.time()
    tokenizer, output, task, manifest = prepare(cfg)
    repaired = uncommit_bad_units(output) if cfg.repair else []
    units = plan_units(cfg.input, cfg.read_options(), cfg.storage_options)
    done = committed_unit_ids(output, task.config_hash)
    todo = [u for u in units if u.unit_id not in done]
    log.info(
        "%d units planned, %d already committed, %d to run",
        len(units),
        len(units) - len(todo),
        len(todo),
    )
    this_run = {"units": 0, "documents": 0, "tokens": 0, "bytes": 0, "rejected": 0}
    n_actors = 0
    if todo:
        init_ray(cfg.ray_address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = max(1, min(cfg.actors or cpus, len(todo)))
        this_run = _dispatch(cfg, todo, task, n_actors)
    lease.check()
    entries = committed_entries(output, task.config_hash)
    elapsed = time.time() - started
    totals = {
        k: sum(e[k] for e in entries)
        for k in ("docs_read", "documents", "rejected", "tokens", "bytes")
    }
    summary = {
        "run_nonce": uuid.uuid4().hex[:6],
        "output": output.url,
        "config_hash": task.config_hash,
        "tokenizer": manifest["tokenizer"],
        "encoder": str(manifest["tokenizer"].get("encoder") or tokenizer.kind),
        "storage_options": redact(cfg.storage_options),
        "units_planned": len(units),
        "units_skipped": len(units) - len(todo),
        "units_run": this_run["units"],
        "units_committed": len(entries),
        "actors": n_actors,
        "repaired": repaired,
        "this_run": this_run,
        **totals,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(this_run["bytes"] / 1e6 / elapsed, 3) if elapsed else 0.0,
        "tokens_per_s": round(this_run["tokens"] / elapsed, 1) if elapsed else 0.0,
        "complete": len(entries) == len(units),
    }
    summary["summary_path"] = write_run_summary(output, summary)
    return summary


def _dispatch(
    cfg: JobConfig, todo: list[WorkUnit], task: UnitTask, n_actors: int
) -> dict[str, int]:
    options = dict(num_cpus=cfg.actor_cpus, max_restarts=-1, max_task_retries=-1)
    actors = [
        TokenizeWorker.options(**options).remote(
            cfg.tokenizer.spec, cfg.tokenizer.options, cfg.output, task
        )
        for _ in range(n_actors)
    ]
    per_actor = max(1, (cfg.max_in_flight or 2 * n_actors) // n_actors)
    pending: dict[ray.ObjectRef, int] = {}
    unit_of: dict[ray.ObjectRef, WorkUnit] = {}
    load = [0] * n_actors
    queue = list(reversed(todo))
    stats = {"units": 0, "documents": 0, "tokens": 0, "bytes": 0, "rejected": 0}
    t0 = time.time()
    bar = tqdm(
        total=len(todo),
        unit="unit",
        disable=not cfg.progress,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="tokenize",
    )
    try:
        while queue or pending:
            for i in range(n_actors):
                while queue and load[i] < per_actor:
                    unit = queue.pop()
                    ref = actors[i].process.remote(unit.describe())
                    pending[ref] = i
                    unit_of[ref] = unit
                    load[i] += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                load[pending.pop(ref)] -= 1
                unit = unit_of.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise UnitFailed(
                        f"unit {unit.unit_id} ({unit.url} bytes {unit.start}..{unit.end}) failed: "
                        f"{type(exc.cause).__name__}: {exc.cause}. Committed units are kept; "
                        f"rerun the same command to resume"
                    ) from exc.cause
                stats["units"] += 1
                for key in ("documents", "tokens", "bytes", "rejected"):
                    stats[key] += result[key]
                rate = stats["bytes"] / 1e6 / max(time.time() - t0, 1e-9)
                bar.set_postfix(
                    docs=stats["documents"],
                    tokens=stats["tokens"],
                    MBps=f"{rate:.2f}",
                    refresh=False,
                )
                bar.update(1)
                if cfg.stop_after_units and stats["units"] >= cfg.stop_after_units:
                    bar.close()
                    sys.stderr.flush()
                    os._exit(3)  # test hook: simulate a driver crash right after a commit
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return stats
