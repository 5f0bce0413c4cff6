"""A local run does not wait for Ray: the driver tokenizes from the first second, Ray starts only
when the driver's rate says the job needs it, and the actors take over the units the driver has not
taken. Whoever processed a unit, the output is byte for byte the output of a run on actors alone."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from jobs.cli import main as cli
from pipeline.output.verify import verify_output
from pipeline.tokenize import driver as driver_module
from pipeline.tokenize.driver import RAY_START_S, ray_after_seconds
from pipeline.tokenize.engine import run_job
from tests.helpers import REPO, SAMPLE_DIR, job_config, shard_files, start_run, wait_for_commits
from tests.test_fresh_run import big_corpus

UNIT = 20_000  # bytes per unit: the big corpus (8 copies of the sample) gives ~190 units
STRIP = ("timings", "lease")
SAMPLE = SAMPLE_DIR / "*.jsonl"


def ledger(out) -> dict[str, dict]:
    return {
        p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in STRIP}
        for p in sorted((out / "ledger").glob("*.json"))
    }


def split(summary) -> tuple[int, int]:
    """(units the driver processed, units the actors processed) from the run's note."""
    note = next(n for n in summary.notes if n.startswith("the driver processed"))
    found = re.search(r"processed (\d+) units .* actors processed (\d+)", note)
    return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def on_actors(ray_session, tmp_path_factory, bpe_path):
    """The big corpus run on two actors alone (Ray from the start): the reference output."""
    root = tmp_path_factory.mktemp("overlap")
    src = big_corpus(root / "in")
    out = root / "actors"
    summary = run_job(
        job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=UNIT, actors=2)
    )
    assert summary.complete and summary.actors == 2
    return src, out, summary


def slow_units(monkeypatch, seconds: float, fail_at: int | None = None) -> list[str]:
    """The driver threads' units take `seconds` longer (so the actors surely start before they
    are done), and their call number `fail_at` raises; returns the ids of the units they
    processed."""
    real, seen, calls = driver_module.process_unit, [], itertools.count()

    def process_unit(unit, *args, **kwargs):
        if next(calls) == fail_at:  # (count's next is atomic: each call gets its own number)
            raise RuntimeError(f"injected failure in unit {unit.unit_id}")
        time.sleep(seconds)
        seen.append(unit.unit_id)
        return real(unit, *args, **kwargs)

    monkeypatch.setattr(driver_module, "process_unit", process_unit)
    return seen


def test_the_driver_works_while_ray_starts_and_the_actors_take_the_rest(
    on_actors, tmp_path, bpe_path, monkeypatch
):
    src, reference, ref_summary = on_actors
    by_driver = slow_units(monkeypatch, 0.2)
    out = tmp_path / "out"
    cfg = job_config(
        src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=UNIT, local_bytes=0, ray_after_seconds=0
    )
    summary = run_job(cfg)
    n_driver, n_actors = split(summary)
    assert summary.complete and summary.actors == 2
    assert n_driver == len(by_driver) >= 1 and n_actors >= 1
    assert n_driver + n_actors == summary.units_run == ref_summary.units_run
    assert summary.documents == ref_summary.documents and summary.tokens == ref_summary.tokens
    assert shard_files(out) == shard_files(reference)
    assert ledger(out) == ledger(reference)
    assert verify_output(str(out)).ok


def test_a_job_the_driver_finishes_within_ray_after_seconds_never_starts_ray(
    on_actors, tmp_path, bpe_path
):
    src, reference, _ = on_actors
    out = tmp_path / "out"
    cfg = job_config(
        src / "*.jsonl",
        out,
        f"bpe:{bpe_path}",
        unit_bytes=UNIT,
        local_bytes=0,
        ray_after_seconds=3600,
        driver_threads=3,  # three threads sharing the job's tokenizer (bpe is thread_safe)
    )
    summary = run_job(cfg)
    assert summary.complete and summary.actors == 0
    assert summary.notes[0].startswith("ran in the driver process (3 threads; units ")
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_a_failing_driver_unit_stops_the_run_keeping_what_was_committed(
    on_actors, tmp_path, bpe_path, monkeypatch
):
    import ray

    src, reference, _ = on_actors
    slow_units(monkeypatch, 0.05, fail_at=3)
    out = tmp_path / "out"
    cfg = job_config(
        src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=UNIT, local_bytes=0, ray_after_seconds=0
    )
    with pytest.raises(RuntimeError, match="injected failure"):
        run_job(cfg)
    assert 3 <= len(ledger(out)) < len(ledger(reference))
    deadline = time.time() + 30  # the actors were stopped: the session's CPUs are free again
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.time() < deadline, ray.available_resources()
        time.sleep(0.1)
    monkeypatch.undo()
    again = run_job(cfg)
    assert again.complete and again.units_skipped >= 3
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_sigterm_while_ray_starts_ends_quietly_and_the_rerun_completes(
    on_actors, tmp_path, bpe_path
):
    src, reference, _ = on_actors
    out = tmp_path / "out"
    flags = ("--unit-bytes", str(UNIT), "--local-bytes", "0", "--ray-after-seconds", "0")
    proc = start_run(src / "*.jsonl", out, f"bpe:{bpe_path}", *flags)
    wait_for_commits(out, proc)  # the driver's first units, long before Ray is up
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted; committed units are kept" in err and "Traceback" not in err
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=UNIT))
    assert summary.complete
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_by_default_ray_starts_only_where_its_start_up_pays_for_itself(tmp_path, bpe_path):
    cfg = job_config(SAMPLE, tmp_path / "o", f"bpe:{bpe_path}")
    auto = {cpus: ray_after_seconds(cfg, min(cpus, 4), cpus) for cpus in (1, 2, 4, 8, 64)}
    assert auto[1] == float("inf")  # one CPU: actors cannot beat the driver
    assert auto[2] > 20 > auto[4] > auto[8] > auto[64] > RAY_START_S  # toward the start-up
    explicit = job_config(SAMPLE, tmp_path / "o", f"bpe:{bpe_path}", ray_after_seconds=3)
    assert ray_after_seconds(explicit, 2, 2) == 3


def test_tokenmill_run_keeps_the_tokenizer_libraries_to_one_core_per_thread(
    tmp_path, bpe_path, monkeypatch
):
    """The driver's threads are the run's parallelism (like the actors): `tokenmill run` runs the
    libraries' own pools on one thread, unless the environment already says otherwise."""
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the user's own setting stays
    monkeypatch.setenv("RAYON_NUM_THREADS", "x")
    monkeypatch.delenv("RAYON_NUM_THREADS")  # unset (monkeypatch restores it afterwards)
    args = ["--input", str(SAMPLE_DIR / "zh.jsonl"), "--output", str(tmp_path / "o")]
    result = CliRunner().invoke(
        cli, ["run", *args, "--tokenizer", f"bpe:{bpe_path}", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    summary = next(line for line in result.output.splitlines() if line.startswith("{"))
    assert json.loads(summary)["actors"] == 0
    assert os.environ["RAYON_NUM_THREADS"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


HEAVY = ("pandas", "torch", "duckdb", "ray")
IMPORTED = "print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"


def _heavy_imports(script: str, tmp_path) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after `script`."""
    code = "import json, sys\n" + script + "\n" + IMPORTED.format(heavy=HEAVY)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_local_run_imports_no_library_off_its_path(tmp_path, bpe_path):
    """A run that stays in the driver imports neither Ray nor pandas (pyarrow imports pandas on
    its first `pa.array` or `to_numpy`: 0.2 s of every run's start-up), torch nor duckdb; the
    shards it writes are those of the reference run (every column built without them)."""
    out = tmp_path / "o"
    script = (
        "from jobs.cli import main\n"
        f"main(['run', '--input', {str(SAMPLE)!r}, '--output', {str(out)!r}, '--tokenizer',"
        f" 'bpe:{bpe_path}', '--no-progress', '--unit-bytes', '200000'],"
        " standalone_mode=False)"
    )
    assert _heavy_imports(script, tmp_path) == []
    reference = tmp_path / "ref"
    run_job(job_config(SAMPLE, reference, f"bpe:{bpe_path}", unit_bytes=200_000))
    assert shard_files(out) == shard_files(reference) and ledger(out) == ledger(reference)


def test_the_loader_does_not_import_pandas(tmp_path, plain):
    """A training process that reads shards pays torch, nothing heavier it does not use."""
    script = (
        "from pipeline.loader import TokenDataset\n"
        f"ds = TokenDataset({plain!r}, 64, seed=1, batch_size=4, packing='best_fit',"
        " seq_lens=True)\n"
        "n = sum(b['input_ids'].numel() for b in ds.dataloader(num_workers=0))\n"
        "assert n > 0 and ds.plan().sources[0]['tokens_available'] > 0"
    )
    assert _heavy_imports(script, tmp_path) == ["torch"]


def test_a_stop_request_waits_for_the_end_of_a_deferred_block():
    """The CLI's SIGTERM handler raises KeyboardInterrupt at once, except inside
    `pipeline.interrupts.deferred()` (tokenizer loading, Ray's start, a driver unit): there it is
    raised when the outermost block ends, so an import is never cut in half. (A SIGTERM that
    landed inside awkward's import left it half initialised, gigatoken then returned lists, and
    the run went on with another encoder, the stop request lost.)"""
    code = (
        "import os, signal, sys\n"
        "from jobs.common import stop_quietly_on_sigterm\n"
        "from pipeline.interrupts import deferred\n"
        "stop_quietly_on_sigterm()\n"
        "steps = []\n"
        "try:\n"
        "    with deferred():\n"
        "        with deferred():\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            import awkward\n"
        "            steps.append('imported')\n"
        "        steps.append('inner block ended')\n"
        "except KeyboardInterrupt:\n"
        "    steps.append('interrupted')\n"
        "assert hasattr(awkward, '_connect'), 'awkward half imported'\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    steps.append('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    steps.append('interrupted at once')\n"
        "print(steps)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        ["imported", "inner block ended", "interrupted", "interrupted at once"]
    )


def test_the_driver_threads_share_a_thread_safe_tokenizer_and_load_copies_of_others(bpe_path):
    """One encoder (and one set of its caches) for all the driver's threads when the tokenizer
    says it may encode from several threads at once; a copy each otherwise; helpers regardless."""
    from types import SimpleNamespace

    from pipeline.tokenize.driver import DriverPool
    from tokenizers_impl import load_tokenizer

    def pool(tokenizer, helpers=None) -> list:
        built = DriverPool(None, tokenizer, load, None, lambda: None, 3, False, helpers)
        return [w.tokenizer for w in built.workers]

    def load():
        raise AssertionError("not called when the pool is built")

    bpe = load_tokenizer(f"bpe:{bpe_path}")
    assert bpe.thread_safe and pool(bpe) == [bpe, bpe, bpe]
    other = SimpleNamespace(thread_safe=False)
    assert pool(other) == [other, load, load]
    assert pool(bpe, helpers=lambda: "helper") == [bpe, "helper", "helper"]


@pytest.mark.parametrize("threads", [0, 2])
def test_an_input_removed_while_the_run_reads_it_fails_the_unit_naming_it(
    tmp_path, bpe_path, monkeypatch, threads
):
    """A file removed after planning, before its unit read it: a traceback (FileNotFoundError,
    exit 1) in the driver, where actors said UnitFailed. Now UnitFailed naming the unit's file
    (exit 3), in the driver alone (0) and in its threads (2); the rerun plans the inputs as they
    are now and equals a fresh run on them."""
    import shutil

    from pipeline.errors import UnitFailed
    from pipeline.tokenize import engine as engine_module

    src = tmp_path / "in"
    shutil.copytree(SAMPLE_DIR, src)
    module = driver_module if threads else engine_module
    real, removed = module.process_unit, []

    def remove_first(unit, *args, **kwargs):
        if not removed:
            removed.append(unit.url)
            os.remove(unit.url.removeprefix("file://"))
        return real(unit, *args, **kwargs)

    monkeypatch.setattr(module, "process_unit", remove_first)
    fields = {"local_bytes": 0, "ray_after_seconds": 3600, "driver_threads": 2} if threads else {}
    cfg = job_config(src / "*.jsonl", tmp_path / "out", f"bpe:{bpe_path}", **fields)
    with pytest.raises(UnitFailed, match=r"\.jsonl bytes .*FileNotFoundError") as failed:
        run_job(cfg)
    name = os.path.basename(removed[0])
    assert name in str(failed.value) and "rerun the same command" in str(failed.value)
    monkeypatch.undo()
    again = run_job(cfg)
    fresh = run_job(cfg.model_copy(update={"output": str(tmp_path / "fresh")}))
    assert again.complete and again.documents == fresh.documents
    assert shard_files(tmp_path / "out") == shard_files(tmp_path / "fresh")
