"""The Ray side of a run: tokenizer actors (one tokenizer load per actor, whole units one at a
time) fed through a bounded queue by the driver, with a progress bar."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import ray
from tqdm import tqdm

from pipeline.errors import ConfigError, LeaseLost, UnitFailed, unit_failed
from pipeline.output.storage import Output
from pipeline.tokenize.config import JobConfig, absolute_spec, local_absolute, tokenizer_options
from pipeline.tokenize.feed import Work, WorkFeed
from pipeline.tokenize.inputs import WorkUnit
from pipeline.tokenize.unit import WORKER_ENV, UnitTask, check_fingerprint, process_unit
from schemas.records import LedgerEntry, RunCounts
from tokenizers_impl import load_tokenizer

# One thread per actor: N single-threaded actors beat one multi-threaded tokenizer on few cores.
RAY_CONNECT_TIMEOUT_S = 10.0
ACTOR_START_TIMEOUT_S = 300.0  # loading a big tokenizer on a busy node can take a while
log = logging.getLogger("tokenmill")


class UnitMetrics:
    """Ray metrics of committed units (exported with the cluster's other metrics: Prometheus,
    the dashboard): units, documents, tokens, bytes, rejects, and seconds per stage."""

    COUNTS = ("documents", "tokens", "bytes", "rejected")

    def __init__(self, output_url: str):
        from ray.util.metrics import Counter

        self.tags = {"output": output_url}
        keys = ("output",)
        self.units = Counter("tokenmill_units", "units committed", tag_keys=keys)
        self.counts = {
            name: Counter(f"tokenmill_{name}", f"{name} committed", tag_keys=keys)
            for name in self.COUNTS
        }
        self.seconds = Counter(
            "tokenmill_stage_seconds", "seconds per unit stage", tag_keys=("output", "stage")
        )

    def record(self, entry: LedgerEntry) -> None:
        self.units.inc(1, tags=self.tags)
        for name, counter in self.counts.items():
            value = getattr(entry, name)
            if value:
                counter.inc(value, tags=self.tags)
        for stage, seconds in entry.timings.items():
            if stage != "total_s" and seconds > 0:
                self.seconds.inc(seconds, tags={**self.tags, "stage": stage.removesuffix("_s")})


TASK_RETRIES = 5  # a unit whose actor dies (restarted each time) is sent again this often


@ray.remote
class TokenizeWorker:
    """A Ray actor holding one loaded tokenizer; processes whole units, one at a time."""

    def __init__(self, spec: str, options: dict, output_url: str, task: UnitTask):
        # Set before the tokenizer libraries start their thread pools. (Not a runtime_env: that
        # would start dedicated worker processes instead of reusing Ray's prestarted ones.)
        os.environ.update(WORKER_ENV)
        self.tokenizer = load_tokenizer(spec, storage_options=task.storage_options, **options)
        check_fingerprint(self.tokenizer, task, spec, "by a Ray actor")
        self.output = Output(output_url, task.storage_options)
        self.task = task
        self.metrics = UnitMetrics(output_url)

    def process(self, unit: dict[str, Any], data: bytes | None = None) -> RunCounts:
        """Commit one unit (`data`: a stream range's bytes); returns what it added."""
        unit = WorkUnit.from_dict(unit)
        outcome = process_unit(unit, self.tokenizer, self.task, self.output, data)
        entry = outcome.entry
        if not outcome.already_committed:
            self.metrics.record(entry)
        return RunCounts(1, entry.documents, entry.tokens, entry.bytes, entry.rejected)

    def pid(self) -> int:
        return os.getpid()


def probe_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the address, when nothing listens at a Ray cluster address (ray.init would
    retry its GCS connection for minutes)."""
    if address in ("auto", "local"):
        return
    if address.startswith(("http://", "https://")):  # (ray.init: a traceback naming RAY_ADDRESS)
        raise ConfigError(
            f"Ray address {address!r} is a dashboard URL (what `ray job submit --address` takes); "
            "a run connects to the cluster itself: HOST:6379 (its GCS port), ray://HOST:10001 "
            "(Ray Client) or auto. If RAY_ADDRESS holds the dashboard URL for `ray job submit`, "
            "pass --ray-address"
        )
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: let Ray interpret it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc


def init_ray(address: str | None = None, dashboard: bool = False) -> str | None:
    """Connect to RAY_ADDRESS/--ray-address if given, else start a local Ray (dashboard off unless
    asked). Returns the session folder of a local cluster this call started, else None."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        probe_address(address)
    with _keeping_sigterm_handler():
        try:
            context = ray.init(
                # a fresh local cluster unless told: never attach silently to another one here
                address=address or "local",
                include_dashboard=dashboard if not address else None,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        except ConnectionError as exc:  # ("auto" with no cluster running on this machine)
            if not address:
                raise
            raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    if address:
        return None
    if dashboard and context.dashboard_url:
        log.warning("Ray dashboard: http://%s", context.dashboard_url)
    return context.address_info.get("session_dir")


@contextlib.contextmanager
def _keeping_sigterm_handler():
    """ray.init replaces the SIGTERM handler with one that calls sys.exit wherever the main thread
    is (even inside a finalizer, where the exit is lost). Keep the caller's own handler (the CLI
    turns SIGTERM into a quiet, resumable stop): while ray.init runs (the driver may be
    tokenizing meanwhile) a SIGTERM is only noted, Ray's handler is not installed, and the
    caller's handler runs once ray.init is done, so Ray is never left half started."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if not callable(previous):  # no handler of the caller's own: Ray's is as good
        yield
        return
    pending: list[int] = []
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    install = getattr(utils, "set_sigterm_handler", None)  # how ray.init installs its handler
    signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    if install is not None:
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if install is not None:
            utils.set_sigterm_handler = install
        signal.signal(signal.SIGTERM, previous)
    if pending:
        previous(signal.SIGTERM, None)


def size_pool(cfg: JobConfig, n_units: int) -> tuple[int, list[str]]:
    """How many actors to start: as asked (default one per CPU), but never more than the cluster
    can schedule at `actor_cpus` each (a pool that cannot start would wait forever) nor more than
    there are units. An actor larger than every node is a configuration error."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    largest = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    if cfg.actor_cpus > largest:
        raise ConfigError(
            f"actor_cpus {cfg.actor_cpus} is more than any Ray node has (largest: {largest} CPUs)"
        )
    free = ray.available_resources().get("CPU", 0.0)
    fits = int(free / cfg.actor_cpus + 1e-9)
    wanted = cfg.actors or int(ray.cluster_resources().get("CPU", 1))
    notes = []
    if wanted > fits:
        notes.append(
            f"actors capped at {fits}: {wanted} actors x {cfg.actor_cpus} CPUs do not fit in the "
            f"{free:g} free CPUs of the cluster"
        )
        log.warning(notes[-1])
    if fits < 1:
        raise ConfigError(
            f"no actor fits: actor_cpus {cfg.actor_cpus} and {free:g} CPUs free in the cluster"
        )
    return max(1, min(wanted, fits, n_units)), notes


def reap_ray_session(session_dir: str | None) -> int:
    """Stop the Ray processes a dead driver's local cluster left on this machine (only those of its
    session folder, never another cluster's); returns how many were stopped."""
    if not session_dir:
        return 0
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    roots = session_processes(session_dir)
    victims = {p.pid: p for root in roots for p in [root, *_descendants(root)]}
    victims = {pid: p for pid, p in victims.items() if pid not in spared}
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if victims:
        log.warning("stopped %d Ray processes of a dead run (%s)", len(victims), session_dir)
    return len(victims)


def session_processes(session_dir: str) -> list[psutil.Process]:
    """The Ray processes of one local session still running on this machine (this process and
    its parents excluded)."""
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.pid not in spared
        and p.status() != psutil.STATUS_ZOMBIE
        and _in_session(p, session_dir)
    ]


def _in_session(proc: psutil.Process, session_dir: str) -> bool:
    """A Ray process of that session: named in its command line, or (for the agents, which
    rename themselves `ray::...`) holding its log files open."""
    cmdline = proc.info["cmdline"] or []
    name = proc.info["name"] or ""
    if not name.startswith("ray::") and not any("/ray/" in arg for arg in cmdline[:3]):
        return False  # not a Ray process: never touched
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if any(session_dir in arg for arg in cmdline):
            return True
        return any(f.path.startswith(session_dir) for f in proc.open_files())
    except psutil.Error:
        return False


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _failed(unit: WorkUnit, exc: ray.exceptions.RayTaskError) -> Exception:
    if isinstance(exc.cause, LeaseLost):  # fenced: this run no longer owns the output
        return LeaseLost(str(exc.cause))
    return unit_failed(unit, exc.cause)


def start_actors(cfg: JobConfig, task: UnitTask, n_actors: int) -> list[Any]:
    """Start the pool and wait until its actors run; ones that cannot start in time are dropped
    (with a warning) rather than left holding units forever."""
    options = dict(num_cpus=cfg.actor_cpus, max_restarts=-1, max_task_retries=TASK_RETRIES)
    # local paths as the driver reads them: an actor of a cluster works in the folder the
    # cluster was started from (a relative tokenizer path loaded whatever file of that name was
    # there, and its shards went under the output recording the driver's tokenizer)
    absolute = absolute_spec(cfg.tokenizer.model_dump())
    spec, output = f"{absolute['kind']}:{absolute['path']}", local_absolute(cfg.output)
    actors = [
        TokenizeWorker.options(**options).remote(spec, tokenizer_options(cfg), output, task)
        for _ in range(n_actors)
    ]
    pids = {actor.pid.remote(): actor for actor in actors}
    ready, _ = ray.wait(list(pids), num_returns=len(pids), timeout=ACTOR_START_TIMEOUT_S)
    started = [pids[ref] for ref in ready]
    for ref in ready:
        try:
            ray.get(ref)  # an actor whose constructor failed raises here, with its cause
        except ray.exceptions.RayError as exc:  # (a page of tracebacks, exit 1)
            for actor in actors:
                ray.kill(actor)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise UnitFailed(
                f"a tokenizer actor could not start on the cluster: {lines[-1] if lines else exc} "
                "(the actors load the tokenizer and open the output themselves, with the "
                "cluster's environment: credentials and files must be there too, e.g. through "
                "--storage-option or a runtime env); committed units are kept"
            ) from None
    for ref in set(pids) - set(ready):
        ray.kill(pids[ref])
    if not started:
        raise UnitFailed(
            f"no tokenizer actor started within {ACTOR_START_TIMEOUT_S:.0f} s "
            f"({n_actors} asked at {cfg.actor_cpus} CPUs each); committed units are kept"
        )
    if len(started) < n_actors:
        log.warning("%d of %d actors started; running with those", len(started), n_actors)
    return started


def dispatch(cfg: JobConfig, feed: WorkFeed, task: UnitTask, n_actors: int) -> RunCounts:
    """Run the feed's work through n_actors actors, at most max_in_flight units queued at once
    (the feed is read lazily: a stream's ranges are cut as actors free up)."""
    actors = start_actors(cfg, task, n_actors)
    return run_actors(cfg, actors, iter(feed), None if feed.has_streams else len(feed))


def run_actors(
    cfg: JobConfig, actors: list[Any], work: Iterator[Work], total: int | None
) -> RunCounts:
    """Run the work items through the started actors (killed at the end), at most
    max_in_flight units queued at once; `total`: the units expected, for the progress bar."""
    n_actors = len(actors)
    per_actor = max(1, (cfg.max_in_flight or 2 * n_actors) // n_actors)
    pending: dict[ray.ObjectRef, tuple[int, WorkUnit]] = {}
    load = [0] * n_actors
    more = True
    done, t0 = RunCounts(), time.time()
    bar = tqdm(
        total=total,
        unit="unit",
        disable=not cfg.progress,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="tokenize",
    )
    try:
        while more or pending:
            for i in range(n_actors):
                while more and load[i] < per_actor:
                    item = next(work, None)
                    if item is None:
                        more = False
                        break
                    ref = actors[i].process.remote(item.unit.describe(), item.data)
                    pending[ref] = (i, item.unit)
                    load[i] += 1
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, unit = pending.pop(ref)
                load[i] -= 1
                try:
                    done = done.add(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:
                    raise _failed(unit, exc) from exc.cause
                except ray.exceptions.RayActorError as exc:  # (its retries spent: a crash loop)
                    raise UnitFailed(
                        f"unit {unit.unit_id} ({unit.url}) failed: its actor died "
                        f"{TASK_RETRIES + 1} times while the unit ran or waited on it (a "
                        "tokenizer that crashes its process on this unit or one sent with it, "
                        "or the machine's memory). Committed units are kept; rerun the same "
                        "command to resume"
                    ) from exc
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
