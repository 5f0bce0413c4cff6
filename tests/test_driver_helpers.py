"""The driver's helper processes: a local run's workers after the first can be processes of their
own (no GIL shared, no Ray). Whoever processed a unit, in a thread or a helper, the output is byte
for byte the same; a helper's error reaches the driver as the error it was; a helper that dies
fails the run naming it; a killed driver leaves no helper working, and the rerun completes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.tokenize.driver import HELPER_BYTES, uses_helpers
from pipeline.tokenize.engine import prepare, run_job
from pipeline.tokenize.helpers import HelperDied, HelperProcess
from pipeline.tokenize.inputs import WorkUnit
from pipeline.tokenize.unit import process_unit
from tests.helpers import REPO, SAMPLE_DIR, job_config, shard_files, start_run, wait_for_commits
from tests.test_fresh_run import big_corpus

UNIT = 20_000  # bytes per unit: the big corpus (8 copies of the sample) gives ~190 units
LOCAL = {"unit_bytes": UNIT, "local_bytes": 0, "ray_after_seconds": 3600}


def ledger(out) -> dict[str, dict]:
    strip = ("timings", "lease")
    return {
        p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in strip}
        for p in sorted((out / "ledger").glob("*.json"))
    }


def units_split(note: str) -> list[int]:
    """Units per worker from the run's note ("...; units 80 + 110): ...")."""
    return [int(n) for n in re.search(r"units ([\d + ]+)\)", note)[1].split(" + ")]


@pytest.fixture(scope="module")
def on_threads(tmp_path_factory, bpe_path):
    """The big corpus run by two threads of the driver: the reference output."""
    root = tmp_path_factory.mktemp("helpers")
    src = big_corpus(root / "in")
    out = root / "threads"
    cfg = job_config(
        src / "*.jsonl", out, f"bpe:{bpe_path}", driver_threads=2, driver_processes=False, **LOCAL
    )
    summary = run_job(cfg)
    assert summary.complete and summary.actors == 0
    assert summary.notes[0].startswith("ran in the driver process (2 threads; units ")
    return src, out, summary


def test_helper_processes_commit_byte_for_byte_what_threads_commit(on_threads, tmp_path, bpe_path):
    src, reference, ref_summary = on_threads
    out = tmp_path / "out"
    cfg = job_config(
        src / "*.jsonl", out, f"bpe:{bpe_path}", driver_threads=2, driver_processes=True, **LOCAL
    )
    summary = run_job(cfg)
    assert summary.complete and summary.actors == 0
    note = summary.notes[0]
    assert note.startswith("ran in the driver process (1 thread and 1 helper process; units ")
    by_thread, by_helper = units_split(note)
    assert by_helper >= 1 and by_thread + by_helper == summary.units_run == ref_summary.units_run
    assert summary.documents == ref_summary.documents and summary.tokens == ref_summary.tokens
    assert shard_files(out) == shard_files(reference)
    assert ledger(out) == ledger(reference)


def test_helpers_are_the_default_from_four_workers_or_1_gib_to_do(tmp_path, bpe_path):
    cfg = job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "o", f"bpe:{bpe_path}")
    assert [uses_helpers(cfg, n) for n in (1, 2, 3, 4, 8)] == [False, False, False, True, True]
    big = HELPER_BYTES  # (a job this big: the helper's start pays on 2 or 3 workers too)
    assert [uses_helpers(cfg, n, big) for n in (1, 2, 3)] == [False, True, True]
    assert not uses_helpers(cfg, 2, big - 1)
    off = job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "o", f"bpe:{bpe_path}", driver_processes=0)
    assert not uses_helpers(off, 8) and not uses_helpers(off, 2, big)
    on = job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "o", f"bpe:{bpe_path}", driver_processes=1)
    assert uses_helpers(on, 2) and not uses_helpers(on, 1)


@pytest.fixture
def helper_job(tmp_path, bpe_path):
    cfg = job_config(SAMPLE_DIR / "en.jsonl", tmp_path / "out", f"bpe:{bpe_path}")
    job = prepare(cfg)
    helper = HelperProcess(cfg.tokenizer.spec, {}, cfg.output, job.task)
    yield cfg, job, helper
    helper.close()


def missing_unit(tmp_path) -> WorkUnit:
    """A unit of a file removed after planning."""
    gone = tmp_path / "gone.jsonl"
    return WorkUnit(str(gone), "jsonl", None, 0, 14, 14)


def test_a_unit_error_in_a_helper_is_raised_in_the_driver_as_it_was(helper_job, tmp_path):
    cfg, job, helper = helper_job
    unit = missing_unit(tmp_path)
    with pytest.raises(Exception) as in_driver:
        process_unit(unit, job.tokenizer, job.task, job.output)
    with pytest.raises(Exception) as in_helper:
        helper.process_unit(unit, None)
    assert type(in_helper.value) is type(in_driver.value)
    assert str(in_helper.value) == str(in_driver.value) and "gone.jsonl" in str(in_helper.value)
    path = SAMPLE_DIR / "en.jsonl"  # the helper goes on with the next unit
    size = path.stat().st_size
    entry = helper.process_unit(WorkUnit(str(path), "jsonl", None, 0, size, size), None)
    assert entry.documents > 0 and entry.rejected == 0


def test_a_helper_that_dies_fails_its_unit_naming_it(helper_job, tmp_path):
    _, _, helper = helper_job
    helper.wait_ready()
    os.kill(helper.pid, signal.SIGKILL)
    unit = missing_unit(tmp_path)
    with pytest.raises(HelperDied, match=r"killed by signal 9\) while unit "):
        for _ in range(3):  # (the first send may still reach the pipe before it is closed)
            helper.process_unit(unit, None)


def start_with_helpers(src, out, bpe_path):
    """`tokenmill run` in a subprocess with a thread and a helper, once 5 units are committed:
    (the process, its helper processes)."""
    flags = ["--driver-threads", "2", "--driver-processes", "--unit-bytes", str(UNIT)]
    flags += ["--local-bytes", "0", "--ray-after-seconds", "3600"]
    proc = start_run(src / "*.jsonl", out, f"bpe:{bpe_path}", *flags)
    wait_for_commits(out, proc, count=5)
    children = psutil.Process(proc.pid).children(recursive=True)
    return proc, [p for p in children if "pipeline.tokenize.helpers" in p.cmdline()]


def test_a_killed_driver_leaves_no_helper_and_the_rerun_equals_a_fresh_run(
    on_threads, tmp_path, bpe_path
):
    src, reference, _ = on_threads
    out = tmp_path / "out"
    proc, helpers = start_with_helpers(src, out, bpe_path)
    assert helpers, "no helper process found"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(helpers, timeout=20)
    assert not alive, [p.pid for p in alive]
    time.sleep(0.2)
    assert len(ledger(out)) < len(ledger(reference))
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **LOCAL))
    assert summary.complete and summary.units_skipped >= 5
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_a_big_compressed_file_feeds_the_helpers_its_ranges(tmp_path, bpe_path, monkeypatch):
    """A stream's ranges, cut by the driver, reach the helpers as bytes (no Ray where the
    helpers use every CPU); the shards are those of a run in the driver alone."""
    from pipeline.tokenize import driver as driver_module
    from tests.test_streams import UNIT as STREAM_UNIT
    from tests.test_streams import records, write_compressed

    write_compressed(tmp_path / "big.jsonl.zst", records())
    spec, inputs = f"bpe:{bpe_path}", tmp_path / "big.jsonl.zst"
    alone = run_job(job_config(inputs, tmp_path / "alone", spec, unit_bytes=STREAM_UNIT))
    real = driver_module.process_unit

    def slow(*args, **kwargs):  # the driver's own thread: slow, so that the helper takes ranges
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver_module, "process_unit", slow)
    cfg = job_config(
        inputs,
        tmp_path / "helpers",
        spec,
        unit_bytes=STREAM_UNIT,
        local_bytes=0,
        driver_threads=2,
        driver_processes=True,
    )
    summary = run_job(cfg)
    assert summary.complete and summary.actors == 0
    by_thread, by_helper = units_split(summary.notes[0])
    assert by_helper >= 1 and by_thread + by_helper == summary.units_run == alone.units_run > 10
    assert shard_files(tmp_path / "helpers") == shard_files(tmp_path / "alone")
    assert ledger(tmp_path / "helpers") == ledger(tmp_path / "alone")


SCRIPT = """
from pipeline.tokenize import load_config, run_job
cfg = load_config(input=[{inputs!r}], output={output!r}, tokenizer={spec!r}, progress=False,
                  unit_bytes=20000, local_bytes=0, driver_threads=2, driver_processes=True)
summary = run_job(cfg)
print("RUN", summary.complete, summary.units_run, summary.notes[0])
"""


def test_a_script_that_runs_a_job_at_its_top_level_runs_it_once(tmp_path, bpe_path):
    """Helpers do not re-import the caller's main script (a multiprocessing spawn would: the
    job would start again in every helper)."""
    script = tmp_path / "job.py"
    out = tmp_path / "out"
    inputs, spec = str(SAMPLE_DIR / "*.jsonl"), f"bpe:{bpe_path}"
    script.write_text(SCRIPT.format(inputs=inputs, output=str(out), spec=spec))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    runs = [line for line in done.stdout.splitlines() if line.startswith("RUN")]
    assert len(runs) == 1 and runs[0].startswith("RUN True ")
    assert "1 thread and 1 helper process" in runs[0]
    assert len(list((out / "runs").glob("*.json"))) == 1


def test_sigterm_ends_the_helpers_after_their_units_and_the_rerun_completes(
    on_threads, tmp_path, bpe_path
):
    src, reference, _ = on_threads
    out = tmp_path / "out"
    proc, helpers = start_with_helpers(src, out, bpe_path)
    assert helpers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted; committed units are kept" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(helpers, timeout=20)
    assert not alive
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **LOCAL))
    assert summary.complete and summary.units_skipped >= 5
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_a_helper_that_cannot_start_leaves_the_work_to_the_others(
    on_threads, tmp_path, bpe_path, monkeypatch, caplog
):
    def broken(self, give_up=None) -> bool:
        raise HelperDied("helper process 1 ended (exit 1) while starting")

    monkeypatch.setattr(HelperProcess, "wait_ready", broken)  # (early ones and later ones)
    src, reference, _ = on_threads
    out = tmp_path / "out"
    cfg = job_config(
        src / "*.jsonl", out, f"bpe:{bpe_path}", driver_threads=2, driver_processes=True, **LOCAL
    )
    summary = run_job(cfg)
    assert summary.complete
    assert units_split(summary.notes[0]) == [summary.units_run, 0]
    assert "a helper process could not start" in caplog.text
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_a_small_job_takes_the_driver_threads_it_asks_for(tmp_path, bpe_path):
    """Under --local-bytes a job ran on one thread whatever --driver-threads said."""
    from pipeline.tokenize.engine import run_job
    from tests.helpers import SAMPLE_DIR, job_config, shard_files

    one = run_job(job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "a", f"bpe:{bpe_path}"))
    cfg = job_config(SAMPLE_DIR / "*.jsonl", tmp_path / "b", f"bpe:{bpe_path}", driver_threads=2)
    two = run_job(cfg)
    assert "2 threads" in " ".join(two.notes) and "thread" not in " ".join(one.notes)
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def run_with_a_helper(src, out, bpe_path):
    """`run_job` on the big corpus with a thread and a helper process."""
    flags = {"driver_threads": 2, "driver_processes": True, **LOCAL}
    return run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **flags))


def helper_children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "pipeline.tokenize.helpers" in " ".join(p.cmdline())
    ]


def test_helpers_start_before_the_driver_loads_its_tokenizer(on_threads, tmp_path, bpe_path):
    """A job that will use a helper starts it first thing (its imports and tokenizer load run
    beside the driver's), hands it its job once the driver has loaded the tokenizer, and
    starts no other; the output is the threads' byte for byte."""
    from pipeline.tokenize import engine

    src, reference, _ = on_threads
    events: list[str] = []
    real_early, real_start, real_prepare = HelperProcess.early, HelperProcess.start, engine.prepare
    real_init = HelperProcess.__init__

    def init(self, *args, **kwargs):
        events.append("a helper process")
        real_init(self, *args, **kwargs)

    def early(cls, *args):
        events.append("helper started")
        return real_early.__func__(cls, *args)

    def start(self, *args):
        events.append("helper given its job")
        return real_start(self, *args)

    def prepare_(*args, **kwargs):
        events.append("driver loads its tokenizer")
        return real_prepare(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setattr(HelperProcess, "__init__", init)
        m.setattr(HelperProcess, "early", classmethod(early))
        m.setattr(HelperProcess, "start", start)
        m.setattr(engine, "prepare", prepare_)
        summary = run_with_a_helper(src, tmp_path / "out", bpe_path)
    assert events == [
        "helper started",
        "a helper process",
        "driver loads its tokenizer",
        "helper given its job",
    ]
    assert units_split(summary.notes[0])[1] >= 1
    assert shard_files(tmp_path / "out") == shard_files(reference)
    assert ledger(tmp_path / "out") == ledger(reference)
    assert helper_children() == []


def test_an_early_helper_the_job_does_not_need_is_stopped(on_threads, tmp_path, bpe_path):
    """A rerun with everything committed plans the same bytes, starts a helper before it knows,
    and stops it (killed before it touched anything): nothing runs, nothing is left behind."""
    src, reference, _ = on_threads
    out = tmp_path / "out"
    flags = {"driver_threads": 2, "driver_processes": True, **LOCAL}
    run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **flags))
    before = ledger(out)
    started: list[HelperProcess] = []
    real_early = HelperProcess.early

    def early(cls, *args):
        started.append(real_early.__func__(cls, *args))
        return started[-1]

    with pytest.MonkeyPatch().context() as m:
        m.setattr(HelperProcess, "early", classmethod(early))
        again = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **flags))
    assert again.complete and again.units_run == 0 and again.units_skipped == again.units_planned
    assert len(started) == 1 and started[0].process.poll() is not None
    assert not started[0].started  # (never given a job)
    assert helper_children() == [] and ledger(out) == before == ledger(reference)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.5, 0.8])
def test_ctrl_c_while_helpers_start_is_one_line_and_leaves_nothing(
    on_threads, tmp_path, bpe_path, delay
):
    """A Ctrl-C to the terminal's process group just after the run took its lease (its early
    helper importing, its driver loading the tokenizer): exit 3, the one-line message, no
    traceback from the helper or from an extension module's import, no helper left."""
    src, _, _ = on_threads
    out = tmp_path / "out"
    flags = ["--driver-threads", "2", "--driver-processes", "--unit-bytes", str(UNIT)]
    flags += ["--local-bytes", "0", "--ray-after-seconds", "3600"]
    proc = start_run(src / "*.jsonl", out, f"bpe:{bpe_path}", *flags, start_new_session=True)
    deadline = time.time() + 60
    while not (out / "_lease.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # (done before the Ctrl-C arrived: nothing to check)
        return
    assert proc.returncode == 3, err
    assert "interrupted; committed units are kept" in err and "Traceback" not in err, err
    assert "PanicException" not in err
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive


def test_a_helper_never_ready_is_killed_at_once(bpe_path):
    """A helper the job did not wait for (a tiny job done before it loaded) is killed when it is
    closed, not left to shut its interpreter down."""
    helper = HelperProcess.early(f"bpe:{bpe_path}", {}, {})
    helper.close()
    assert helper.process.returncode == -signal.SIGKILL


def test_a_helper_that_cannot_be_spawned_leaves_a_thread(on_threads, tmp_path, bpe_path, caplog):
    """No process to spare (EAGAIN from fork): the early start warns, the driver tries again,
    warns, and runs that worker as a thread; the output is the threads' byte for byte."""
    src, reference, _ = on_threads

    def no_fork(self, *args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    with pytest.MonkeyPatch().context() as m:
        m.setattr(HelperProcess, "__init__", no_fork)
        summary = run_with_a_helper(src, tmp_path / "out", bpe_path)
    assert summary.complete
    assert summary.notes[0].startswith("ran in the driver process (2 threads; units ")
    assert "could not start a helper process early" in caplog.text
    assert "could not start a helper process (" in caplog.text and "a thread instead" in caplog.text
    assert shard_files(tmp_path / "out") == shard_files(reference)
    assert ledger(tmp_path / "out") == ledger(reference)


def test_a_helper_killed_mid_run_fails_the_run_in_one_line_and_the_rerun_completes(
    on_threads, tmp_path, bpe_path
):
    """The out-of-memory killer takes a helper: the run stops with UnitFailed naming the unit and
    the helper (exit 3, no traceback), and the rerun equals a fresh run."""
    src, reference, _ = on_threads
    out = tmp_path / "out"
    proc, helpers = start_with_helpers(src, out, bpe_path)
    assert helpers, "no helper process found"
    deadline = time.time() + 60
    while not any(str(out) in f.path for f in helpers[0].open_files()):  # (a unit in hand)
        assert proc.poll() is None and time.time() < deadline, "the helper took no unit"
        time.sleep(0.001)
    helpers[0].kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "failed: HelperDied: helper process" in err and "killed by signal 9" in err, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", **LOCAL))
    assert summary.complete and summary.units_skipped >= 5
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)
