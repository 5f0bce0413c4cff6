"""The Ray side of a run: tokenizer actors (one tokenizer load per actor, whole units one at a
time) fed through a bounded queue by the driver, with a progress bar."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import ray
from tqdm import tqdm

from pipeline.errors import UnitFailed
from pipeline.output.storage import Output
from pipeline.tokenize.config import JobConfig
from pipeline.tokenize.inputs import WorkUnit
from pipeline.tokenize.unit import UnitTask, process_unit
from schemas.records import RunCounts
from tokenizers_impl import load_tokenizer

# One thread per actor: N single-threaded actors beat one multi-threaded tokenizer on few cores.
WORKER_ENV = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


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

    def process(self, unit: dict[str, Any]) -> RunCounts:
        """Commit one unit; returns what it added (nothing when it was already committed)."""
        outcome = process_unit(WorkUnit.from_dict(unit), self.tokenizer, self.task, self.output)
        entry = outcome.entry
        return RunCounts(1, entry.documents, entry.tokens, entry.bytes, entry.rejected)

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


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


def _failed(unit: WorkUnit, exc: ray.exceptions.RayTaskError) -> UnitFailed:
    return UnitFailed(
        f"unit {unit.unit_id} ({unit.url} bytes {unit.start}..{unit.end}) failed: "
        f"{type(exc.cause).__name__}: {exc.cause}. Committed units are kept; "
        f"rerun the same command to resume"
    )


def dispatch(cfg: JobConfig, todo: list[WorkUnit], task: UnitTask, n_actors: int) -> RunCounts:
    """Run every unit through n_actors actors, at most max_in_flight queued at once."""
    options = dict(num_cpus=cfg.actor_cpus, max_restarts=-1, max_task_retries=-1)
    actors = [
        TokenizeWorker.options(**options).remote(
            cfg.tokenizer.spec, cfg.tokenizer.options, cfg.output, task
        )
        for _ in range(n_actors)
    ]
    per_actor = max(1, (cfg.max_in_flight or 2 * n_actors) // n_actors)
    pending: dict[ray.ObjectRef, tuple[int, WorkUnit]] = {}
    load = [0] * n_actors
    queue = list(reversed(todo))
    done, t0 = RunCounts(), time.time()
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
                    pending[actors[i].process.remote(unit.describe())] = (i, unit)
                    load[i] += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, unit = pending.pop(ref)
                load[i] -= 1
                try:
                    done = done.add(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:
                    raise _failed(unit, exc) from exc.cause
                rate = done.bytes / 1e6 / max(time.time() - t0, 1e-9)
                bar.set_postfix(
                    docs=done.documents, tokens=done.tokens, MBps=f"{rate:.2f}", refresh=False
                )
                bar.update(1)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return done
