"""The output always equals a fresh run over the current inputs: changed, removed and aliased inputs,
an output inside its own input glob, fenced commits, and misconfigurations that fail fast instead of
hanging. Each case was found by a user; each asserts the safe outcome."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.errors import ConfigError, InputsChanged, LeaseLost
from pipeline.output import Output, committed_entries, iter_committed
from pipeline.output.lease import OutputLease
from pipeline.output.verify import verify_output
from pipeline.tokenize.actors import session_processes
from pipeline.tokenize.engine import prepare, run_job
from pipeline.tokenize.inputs import plan_units
from pipeline.tokenize.unit import process_unit
from tokenizers_impl import load_tokenizer

from .helpers import (
    REPO,
    SAMPLE_DIR,
    job_config,
    read_jsonl,
    shard_files,
    shard_rows,
    start_run,
    wait_for_commits,
)


def corpus(folder, langs=("de", "ru", "zh")):
    """A copy of part of the sample corpus (its files can be changed by a test)."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        shutil.copy(SAMPLE_DIR / f"{lang}.jsonl", folder / f"{lang}.jsonl")
    return folder


def documents(folder) -> dict[str, str]:
    return {r["id"]: r["text"] for p in sorted(folder.glob("*.jsonl")) for r in read_jsonl(p)}


def assert_equals_fresh_run(out, inputs_folder, tmp_path, bpe_path, **fields):
    """The output holds exactly the current inputs' documents, as a fresh run writes them."""
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}"
    run_job(job_config(inputs_folder / "*.jsonl", fresh, f"bpe:{bpe_path}", **fields))
    assert shard_files(out) == shard_files(fresh)
    rows = shard_rows(out)
    ids = [r["doc_id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == set(documents(inputs_folder))
    assert verify_output(str(out)).ok


def test_appended_lines_are_redone_not_duplicated(ray_session, tmp_path, bpe_path):
    src = corpus(tmp_path / "in")
    out = tmp_path / "out"
    cfg = job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=100_000)
    first = run_job(cfg)
    extra = [{"id": f"new-{i}", "text": f"Neue Zeile Nummer {i}."} for i in range(5)]
    with open(src / "de.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in extra)
    again = run_job(cfg)
    assert again.complete and again.inputs_changed == [os.path.realpath(src / "de.jsonl")]
    assert again.documents == first.documents + 5
    assert again.units_uncommitted >= 1 and again.units_run == again.units_uncommitted
    assert_equals_fresh_run(out, src, tmp_path, bpe_path, unit_bytes=100_000)


def test_refuse_names_the_changed_file_and_leaves_the_output_alone(ray_session, tmp_path, bpe_path):
    src = corpus(tmp_path / "in", langs=("de", "ru"))
    out = tmp_path / "out"
    run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}"))
    before = shard_files(out)
    with open(src / "ru.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "x", "text": "ещё одна строка"}, ensure_ascii=False) + "\n")
    cfg = job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", on_input_change="refuse")
    with pytest.raises(InputsChanged, match=r"ru\.jsonl"):
        run_job(cfg)
    assert shard_files(out) == before


def test_deleted_input_leaves_the_output_and_a_same_size_edit_is_redone(
    ray_session, tmp_path, bpe_path
):
    src = corpus(tmp_path / "in")
    out = tmp_path / "out"
    cfg = job_config(src / "*.jsonl", out, f"bpe:{bpe_path}")
    run_job(cfg)
    (src / "zh.jsonl").unlink()
    data = (src / "ru.jsonl").read_bytes()
    edited = data.replace("а".encode(), "о".encode(), 1)  # same length in UTF-8
    assert len(edited) == len(data) and edited != data
    (src / "ru.jsonl").write_bytes(edited)
    summary = run_job(cfg)
    assert summary.units_run == 1 and summary.units_uncommitted == 2
    assert sorted(summary.inputs_changed) == sorted(
        os.path.realpath(src / name) for name in ("ru.jsonl", "zh.jsonl")
    )
    assert not any(r["lang"] == "zh" for r in shard_rows(out))
    assert_equals_fresh_run(out, src, tmp_path, bpe_path)


def test_one_folder_reached_through_a_symlink_is_tokenized_once(ray_session, tmp_path, bpe_path):
    src = corpus(tmp_path / "in", langs=("de",))
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    out = tmp_path / "out"
    summary = run_job(
        job_config([src / "*.jsonl", tmp_path / "alias" / "*.jsonl"], out, f"bpe:{bpe_path}")
    )
    assert summary.documents == len(documents(src))
    assert len({r["doc_id"] for r in shard_rows(out)}) == summary.documents


def test_an_output_inside_its_input_glob_is_never_read_back(ray_session, tmp_path, bpe_path):
    src = corpus(tmp_path / "data", langs=("de", "ru"))
    out = src / "tokens"
    for pattern in ("*.json*", "**/*.json*"):
        cfg = job_config(src / pattern, out, f"bpe:{bpe_path}")
        for _ in range(3):
            summary = run_job(cfg)
            assert summary.rejected == 0 and summary.documents == len(documents(src))
        assert not [
            u
            for u in plan_units(cfg.input, cfg.read_options(), exclude=[str(out)])
            if str(out) in u.url
        ]
        shutil.rmtree(out)


def test_more_actors_than_fit_are_capped_and_the_run_finishes(ray_session, tmp_path, bpe_path):
    src = corpus(tmp_path / "in")
    cfg = job_config(
        src / "*.jsonl",
        tmp_path / "out",
        f"bpe:{bpe_path}",
        unit_bytes=100_000,
        actors=8,
        actor_cpus=0.5,
    )
    summary = run_job(cfg)
    assert summary.complete and summary.actors == 4
    assert summary.notes and "actors capped at 4" in summary.notes[0]


def test_an_actor_larger_than_any_node_is_refused(ray_session, tmp_path, bpe_path):
    cfg = job_config(
        SAMPLE_DIR / "de.jsonl", tmp_path / "out", f"bpe:{bpe_path}", actor_cpus=4, actors=1
    )
    with pytest.raises(ConfigError, match=r"actor_cpus 4\.0 is more than any Ray node has"):
        run_job(cfg)


def own_cluster_env() -> dict[str, str]:
    """The environment for a CLI subprocess that starts its own local Ray (not the tests' one)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "disabled"}


def cli(*args, timeout=120, **env):
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**own_cluster_env(), **env},
    )


def cli_run(output, tokenizer, *flags):
    """`tokenmill run` of one sample file in a subprocess."""
    return cli(
        "run",
        "--input",
        str(SAMPLE_DIR / "de.jsonl"),
        "--output",
        str(output),
        "--tokenizer",
        tokenizer,
        *flags,
    )


def test_an_unreachable_ray_address_fails_fast_naming_it(tmp_path, bpe_path):
    started = time.monotonic()
    result = cli_run(
        tmp_path / "o", f"bpe:{bpe_path}", "--ray-address", "127.0.0.1:1", "--no-progress"
    )
    assert result.returncode == 2, result.stderr
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in result.stderr
    assert time.monotonic() - started < 60  # a bound, not a benchmark: it used to retry for minutes
    dashboard = cli_run(  # (Ray's own ValueError traceback, exit 1)
        tmp_path / "o", f"bpe:{bpe_path}", "--ray-address", "http://127.0.0.1:8265", "--no-progress"
    )
    assert dashboard.returncode == 2 and "Traceback" not in dashboard.stderr
    assert "is a dashboard URL" in dashboard.stderr


def test_ray_address_auto_with_no_cluster_running_is_one_line_naming_it(tmp_path, bpe_path):
    """`auto` that finds no cluster: it was Ray's ConnectionError traceback, exit 1. Ray finds
    any cluster running on this machine (the test session's own), so its answer when there is
    none is injected: ray.init raises what it raises then."""
    (tmp_path / "sitecustomize.py").write_text(
        "import ray\n"
        "def init(*args, address=None, **kwargs):\n"
        "    raise ConnectionError('Could not find any running Ray instance. Please specify the '\n"
        "                          'one to connect to by setting `--address` flag or '\n"
        "                          '`RAY_ADDRESS` environment variable.')\n"
        "ray.init = init\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--input", str(SAMPLE_DIR / "de.jsonl")]
        + ["--output", str(tmp_path / "o"), "--tokenizer", f"bpe:{bpe_path}"]
        + ["--ray-address", "auto", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**own_cluster_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the Ray cluster at 'auto': Could not find any running Ray" in result.stderr


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"output": ""}, "output: Value error, must name an output folder"),
        ({"output": "  "}, "output: Value error, must name an output folder"),
        ({"lease_seconds": 0.000001}, "lease_seconds: Input should be greater than or equal to 5"),
        ({"storage_options": {"endpoint": "x"}}, "unknown storage option(s) endpoint"),
        ({"on_input_change": "ignore"}, "on_input_change: Input should be 'redo' or 'refuse'"),
        ({"text_field": ""}, "text_field: String should have at least 1 character"),
        ({"id_field": ""}, "id_field: String should have at least 1 character"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(tmp_path, bpe_path, fields, message):
    data = {
        "input": [str(SAMPLE_DIR / "de.jsonl")],
        "output": str(tmp_path / "o"),
        "tokenizer": f"bpe:{bpe_path}",
        **fields,
    }
    with pytest.raises(ConfigError) as info:
        job_config(data.pop("input"), data.pop("output"), data.pop("tokenizer"), **data)
    assert message in str(info.value)


def test_duplicate_yaml_keys_are_refused(tmp_path, bpe_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: [{SAMPLE_DIR / 'de.jsonl'}]\noutput: {tmp_path / 'a'}\n"
        f"tokenizer: bpe:{bpe_path}\noutput: {tmp_path / 'b'}\n"
    )
    result = cli("run", "--config", str(config))
    assert result.returncode == 2 and "duplicate key 'output'" in result.stderr
    assert result.stderr.count("\n") == 1  # (one line: the YAML error was 4-8)


def test_yaml_merge_keys_and_an_empty_config_file(tmp_path, bpe_path):
    """A merge key (`<<:`), which safe_load takes, was refused ("could not determine a
    constructor"); an empty file was "must hold a mapping" even with every field a flag."""
    from pipeline.tokenize.config import load_config

    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: [x.jsonl]\noutput: o\ntokenizer:\n  kind: bpe\n  path: {bpe_path}\n"
        "  options:\n    <<: {name: merged}\n    encoder: tokenizers\n"
    )
    options = load_config(str(config)).tokenizer.options
    assert options == {"name": "merged", "encoder": "tokenizers"}
    (tmp_path / "empty.yaml").write_text("")
    cfg = load_config(str(tmp_path / "empty.yaml"), input=["x"], output="o", tokenizer="bpe:t")
    assert cfg.output == "o"


def test_an_output_that_is_a_file_is_refused(tmp_path, bpe_path):
    (tmp_path / "o").write_text("not a folder")
    result = cli_run(tmp_path / "o", f"bpe:{bpe_path}")
    assert result.returncode == 2 and "is a file; give a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_that_fails_at_planning_leaves_nothing_behind(ray_session, tmp_path, bpe_path):
    out = tmp_path / "out"
    bad = job_config(tmp_path / "missing-*.jsonl", out, f"bpe:{bpe_path}")
    with pytest.raises(Exception, match="matches no files"):
        run_job(bad)
    assert not (out / "job.json").exists()
    good = job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", token_offsets=True)
    assert run_job(good).complete  # another configuration is not refused


def test_a_commit_after_the_lease_was_taken_over_is_refused(tmp_path, bpe_path):
    out = Output(str(tmp_path / "out"))
    cfg = job_config(SAMPLE_DIR / "de.jsonl", out.url, f"bpe:{bpe_path}")
    tokenizer = load_tokenizer(f"bpe:{bpe_path}")
    with OutputLease(out, ttl_s=30) as old:
        job = prepare(cfg, old.fence())
    with OutputLease(out, ttl_s=30) as new:  # the old run's lease is gone: a new run holds it
        assert new.generation == 1 and new.owner != old.owner
        unit = plan_units(cfg.input, cfg.read_options())[0]
        with pytest.raises(LeaseLost, match="not committed: the lease of"):
            process_unit(unit, tokenizer, job.task, out)
        assert committed_entries(out) == []
        fenced = prepare(cfg, new.fence())
        entry = process_unit(unit, tokenizer, fenced.task, out).entry
        assert entry.lease == {"owner": new.owner, "generation": 1}


def test_stale_spool_files_are_reported_by_verify_and_removed_by_the_next_run(
    ray_session, tmp_path, bpe_path
):
    out = tmp_path / "out"
    cfg = job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}")
    run_job(cfg)
    (out / ".tmp").mkdir(exist_ok=True)
    (out / ".tmp" / "spool-deadbeef").write_bytes(b"half a shard")
    report = verify_output(str(out))
    assert report.ok and report.spool_files == [".tmp/spool-deadbeef"]
    summary = run_job(cfg)
    assert summary.spool_files_removed == 1 and verify_output(str(out)).spool_files == []


def test_files_no_ledger_entry_lists_are_reported_by_verify_and_removed_by_the_next_run(
    ray_session, tmp_path, bpe_path
):
    """A crash between publishing a unit's files and writing its ledger entry (or between an
    uncommit's removal of the entry and of the files), then the unit's input removed: its files
    stayed forever, and `verify` saw only a shard. A crash inside an atomic write left
    `ledger/<id>.json.tmp-<uuid>`. The next run removes them all (its lease makes it the only
    writer), and the output equals a fresh run."""
    from schemas.layout import UnitNames

    src = tmp_path / "in"
    src.mkdir()
    for name in ("de.jsonl", "en.jsonl"):
        shutil.copy(SAMPLE_DIR / name, src / name)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}"))
    gone = next(e for e in iter_committed(Output(str(out))) if e.unit.url.endswith("en.jsonl"))
    (out / UnitNames.of(gone.unit_id, gone.config_hash).ledger).unlink()  # crashed before it
    (src / "en.jsonl").unlink()
    (out / "ledger" / "abc.json.tmp-0123").write_bytes(b"{")
    (out / "job.json.tmp-4567").write_bytes(b"{")
    report = verify_output(str(out))
    listed = {gone.shard, gone.unigrams, "ledger/abc.json.tmp-0123", "job.json.tmp-4567"}
    assert report.ok and set(report.orphans) == listed
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}"))
    assert summary.complete and summary.spool_files_removed == 4
    assert verify_output(str(out)).orphans == []
    run_job(job_config(src / "*.jsonl", fresh, f"bpe:{bpe_path}"))
    files = {p.relative_to(out) for p in out.rglob("*") if p.is_file() and "runs" not in p.parts}
    fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    assert {f for f in files if f.parts[0] != "_lease.json.lock"} == {
        f for f in fresh_files if "runs" not in f.parts and f.parts[0] != "_lease.json.lock"
    }
    assert shard_files(out) == shard_files(fresh)


def big_corpus(folder, copies=8):
    """The sample corpus, `copies` times over (new ids): a run still going when it is killed."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
            with open(folder / f"{path.stem}-{copy}.jsonl", "w", encoding="utf-8") as handle:
                for r in read_jsonl(path):
                    r["id"] = f"{r['id']}-{copy}"
                    handle.write(json.dumps(r, ensure_ascii=False) + "\n")
    return folder


def test_sigterm_ends_a_run_with_one_line_and_exit_3(tmp_path, bpe_path):
    src = big_corpus(tmp_path / "in")
    out = tmp_path / "out"
    proc = start_run(
        src / "*.jsonl", out, f"bpe:{bpe_path}", "--unit-bytes", "20000", "--actors", "1"
    )
    wait_for_commits(out, proc)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted; committed units are kept: rerun the same command to resume" in err
    assert "Traceback" not in err and "SIGTERM received" not in err
    assert not (out / "_lease.json").exists()  # released on the way out


def test_a_killed_drivers_ray_session_is_stopped_by_the_next_run(ray_session, tmp_path, bpe_path):
    src = big_corpus(tmp_path / "in")
    out = tmp_path / "out"
    proc = start_run(
        src / "*.jsonl", out, f"bpe:{bpe_path}", "--unit-bytes", "20000", "--actors", "2"
    )
    lease = out / "_lease.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        lease.exists()
        and "ray_session_dir" in lease.read_text()
        and list((out / "ledger").glob("*.json"))
    ):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    session_dir = json.loads(lease.read_text())["ray_session_dir"]
    proc.kill()  # the driver alone: its Ray processes are left running
    proc.wait()
    left = session_processes(session_dir)  # e.g. ray::DashboardAgent, ray::RuntimeEnvAgent
    assert left and all(p.ppid() == 1 or p.name().startswith("ray::") for p in left)
    summary = run_job(job_config(src / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=20_000))
    assert summary.complete and not session_processes(session_dir)
    assert_equals_fresh_run(out, src, tmp_path, bpe_path, unit_bytes=20_000)


def test_a_small_job_runs_in_the_driver_and_writes_what_actors_write(
    ray_session, tmp_path, bpe_path
):
    src = corpus(tmp_path / "in")
    local = run_job(
        job_config(src / "*.jsonl", tmp_path / "local", f"bpe:{bpe_path}", unit_bytes=100_000)
    )
    assert local.actors == 0 and "ran in the driver process" in local.notes[0]
    actors = run_job(
        job_config(
            src / "*.jsonl", tmp_path / "ray", f"bpe:{bpe_path}", unit_bytes=100_000, actors=2
        )
    )
    assert actors.actors == 2
    assert shard_files(tmp_path / "local") == shard_files(tmp_path / "ray")
    strip = ("timings", "lease")
    for name in (tmp_path / "local" / "ledger").iterdir():
        a = {k: v for k, v in json.loads(name.read_text()).items() if k not in strip}
        b = json.loads((tmp_path / "ray" / "ledger" / name.name).read_text())
        assert a == {k: v for k, v in b.items() if k not in strip}


def test_unknown_tokenizer_options_are_refused_naming_them(tmp_path, bpe_path, sp_path):
    from pipeline.errors import TokenizerError

    for spec in (f"bpe:{bpe_path}", f"sentencepiece:{sp_path}"):
        cfg = job_config(SAMPLE_DIR / "de.jsonl", tmp_path / "o", spec)
        cfg = cfg.model_copy(
            update={"tokenizer": cfg.tokenizer.model_copy(update={"options": {"eos_tokn": "x"}})}
        )
        with pytest.raises(TokenizerError, match=r"unknown option\(s\) \['eos_tokn'\]"):
            run_job(cfg)


def test_ray_metrics_count_what_the_run_committed(ray_session, tmp_path, bpe_path):
    import urllib.request

    import ray

    out = tmp_path / "metrics"
    summary = run_job(job_config(SAMPLE_DIR / "ru.jsonl", out, f"bpe:{bpe_path}", actors=2))
    port = ray._private.worker._global_node.metrics_export_port
    wanted = f'output="{out}"'
    totals: dict[str, float] = {}
    expected = {
        "units": summary.units_run,
        "documents": summary.documents,
        "tokens": summary.tokens,
        "bytes": summary.bytes,
    }
    deadline = time.time() + 90  # Ray exports metrics every few seconds, not all at once
    while time.time() < deadline and any(totals.get(k) != v for k, v in expected.items()):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        totals = {}
        for line in body.decode().splitlines():
            if line.startswith("ray_tokenmill_") and wanted in line and "stage" not in line:
                name = line.split("{", 1)[0].removeprefix("ray_tokenmill_").removesuffix("_total")
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        time.sleep(2)
    assert totals["units"] == summary.units_run
    assert totals["documents"] == summary.documents and totals["tokens"] == summary.tokens
    assert totals["bytes"] == summary.bytes


def test_an_object_store_output_with_an_empty_path_segment_is_refused():
    """s3fs wrote `s3://tokens//run`'s objects under `/run/...` and listed `run/...`: no unit
    ever read as committed, every rerun redid everything (exit 3), and with a sibling
    `s3://tokens/run` the run read that output's ledger and crashed."""
    from pipeline.tokenize.config import load_config

    with pytest.raises(ConfigError, match=r"empty path segment.*\(s3://tokens/run\)"):
        load_config(input=["x.jsonl"], output="s3://tokens//run", tokenizer="bpe:t.json")
    assert load_config(input=["x"], output="s3://tokens/run/", tokenizer="bpe:t.json").output


def test_verify_names_units_another_tokenizer_wrote(tmp_path, bpe_path, sample_dir):
    """Units written by a node that loaded another file under the tokenizer's path passed
    `verify`: each shard agreed with its own ledger entry, and nothing compared them with the
    tokenizer the output was started with (job.json)."""
    out = tmp_path / "out"
    run_job(job_config(sample_dir / "de.jsonl", out, f"bpe:{bpe_path}"))
    assert verify_output(str(out)).ok
    manifest = json.loads((out / "job.json").read_text())
    manifest["tokenizer"]["fingerprint"] = "f" * 32
    (out / "job.json").write_text(json.dumps(manifest))
    report = verify_output(str(out))
    assert not report.ok and report.bad_units
    assert all("not the output's (" + "f" * 32 in p for p in report.problems)


def test_verify_says_whether_the_latest_run_finished(tmp_path, bpe_path):
    """`verify` of a killed run's output said ok (its committed units are sound) and nothing
    about the units never committed."""
    from click.testing import CliRunner

    from jobs.cli import main as cli

    out = tmp_path / "out"
    summary = run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}"))
    report = verify_output(str(out))
    assert report.ok and report.run_complete is True
    assert report.units_planned == report.units == summary.units_planned
    (latest,) = sorted((out / "runs").glob("*.json"))[-1:]
    record = json.loads(latest.read_text())
    latest.write_text(json.dumps({**record, "complete": False, "units_planned": 80}))
    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[-1])["ok"]
    assert f"the latest run did not finish ({report.units} of 80 planned" in result.output
    assert verify_output(str(tmp_path / "nothing")).run_complete is None
    # a later run killed before its summary (a complete summary is the latest one): its lease
    # is left, so it did not finish; a live lease is a run going on now
    latest.write_text(json.dumps(record))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lease = {
        "owner": "x",
        "host": socket.gethostname(),
        "pid": int(dead.stdout),
        "pid_started": 1.0,
        "expires_at": time.time() + 600,
        "generation": 2,
    }
    (out / "_lease.json").write_text(json.dumps(lease))
    killed = verify_output(str(out))
    assert killed.ok and killed.run_complete is False and killed.run_running is False
    assert killed.units_planned is None
    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert result.exit_code == 0
    assert f"the latest run did not finish (killed: it left its lease) ({report.units} units" in (
        result.output
    )
    me = psutil.Process()
    live = {**lease, "pid": me.pid, "pid_started": me.create_time()}
    (out / "_lease.json").write_text(json.dumps(live))
    assert verify_output(str(out)).run_running is True
    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert "a run of this output is running now" in result.output


def test_nothing_in_the_output_changes_before_the_plan_and_the_manifest_check_pass(
    tmp_path, bpe_path
):
    """A mistyped --input with --overwrite deleted every committed unit and job.json before
    failing its plan (exit 2); a --repair refused as another configuration had already
    uncommitted the unit it found damaged."""
    out = tmp_path / "out"
    cfg = job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000)
    run_job(cfg)
    before = shard_files(out)
    entries = sorted(p.name for p in (out / "ledger").glob("*.json"))
    typo = job_config(SAMPLE_DIR / "*.jsonll", out, f"bpe:{bpe_path}", overwrite=True)
    with pytest.raises(Exception, match="matches no files"):
        run_job(typo)
    assert shard_files(out) == before and (out / "job.json").exists()
    shard = next(iter((out / "shards").glob("*.arrow")))
    shard.write_bytes(shard.read_bytes()[:-10])
    other = job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", repair=True)
    with pytest.raises(Exception, match="another configuration"):
        run_job(other.model_copy(update={"word_stats": False}))
    assert sorted(p.name for p in (out / "ledger").glob("*.json")) == entries


def test_a_resume_under_another_tokenizer_name_is_refused(tmp_path, bpe_path):
    """The name (the file's, by default) is written into every shard but not hashed: a
    byte-identical copy under another name resumed, and the output held shards of two names."""
    from pipeline.errors import LedgerError

    shutil.copy(bpe_path, tmp_path / "tokenizer.json")
    out = tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}"))
    with pytest.raises(LedgerError, match="started with a tokenizer named"):
        run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{tmp_path / 'tokenizer.json'}"))
    named = {"kind": "bpe", "path": str(tmp_path / "tokenizer.json")}
    named["options"] = {"name": os.path.basename(bpe_path)}
    assert run_job(job_config(SAMPLE_DIR / "de.jsonl", out, named)).complete


def test_outputs_and_leases_that_cannot_be_and_storage_options_that_merge(tmp_path, bpe_path):
    """An output under a file and --lease-seconds inf were tracebacks (the second after every
    unit had committed); one --storage-option flag replaced every storage option of the
    YAML file."""
    from jobs.config_flags import build_config

    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot be created: .*afile is a file"):
        run_job(job_config(SAMPLE_DIR / "de.jsonl", tmp_path / "afile" / "out", f"bpe:{bpe_path}"))
    with pytest.raises(ConfigError, match="lease_seconds"):
        job_config(SAMPLE_DIR / "de.jsonl", tmp_path / "o", f"bpe:{bpe_path}", lease_seconds="inf")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"input: ['{SAMPLE_DIR}/de.jsonl']\noutput: {tmp_path / 'o'}\ntokenizer: bpe:{bpe_path}\n"
        "storage_options: {use_listings_cache: false, listings_expiry_time: 10}\n"
    )
    cfg = build_config(str(config), storage_option=("skip_instance_cache=true",))
    assert cfg.storage_options == {
        "use_listings_cache": False,
        "listings_expiry_time": 10,
        "skip_instance_cache": True,
    }


def test_a_malformed_ledger_entry_is_named_by_verify_and_redone_by_repair(tmp_path, bpe_path):
    """verify ended with exit 2 and no report, and --repair could not get past it."""
    out = tmp_path / "out"
    cfg = job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000)
    run_job(cfg)
    before = shard_files(out)
    entry = sorted((out / "ledger").glob("*.json"))[0]
    entry.write_text(entry.read_text()[:80])
    report = verify_output(str(out))
    assert not report.ok and report.bad_units == [entry.name.split(".")[0]]
    assert "is malformed" in report.problems[0]
    summary = run_job(cfg.model_copy(update={"repair": True}))
    assert summary.complete and summary.units_run == 1
    assert verify_output(str(out)).ok and shard_files(out) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("unit_bytes", True, "True is not a number"),  # (YAML `true` ran 363 one-document units)
        ("verify_sample", True, "True is not a number"),
        ("eos_token", "", "at least 1 character"),  # (empty strings were taken for "not given")
        ("chat_template", "", "at least 1 character"),
        ("ray_address", "", "at least 1 character"),
    ],
)
def test_a_boolean_for_a_number_or_an_empty_name_is_refused(field, value, message):
    from pipeline.tokenize.config import load_config

    with pytest.raises(ConfigError, match=f"{field}: .*{message}"):
        load_config(input=["x.jsonl"], output="o", tokenizer="bpe:t.json", **{field: value})
