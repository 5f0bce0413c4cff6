"""The streaming engine's driver: plan units, reconcile them with the ledger, run the rest on Ray
actors (pipeline/tokenize/actors.py) under the output's lease, and write the run summary."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from pipeline.errors import ConfigError, InputsChanged, local_unit_error
from pipeline.interrupts import deferred
from pipeline.output import (
    Output,
    check_manifest,
    committed_entries,
    redact,
    write_run_summary,
)
from pipeline.output.lease import OutputLease, owner_dead
from pipeline.output.repair import uncommit, uncommit_bad_units
from pipeline.output.verify import orphan_files, spool_files
from pipeline.tokenize.config import JobConfig, absolute_spec, tokenizer_options
from pipeline.tokenize.feed import WorkFeed, skipped_note, todo_bytes
from pipeline.tokenize.helpers import EarlyHelpers, HelperProcess
from pipeline.tokenize.inputs import WorkUnit, is_stream, one_range, plan_units, same_file
from pipeline.tokenize.inputs.chat_template import resolve_chat
from pipeline.tokenize.inputs.packs import packable
from pipeline.tokenize.unit import UnitTask, process_unit
from schemas.layout import COMMITTED_PATHS
from schemas.records import LedgerEntry, RunCounts, RunSummary
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


@dataclass(frozen=True)
class Reconciled:
    """The plan against the ledger: units to run, and what changed inputs uncommitted."""

    todo: list[WorkUnit]
    committed: list[LedgerEntry]
    changed_urls: list[str]
    uncommitted: int
    planned_ids: list[str] | None = (
        None  # once known: every unit id of the run, streams' ranges too
    )
    skipped_ranges: int = 0  # ranges of streams found already committed


def reset_output(output: Output) -> None:
    for rel in COMMITTED_PATHS:
        output.remove(rel, recursive=True)


def check_output(output: Output) -> None:
    """An output must be a folder or prefix, never an existing file."""
    if output.fs.isfile(output.root):
        raise ConfigError(f"output {output.url!r} is a file; give a folder or prefix URL")
    if output.local:  # (made on first use: a path under a file, or where nothing can be made,
        # ended in the lease's OSError traceback; checked without making it, so that a run
        # refused later leaves nothing behind)
        existing = output.root
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            what = "a file" if os.path.isfile(existing) else "not a writable folder"
            raise ConfigError(f"output {output.url!r} cannot be created: {existing} is {what}")


def prepare(cfg: JobConfig, fence: dict[str, Any] | None = None) -> PreparedJob:
    """Load the tokenizer once on the driver (validates it), open the output, check the manifest.
    The manifest is written only once the run has planned its units (see `run_job`)."""
    tokenizer = load_tokenizer(
        cfg.tokenizer.spec, storage_options=cfg.storage_options, **tokenizer_options(cfg)
    )
    check_tokenizer(cfg, tokenizer)
    read = cfg.read_options(_chat_fields(cfg, tokenizer))
    config_hash = cfg.config_hash(tokenizer.fingerprint, read)
    output = Output(cfg.output, cfg.storage_options)
    manifest = {
        "config_hash": config_hash,
        "tokenizer": tokenizer.describe(),
        "tokenizer_spec": absolute_spec(cfg.tokenizer.model_dump()),
        "options": cfg.output_options(read),
        "inputs": cfg.input,
        "schema_version": SCHEMA_VERSION,
    }
    task = UnitTask(
        read,
        config_hash,
        cfg.token_offsets,
        cfg.word_stats,
        cfg.storage_options,
        fence,
        cfg.verify_sample,
        tokenizer.fingerprint,
    )
    return PreparedJob(tokenizer, output, task, manifest)


def check_tokenizer(cfg: JobConfig, tokenizer: TokenizerBase) -> None:
    """What a job needs of its tokenizer beyond loading: special ids in its vocabulary, the EOS /
    BOS the job names taken (a plugin may ignore the option), lossless for token offsets."""
    spec, options = cfg.tokenizer.spec, tokenizer_options(cfg)
    for key in ("eos", "bos"):
        token_id = getattr(tokenizer, f"{key}_id", None)
        if token_id is not None and not 0 <= token_id < tokenizer.vocab_size:
            raise ConfigError(
                f"tokenizer {spec} gives {key}_id {token_id}, outside its vocabulary "
                f"(0..{tokenizer.vocab_size - 1})"
            )
        named = options.get(f"{key}_token")
        if named is not None and getattr(tokenizer, f"{key}_token", None) != named:
            raise ConfigError(
                f"tokenizer {spec} did not take {key}_token={named!r} (its {key}_token is "
                f"{getattr(tokenizer, f'{key}_token', None)!r}): its plugin ignores that option"
            )
    if cfg.token_offsets and not tokenizer.lossless:
        raise ConfigError(
            f"--token-offsets needs a lossless tokenizer (each token's bytes are the text's); "
            f"{spec} is not"
        )


def _chat_fields(cfg: JobConfig, tokenizer: TokenizerBase) -> dict[str, str]:
    chat = resolve_chat(
        cfg.format,
        cfg.chat_template,
        tokenizer.chat_template,
        tokenizer.bos_token,
        tokenizer.eos_token,
        cfg.storage_options,
    )
    if chat and (tokenizer.shard_columns or tokenizer.sidecar_schema is not None):
        raise ConfigError(
            f"chat records need a tokenizer that encodes each text on its own; {tokenizer.kind} "
            "keeps per-batch state (give --chat-template with bpe, tiktoken, sentencepiece or lib)"
        )
    return chat


def reconcile(cfg: JobConfig, job: PreparedJob, units: list[WorkUnit]) -> Reconciled:
    """Compare the plan with the ledger: committed units no longer planned read inputs that changed
    or disappeared. `redo` uncommits them (entry first, then their files) so the output equals a
    fresh run over the current inputs; `refuse` stops, naming the files."""
    planned = {u.unit_id for u in units}
    streams: dict[str, list[WorkUnit]] = {}
    for unit in units:
        if is_stream(unit):
            streams.setdefault(unit.url, []).append(unit)
    entries = committed_entries(job.output, job.task.config_hash)

    whole: dict[str, bool] = {}  # stream unit id: its reader hands the file over as one range

    def one(stream: WorkUnit) -> bool:
        if stream.unit_id not in whole:
            whole[stream.unit_id] = one_range(stream, cfg.read_options(), cfg.storage_options)
        return whole[stream.unit_id]

    def current(entry: LedgerEntry) -> bool:
        ranges_of = streams.get(entry.unit.url, ())
        if entry.unit_id in planned or any(same_file(s, entry.unit) for s in ranges_of):
            return True
        # the range (0, -1) is a whole-file unit: current if the reader still cuts none
        whole_unit = entry.unit.start == 0 and entry.unit.end == -1
        return whole_unit and any(replace(s, end=-1) == entry.unit and one(s) for s in ranges_of)

    stale = [e for e in entries if not current(e)]
    files = {_file_identity(m) for u in units for m in (u.members or (u,))}
    changed_of = {e.unit_id: _changed_files(e, files) for e in stale}
    changed = sorted({url for urls in changed_of.values() for url in urls})
    if changed and cfg.on_input_change == "refuse":
        raise InputsChanged(
            f"{len(changed)} input file(s) changed or disappeared since their units were "
            f"committed to {job.output.url}: {', '.join(changed[:10])}"
            f"{' ...' if len(changed) > 10 else ''}; rerun with --on-input-change redo to "
            f"retokenize them, or restore the files"
        )
    for entry in stale:
        if changed_of[entry.unit_id]:
            log.warning("input changed: uncommitting unit %s of %s", entry.unit_id, entry.unit.url)
        else:  # its files all still there, planned in other units (a pack re-cut because a
            # file was added beside them; a Parquet file's row groups packed by a newer version)
            log.info("units re-cut: uncommitting unit %s of %s", entry.unit_id, entry.unit.url)
        uncommit(job.output, entry, remove_files=True)
    kept = [e for e in entries if current(e)]
    done = {e.unit_id for e in kept}
    todo = [u for u in units if is_stream(u) or u.unit_id not in done]
    return Reconciled(todo, kept, changed, len(stale))


SMALL_FILE = 1 << 20  # a whole file under this many bytes is a small one
SMALL_FILES_NOTE = 1000  # files: from this many small ones, the run suggests packing them


def small_file_note(cfg: JobConfig, units: list[WorkUnit]) -> str | None:
    """A note when the plan holds many small whole files, one unit (shard, ledger entry) each,
    and packing them is off."""
    if cfg.pack_small_files:
        return None
    opts = replace(cfg.read_options(), pack_small_files=SMALL_FILE)
    small = sum(packable(u, opts) for u in units)
    if small < SMALL_FILES_NOTE:
        return None
    return (
        f"{small} of {len(units)} units are whole files under 1 MiB, each its own shard and "
        f"ledger entry: --pack-small-files {SMALL_FILE} packs them into units of up to "
        "--unit-bytes"
    )


def _changed_files(entry: LedgerEntry, planned_files: set[tuple]) -> list[str]:
    """The files of a stale entry that changed or disappeared: its files (the unit's, or a
    pack's members) of which no version is planned any more. None: the files are all still
    there, planned in other units (a pack re-cut: a file added beside them; the row groups of a
    Parquet file packed otherwise); `planned_files`: `_file_identity` of every planned unit and
    pack member."""
    members = entry.unit.members or (entry.unit,)
    return [m.url for m in members if _file_identity(m) not in planned_files]


def _file_identity(unit: WorkUnit) -> tuple:
    """The file version a unit reads (any unit of that version has the same)."""
    return (unit.url, unit.fmt, unit.compression, unit.size, unit.etag, unit.version)


def stage_seconds(entries: list[LedgerEntry]) -> dict[str, float]:
    """Seconds per unit stage (read, tokenize, verify, stats, write, total) over the entries."""
    totals: dict[str, float] = {}
    for entry in entries:
        for stage, seconds in entry.timings.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return {stage: round(seconds, 3) for stage, seconds in sorted(totals.items())}


def is_local(cfg: JobConfig) -> bool:
    """A run on this machine alone: no Ray address and no actor count asked for. Its driver
    tokenizes too (pipeline/tokenize/driver.py); asking for actors or a cluster always uses Ray
    for every unit."""
    return not cfg.actors and not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))


def runs_in_driver(cfg: JobConfig, units: list[WorkUnit]) -> bool:
    """A small local job runs in the driver without a thought of Ray (same units, same bytes,
    same ledger either way), on one thread unless the job asks for more workers there
    (driver_threads > 1, driver_processes: they were ignored under local_bytes)."""
    asked = cfg.driver_threads > 1 or bool(cfg.driver_processes)
    return is_local(cfg) and todo_bytes(units) <= cfg.local_bytes and not asked


def run_in_driver(cfg: JobConfig, job: PreparedJob, feed: WorkFeed) -> RunCounts:
    """Process the units one after another in this process, with the tokenizer already loaded."""
    done = RunCounts()
    total = None if feed.has_streams else len(feed)
    bar = tqdm(total=total, unit="unit", disable=not cfg.progress, file=sys.stderr, desc="tokenize")
    with bar:
        for work in feed:
            with deferred():  # a stop request ends the unit in hand first (its first imports)
                try:
                    unit = process_unit(work.unit, job.tokenizer, job.task, job.output, work.data)
                except Exception as exc:  # noqa: BLE001 - an input gone: UnitFailed, as actors'
                    raise local_unit_error(work.unit, exc) from exc
            entry = unit.entry
            done = done.add(
                RunCounts(1, entry.documents, entry.tokens, entry.bytes, entry.rejected)
            )
            bar.update(1)
    return done


def run_job(cfg: JobConfig) -> RunSummary:
    """Run (or resume) a tokenization job; returns the run summary (also written under runs/).

    The whole run holds the output's lease (pipeline/output/lease.py): a second driver on the same
    output refuses with LeaseError instead of interleaving its writes, and every commit checks that
    the lease is still this run's (a driver that lost it commits nothing more)."""
    if cfg.format == "shards" and not cfg.source_tokenizer:  # (as `retokenize` defaults it)
        from pipeline.tokenize.inputs.shards import shards_source

        source = shards_source(cfg.input, cfg.storage_options)
        cfg = cfg.model_copy(update={"source_tokenizer": source})
    output = Output(cfg.output, cfg.storage_options)
    check_output(output)
    with OutputLease(output, ttl_s=cfg.lease_seconds) as lease:
        if lease.replaced and owner_dead(lease.replaced):
            from pipeline.tokenize.actors import reap_ray_session

            reap_ray_session(lease.replaced.get("ray_session_dir"))
        return _run_leased(cfg, lease)


def _run_leased(cfg: JobConfig, lease: OutputLease) -> RunSummary:
    started = time.time()
    units = plan_units(cfg.input, cfg.read_options(), cfg.storage_options, exclude=[cfg.output])
    with early_helpers(cfg, units) as early:
        return _run_planned(cfg, lease, units, early, started)


def early_helpers(cfg: JobConfig, units: list[WorkUnit]) -> EarlyHelpers:
    """The helper processes a local job will want (`driver.uses_helpers`, on the bytes of every
    planned unit: committed ones are not known yet), started before the driver loads its own
    tokenizer, so that their imports and tokenizer load run beside the driver's instead of
    after them (about a second of a core each: where a helper joined a second late, a job
    needed 1 GiB for it to pay, see docs/scale-out.md). Empty where none is wanted or can start."""
    if not is_local(cfg) or runs_in_driver(cfg, units):
        return EarlyHelpers([])
    from pipeline.tokenize.driver import driver_threads, uses_helpers

    workers = driver_threads(cfg)
    if not uses_helpers(cfg, workers, todo_bytes(units)):
        return EarlyHelpers([])
    spec, options = cfg.tokenizer.spec, tokenizer_options(cfg)
    helpers: list[HelperProcess] = []
    try:
        for _ in range(workers - 1):
            helpers.append(HelperProcess.early(spec, options, cfg.storage_options))
    except OSError as exc:  # (no process to spare: the driver tries again, else a thread)
        log.warning("could not start a helper process early (%s)", exc)
    return EarlyHelpers(helpers)


def _run_planned(
    cfg: JobConfig,
    lease: OutputLease,
    units: list[WorkUnit],
    early: EarlyHelpers,
    started: float,
) -> RunSummary:
    with deferred():  # loading the tokenizer imports extension modules
        job = prepare(cfg, lease.fence())
    stale_spool = spool_files(job.output)
    for rel in stale_spool:
        job.output.remove(rel)
    # nothing in the output changes before the plan and the manifest check pass: a mistyped
    # --input with --overwrite wiped a good output, a refused --repair had uncommitted units
    if cfg.overwrite:
        reset_output(job.output)
    check_manifest(job.output, job.manifest)
    repaired = uncommit_bad_units(job.output) if cfg.repair else []
    plan = reconcile(cfg, job, units)
    orphans = orphan_files(job.output)  # (the lease makes this run the only writer)
    for rel in orphans:
        job.output.remove(rel)
    log.info(
        "%d units planned, %d already committed, %d to run",
        len(units),
        len(units) - len(plan.todo),
        len(plan.todo),
    )
    this_run, n_actors, notes = RunCounts(), 0, _warnings(cfg, job, units)
    feed = WorkFeed(
        plan.todo, {e.unit_id for e in plan.committed}, job.task.read, cfg.storage_options
    )
    if not (plan.todo and is_local(cfg) and not runs_in_driver(cfg, plan.todo)):
        early.discard()
    if plan.todo and runs_in_driver(cfg, plan.todo):
        this_run = run_in_driver(cfg, job, feed)
        todo = todo_bytes(plan.todo)
        notes.append(f"ran in the driver process: {todo} input bytes to do{skipped_note(feed)}")
    elif plan.todo and is_local(cfg):
        from pipeline.tokenize.driver import run_local

        this_run, n_actors, local_notes = run_local(
            cfg,
            feed,
            job.tokenizer,
            job.task,
            lambda: Output(cfg.output, cfg.storage_options),
            lambda session_dir: lease.publish(ray_session_dir=session_dir),
            early,
        )
        notes += local_notes
    elif plan.todo:
        with deferred():  # importing and starting Ray are not cut short
            from pipeline.tokenize.actors import dispatch, init_ray, size_pool

            session_dir = init_ray(cfg.ray_address, dashboard=cfg.dashboard)
            if session_dir:
                lease.publish(ray_session_dir=session_dir)
        # a stream's ranges are not counted yet: it may keep every actor busy
        n_actors, pool_notes = size_pool(cfg, len(feed) + (1 << 20) * feed.has_streams)
        notes += pool_notes
        this_run = dispatch(cfg, feed, job.task, n_actors)
    lease.check()
    entries = committed_entries(job.output, job.task.config_hash)
    plan = _with_streams(plan, units, feed)
    if stale_spool or orphans:
        notes.append(
            f"removed {len(stale_spool) + len(orphans)} files left by interrupted runs "
            f"({len(stale_spool)} scratch, {len(orphans)} listed by no ledger entry)"
        )
    summary = _summary(cfg, job, units, plan, entries, this_run, n_actors, repaired, started)
    summary = replace(summary, notes=notes, spool_files_removed=len(stale_spool) + len(orphans))
    return replace(summary, summary_path=write_run_summary(job.output, summary))


def _warnings(cfg: JobConfig, job: PreparedJob, units: list[WorkUnit]) -> list[str]:
    """The run's notes known before it starts (also logged as warnings)."""
    notes = []
    if job.tokenizer.eos_id is None:
        notes.append(
            f"tokenizer {cfg.tokenizer.spec} has no end-of-text token: the trainer loader needs "
            "one to separate documents (give one with --tokenizer-option eos_token=TOKEN)"
        )
    small = small_file_note(cfg, units)
    if small:
        notes.append(small)
    for note in notes:
        log.warning(note)
    return notes


def _with_streams(plan: Reconciled, units: list[WorkUnit], feed: WorkFeed) -> Reconciled:
    """The plan once the streams were read: their ranges count as planned units."""
    if not feed.has_streams:
        return plan
    ids = [u.unit_id for u in units if not is_stream(u)]
    known = set(ids)
    ranges = [i for i in feed.planned if i not in known]
    return replace(plan, planned_ids=[*ids, *ranges], skipped_ranges=feed.skipped)


def _summary(
    cfg: JobConfig,
    job: PreparedJob,
    units: list[WorkUnit],
    plan: Reconciled,
    entries: list[LedgerEntry],
    this_run: RunCounts,
    n_actors: int,
    repaired: list[dict[str, Any]],
    started: float,
) -> RunSummary:
    elapsed = time.time() - started
    planned = plan.planned_ids if plan.planned_ids is not None else [u.unit_id for u in units]
    return RunSummary(
        run_nonce=uuid.uuid4().hex[:6],
        output=job.output.url,
        config_hash=job.task.config_hash,
        tokenizer=job.manifest["tokenizer"],
        encoder=str(job.manifest["tokenizer"].get("encoder") or job.tokenizer.kind),
        encoder_version=str(job.manifest["tokenizer"].get("encoder_version") or ""),
        encoder_fallbacks=list(job.manifest["tokenizer"].get("encoder_fallbacks") or []),
        storage_options=redact(cfg.storage_options),
        units_planned=len(planned),
        units_skipped=len(units) - len(plan.todo) + plan.skipped_ranges,
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
        complete=set(planned) <= {e.unit_id for e in entries},
        verified_documents=sum(e.verified_documents for e in entries),
        verified_bytes=sum(e.verified_bytes for e in entries),
        stage_seconds=stage_seconds(entries),
        inputs_changed=plan.changed_urls,
        units_uncommitted=plan.uncommitted,
    )
