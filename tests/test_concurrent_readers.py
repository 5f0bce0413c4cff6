"""Readers of an output that a run changes while they read it (found by a team sharing one
output): an entry uncommitted between a reader's listing and its read crashed verify, export,
report and plan with a FileNotFoundError traceback; verify called such a unit damaged; a loader
made before a run redid the output failed with a traceback; on S3 a long-lived process saw every
unit committed after its first listing as missing (s3fs answered reads from the cached listing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pipeline.errors import LoaderError
from pipeline.loader import TokenDataset
from pipeline.output import Output, committed_entries
from pipeline.output.verify import verify_output
from pipeline.tokenize.engine import run_job

from .helpers import REPO, SAMPLE_DIR, job_config


def test_an_entry_uncommitted_after_the_listing_is_skipped_not_a_crash(
    tmp_path, bpe_path, monkeypatch
):
    out = tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000))
    real = sorted(p.name for p in (out / "ledger").glob("*.json"))
    ghost = "0" * 24 + "." + real[0].split(".", 1)[1]  # listed, then gone (a run uncommitted it)
    listing = Output.list

    def with_ghost(self, rel_dir, suffix=""):
        names = listing(self, rel_dir, suffix)
        return sorted([*names, ghost]) if rel_dir == "ledger" else names

    monkeypatch.setattr(Output, "list", with_ghost)
    assert len(committed_entries(Output(str(out)))) == len(real)
    report = verify_output(str(out))
    assert report.ok and report.units == len(real), report.problems


def test_a_unit_uncommitted_while_verify_reads_it_is_not_damage(tmp_path, bpe_path, monkeypatch):
    """Uncommitting removes the entry first, then the files: verify that read the entry and
    then found no shard reported the unit bad (exit 1) on a sound output."""
    from pipeline.output import verify as verify_module

    out = tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000))
    check = verify_module._check_entry
    gone = []

    def uncommitted_meanwhile(output, entry):
        if not gone:  # the first unit is uncommitted as verify reaches it
            gone.append(entry)
            (out / entry.shard).unlink()
            for name in (out / "ledger").glob(f"{entry.unit_id}.*"):
                name.unlink()
        return check(output, entry)

    monkeypatch.setattr(verify_module, "_check_entry", uncommitted_meanwhile)
    report = verify_output(str(out))
    assert gone and report.ok and not report.problems


def test_a_loader_made_before_a_run_redid_the_output_says_so(tmp_path, bpe_path):
    out = tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000))
    ds = TokenDataset(str(out), 64, batch_size=2)
    shutil.rmtree(out / "shards")  # (what --overwrite does before its run writes them again)
    with pytest.raises(LoaderError, match="listed by the ledger is missing: the output changed"):
        next(iter(ds))


def test_units_committed_after_a_listing_read_on_s3_in_the_same_process(s3, bpe_path):
    """A notebook or trainer that verified an S3 output once saw every unit another process
    committed afterwards as missing: verify, export, the loader and reports all refused it."""
    s3.create_bucket("late")
    fs = s3.filesystem()
    fs.put_file(str(SAMPLE_DIR / "de.jsonl"), "late/in/de.jsonl")
    options = s3.storage_options
    args = ["--input", "s3://late/in/*.jsonl", "--output", "s3://late/out"]
    args += ["--tokenizer", f"bpe:{bpe_path}", "--unit-bytes", "40000", "--no-progress"]
    args += [x for k, v in options.items() for x in ("--storage-option", f"{k}={v}")]
    cfg = job_config("s3://late/in/*.jsonl", "s3://late/out", f"bpe:{bpe_path}", unit_bytes=40_000)
    run_job(cfg.model_copy(update={"storage_options": options}))
    first = verify_output("s3://late/out", options)  # (this process lists ledger and shards)
    assert first.ok
    fs.put_file(str(SAMPLE_DIR / "ru.jsonl"), "late/in/ru.jsonl")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    other = subprocess.run(  # another process commits more units
        [sys.executable, "-m", "jobs.cli", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    report = verify_output("s3://late/out", options)
    assert report.ok and report.units > first.units, report.problems
    ds = TokenDataset("s3://late/out", 64, batch_size=2, storage_options=options)
    assert sum(1 for _ in ds) > 0


def test_an_export_of_an_output_whose_run_goes_on_says_so(tmp_path, bpe_path):
    """An export taken while the source's run was still committing units exited 0 and wrote a
    verified manifest without a word about the units still to come."""
    import json
    import socket
    import time

    import psutil
    from click.testing import CliRunner

    from jobs.cli import main as cli

    out = tmp_path / "out"
    run_job(job_config(SAMPLE_DIR / "de.jsonl", out, f"bpe:{bpe_path}", unit_bytes=40_000))
    me = psutil.Process()
    lease = {
        "owner": "x",
        "host": socket.gethostname(),
        "pid": me.pid,
        "pid_started": me.create_time(),
        "expires_at": time.time() + 600,
        "generation": 2,
    }
    (out / "_lease.json").write_text(json.dumps(lease))  # (a run holds the output)
    result = CliRunner().invoke(cli, ["export", str(out), str(tmp_path / "hf"), "--format", "hf"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] and summary["source_complete"] is False
    assert "has not finished (it runs now, or stopped short)" in result.output
    (out / "_lease.json").unlink()
    again = CliRunner().invoke(cli, ["export", str(out), str(tmp_path / "hf2"), "--format", "hf"])
    assert json.loads(again.output.strip().splitlines()[-1])["source_complete"] is True
    assert "has not finished" not in again.output
