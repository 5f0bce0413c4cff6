"""Faults injected into real runs: every case ends with `tokenmill verify` passing and the committed
shards byte-identical to an uninterrupted run (nothing lost, nothing duplicated)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from infra.s3_server import S3Server
from jobs.cli import main as cli
from pipeline.errors import LeaseError, UnitFailed
from pipeline.output.lease import OutputLease
from pipeline.output.ledger import committed_entries
from pipeline.output.storage import Output
from pipeline.output.verify import verify_output
from pipeline.tokenize.engine import run_job
from schemas.layout import LEASE_FILE

from .helpers import REPO, SAMPLE_DIR, job_config, shard_files

TOKENMILL = str(Path(sys.executable).parent / "tokenmill")
COPIES = 6  # the sample corpus 6 times over (~13 MB): units take long enough to be hit mid-way
UNIT_BYTES = 1 << 20


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("big")
    for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
        with open(folder / path.name, "w", encoding="utf-8") as out:
            for copy in range(COPIES):
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    record["id"] = f"{record['id']}-{copy}"
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(folder / "*.jsonl")


def config(inputs: str, output, tokenizer: str, **kw):
    kw.setdefault("unit_bytes", UNIT_BYTES)
    return job_config(inputs, output, tokenizer, **kw)


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory, big_input, bpe_path) -> dict[str, bytes]:
    """Shards of an uninterrupted run (name -> bytes)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run_job(config(big_input, out, f"bpe:{bpe_path}", actors=2))
    assert summary.complete and summary.units_planned > 8
    return shard_files(out)


def assert_same_as_reference(out: Path, reference: dict[str, bytes]) -> None:
    report = verify_output(str(out))
    assert report.ok, report.problems
    assert shard_files(out) == reference  # same names, same bytes: nothing lost or duplicated
    ids = [e.unit_id for e in committed_entries(Output(str(out)))]
    assert len(ids) == len(set(ids)) == len(reference)


def tokenizer_processes(busy: bool = True) -> list[psutil.Process]:
    """Ray actor worker processes of TokenizeWorker (busy: inside process(), i.e. mid-unit)."""
    want = "ray::TokenizeWorker.process" if busy else "ray::TokenizeWorker"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith(want):
            found.append(proc)
    return found


def test_tokenizer_actor_sigkilled_mid_unit_is_restarted_and_the_unit_redone(
    ray_session, tmp_path, big_input, bpe_path, reference
):
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(killed) < 2:
            busy = [p for p in tokenizer_processes() if p.pid not in killed]
            if busy:
                time.sleep(0.05)  # well inside the unit
                os.kill(busy[0].pid, signal.SIGKILL)
                killed.append(busy[0].pid)
                time.sleep(1.0)
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run_job(config(big_input, tmp_path / "out", f"bpe:{bpe_path}", actors=2))
    thread.join()
    assert len(killed) == 2, "the killer never found a busy tokenizer actor"
    assert summary.complete and summary.units_run == len(reference)
    assert_same_as_reference(tmp_path / "out", reference)


def cli_run(inputs: str, output, bpe_path: str, *extra: str) -> list[str]:
    return [
        TOKENMILL,
        "run",
        "--input",
        inputs,
        "--output",
        str(output),
        "--tokenizer",
        f"bpe:{bpe_path}",
        "--unit-bytes",
        str(UNIT_BYTES),
        "--actors",
        "2",
        "--no-progress",
        *extra,
    ]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of a process group (the local Ray cluster a killed driver started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow  # starts its own Ray cluster(s) or S3 server
def test_driver_sigkilled_after_first_commit_then_the_same_command_finishes_the_job(
    tmp_path, big_input, bpe_path, reference
):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        cli_run(big_input, out, bpe_path),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not list((out / "ledger").glob("*.json")):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the fault: the driver dies mid-run
    proc.wait(timeout=30)
    kill_group(proc)  # and the local Ray cluster it started goes with it, as in a machine crash
    committed = len(list((out / "ledger").glob("*.json")))
    assert 1 <= committed < len(reference)
    assert (out / LEASE_FILE).exists()  # the dead driver's lease is left behind
    rerun = subprocess.run(
        cli_run(big_input, out, bpe_path),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["units_skipped"] >= committed and summary["complete"]
    assert "taking over a stale lease" in rerun.stderr  # owner pid is dead on this host
    assert not (out / LEASE_FILE).exists()
    assert_same_as_reference(out, reference)


def test_a_shard_deleted_or_corrupted_after_commit_is_named_by_verify_and_repair_rewrites_it(
    ray_session, tmp_path, bpe_path, sample_dir
):
    out = tmp_path / "out"
    cfg = config(str(sample_dir / "*.jsonl"), out, f"bpe:{bpe_path}", unit_bytes=200_000)
    run_job(cfg)
    good = shard_files(out)
    names = sorted(good)
    (out / names[0]).unlink()
    corrupted = bytearray(good[names[3]])
    corrupted[len(corrupted) // 2] ^= 0xFF
    (out / names[3]).write_bytes(bytes(corrupted))
    untouched = {n: (out / n).stat().st_mtime_ns for n in names[1:3] + names[4:]}

    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert result.exit_code == 1
    assert f"shard {names[0]} is missing" in result.output
    assert f"shard {names[3]} checksum mismatch" in result.output
    report = json.loads(result.stdout)
    assert len(report["bad_units"]) == 2

    summary = run_job(cfg.model_copy(update={"repair": True}))
    assert sorted(r["unit_id"] for r in summary.repaired) == sorted(report["bad_units"])
    assert summary.units_run == 2 and summary.complete
    assert shard_files(out) == good
    assert {n: (out / n).stat().st_mtime_ns for n in untouched} == untouched  # only those two
    assert verify_output(str(out)).ok


def test_a_second_run_on_a_leased_output_refuses_with_a_clear_message(
    ray_session, tmp_path, bpe_path, sample_dir
):
    out = tmp_path / "out"
    cfg = config(str(sample_dir / "*.jsonl"), out, f"bpe:{bpe_path}")
    with OutputLease(Output(str(out)), ttl_s=30) as other:
        with pytest.raises(
            LeaseError,
            match=rf"output {out} is leased by another run \(owner "
            rf"{other.owner}, host .*, pid {os.getpid()}",
        ):
            run_job(cfg)
        result = CliRunner().invoke(
            cli,
            [
                "run",
                "--input",
                str(sample_dir / "*.jsonl"),
                "--output",
                str(out),
                "--tokenizer",
                f"bpe:{bpe_path}",
            ],
        )
        assert result.exit_code == 2 and "is leased by another run" in result.output
        assert not (out / "ledger").exists()  # refused before writing anything
    assert run_job(cfg).complete  # released: the next run goes ahead


@pytest.mark.slow  # starts its own Ray cluster(s) or S3 server
def test_two_drivers_started_at_once_one_runs_the_other_refuses(
    tmp_path, big_input, bpe_path, reference
):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    procs = [
        subprocess.Popen(
            cli_run(big_input, out, bpe_path),
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "is leased by another run" in refused
    assert_same_as_reference(out, reference)


def test_stale_lease_of_a_crashed_driver_elsewhere_is_taken_over_after_expiry(tmp_path):
    output = Output(str(tmp_path / "out"))
    crashed = OutputLease(output, ttl_s=0.5, heartbeat_s=3600).acquire()
    crashed._stop.set()  # its heartbeat stops, as when the driver's machine dies
    with pytest.raises(LeaseError):
        OutputLease(output, ttl_s=5).acquire()
    time.sleep(0.7)
    with OutputLease(output, ttl_s=5) as fresh:
        crashed.refresh()
        assert crashed.lost and fresh.owner in crashed.lost
        with pytest.raises(LeaseError, match="lost its lease"):
            crashed.check()


def test_a_lease_whose_owner_was_killed_but_not_yet_reaped_is_taken_over_at_once(tmp_path):
    """A killed driver is a zombie until its parent reaps it (a harness that has not called
    wait() yet; init takes about a second for an orphan): same pid, same start time. Its lease
    is stale at once, as a dead owner's is (a rerun was refused for up to a minute)."""
    import json
    import signal

    import psutil

    from schemas.layout import LEASE_FILE

    output = Output(str(tmp_path / "out"))
    crashed = OutputLease(output, ttl_s=60, heartbeat_s=3600).acquire()
    crashed._stop.set()
    child = subprocess.Popen(["sleep", "60"])
    try:
        lease = json.loads(output.read_bytes(LEASE_FILE))
        lease.update(pid=child.pid, pid_started=psutil.Process(child.pid).create_time())
        output.write_bytes(LEASE_FILE, json.dumps(lease).encode())
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline
            time.sleep(0.01)
        with OutputLease(output, ttl_s=60) as fresh:  # (no wait for the expiry)
            assert fresh.owner != lease["owner"]
    finally:
        child.wait()


class FlakyProxy:
    """A TCP forwarder in front of the S3 server whose `outage()` drops every connection and
    refuses new ones for a while, like a storage endpoint that goes away and comes back."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.down = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _listen(self) -> socket.socket:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.1)
        return server

    def _serve(self) -> None:
        server = self._listen()
        while not self.closed:
            if self.down.is_set():
                server.close()
                while self.down.is_set() and not self.closed:
                    time.sleep(0.05)
                server = self._listen()
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        server.close()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for src in ready:
                    data = src.recv(1 << 16)
                    if not data:
                        raise OSError("closed")
                    (b if src is a else a).sendall(data)
        except OSError:
            for s in (a, b):
                s.close()

    def outage(self, seconds: float) -> None:
        self.down.set()
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns = []
        time.sleep(seconds)
        self.down.clear()

    def close(self) -> None:
        self.closed = True


def s3_reference(s3, inputs: str, bpe_path: str, prefix: str, **kw) -> dict[str, bytes]:
    out = f"s3://faults/{prefix}"
    summary = run_job(
        config(
            inputs,
            out,
            f"bpe:{bpe_path}",
            storage_options=s3.storage_options,
            unit_bytes=100_000,
            **kw,
        )
    )
    assert summary.complete
    output = Output(out, s3.storage_options)
    return {e.shard: output.read_bytes(e.shard) for e in committed_entries(output)}


def s3_shards(output: Output) -> dict[str, bytes]:
    return {e.shard: output.read_bytes(e.shard) for e in committed_entries(output)}


def test_object_storage_outage_mid_run_is_ridden_out_by_retries_with_backoff(
    ray_session, s3, s3_sample, bpe_path
):
    s3.create_bucket("faults")
    reference = s3_reference(s3, s3_sample, bpe_path, "outage-ref")
    proxy = FlakyProxy(s3.port)
    options = {**s3.storage_options, "endpoint_url": f"http://127.0.0.1:{proxy.port}"}
    output = Output("s3://faults/outage", options)
    outages = []

    def cut_when_first_unit_commits() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            if Output("s3://faults/outage", s3.storage_options).list("ledger"):
                outages.append(time.time())
                proxy.outage(3.0)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=cut_when_first_unit_commits, daemon=True)
    thread.start()
    try:
        summary = run_job(
            config(
                s3_sample,
                "s3://faults/outage",
                f"bpe:{bpe_path}",
                storage_options=options,
                unit_bytes=100_000,
            )
        )
    finally:
        thread.join()
        proxy.close()
    assert outages, "the run finished before the outage could start"
    assert summary.complete and summary.units_run == len(reference)
    assert verify_output(output.url, s3.storage_options).ok
    assert s3_shards(Output(output.url, s3.storage_options)) == reference


@pytest.mark.slow  # starts its own Ray cluster(s) or S3 server
def test_object_storage_server_restarted_mid_run_fails_clearly_and_the_rerun_finishes(
    ray_session, tmp_path, sample_dir, bpe_path
):
    """moto keeps its state in memory, so a restart is a server that lost everything: the bucket
    and the inputs are put back (as a durable store would have kept them); what the run had
    committed is gone with the old process."""
    server = S3Server().start()

    def populate() -> None:
        server.create_bucket("restart")
        fs = server.filesystem()
        for path in sorted(sample_dir.glob("*.jsonl")):
            fs.put_file(str(path), f"restart/in/{path.name}")

    populate()
    inputs = "s3://restart/in/*.jsonl"

    def cfg(prefix: str, **kw):
        return config(
            inputs,
            f"s3://restart/{prefix}",
            f"bpe:{bpe_path}",
            storage_options=server.storage_options,
            unit_bytes=100_000,
            **kw,
        )

    try:
        run_job(cfg("ref"))
        reference = s3_shards(Output("s3://restart/ref", server.storage_options))

        def restart_after_first_commit() -> None:
            out = Output("s3://restart/out", server.storage_options)
            deadline = time.time() + 120
            while time.time() < deadline and not out.list("ledger"):
                time.sleep(0.05)
            server.stop()
            time.sleep(1.0)
            server.start()
            populate()

        thread = threading.Thread(target=restart_after_first_commit, daemon=True)
        thread.start()
        try:
            summary = run_job(cfg("out"))
            outcome = "finished"
        except UnitFailed as exc:  # a unit hit the missing objects: named, with the cause
            outcome = str(exc)
            assert "failed: " in outcome and "rerun the same command to resume" in outcome
        except LeaseError as exc:  # the restarted store lost the lease object too: stop safely
            outcome = str(exc)  # found by the heartbeat, or by a commit's fence check
            assert "lost its lease" in outcome or "not committed: the lease of" in outcome
        thread.join()
        print(f"first run after the restart: {outcome}")
        # A restarted moto has lost objects it had acknowledged (no real store does): a plain rerun
        # trusts the ledger, so the rerun verifies first (--repair) and redoes whatever was lost.
        summary = run_job(cfg("out", repair=True))
        assert summary.complete, outcome
        output = Output("s3://restart/out", server.storage_options)
        assert verify_output(output.url, server.storage_options).ok
        assert s3_shards(output) == reference
    finally:
        server.stop()


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_a_storage_error_while_an_input_is_read_fails_the_unit_and_is_no_reject(
    s3, monkeypatch, suffix
):
    """An object store that stops answering while a file is read (here: past the retries) is not
    damage in the file. It became an `unreadable input` reject, committed, and a rerun had
    nothing to redo: whole files lost, and a stream's partial range kept beside the full one.
    Now the unit fails (InputReadFailed, exit 3), nothing of it is committed."""
    import gzip

    import zstandard

    from pipeline.errors import InputReadFailed
    from pipeline.output import storage
    from pipeline.tokenize.inputs import ReadOptions, plan_units, read_unit

    monkeypatch.setattr(storage, "DEFAULT_DEADLINE_S", 1.0)
    rng = random.Random(0)  # text that compresses only ~2x: every format reads it in many reads
    raw = "".join(
        json.dumps({"id": f"d{i}", "text": " ".join(f"{rng.getrandbits(32):x}" for _ in range(90))})
        + "\n"
        for i in range(8_000)
    ).encode()
    data = {"": raw, ".gz": gzip.compress(raw), ".zst": zstandard.compress(raw)}[suffix]
    bucket = f"reads{suffix.strip('.')}"
    s3.create_bucket(bucket)
    with s3.filesystem().open(f"{bucket}/in.jsonl{suffix}", "wb") as handle:
        handle.write(data)
    proxy = FlakyProxy(s3.port)
    options = {
        **s3.storage_options,
        "endpoint_url": f"http://127.0.0.1:{proxy.port}",
        "default_block_size": 1 << 16,
        "config_kwargs": {"retries": {"total_max_attempts": 1}},
    }
    opts = ReadOptions(unit_bytes=1 << 30)
    (unit,) = plan_units([f"s3://{bucket}/in.jsonl{suffix}"], opts, options)
    batches = read_unit(unit, opts, options)
    first = next(batches)
    assert first.texts and not first.rejects
    down = threading.Thread(target=proxy.outage, args=(20.0,), daemon=True)
    down.start()
    try:
        with pytest.raises(InputReadFailed, match="a storage error, not damage in the file"):
            for batch in batches:
                assert not batch.rejects
    finally:
        proxy.down.clear()
        proxy.close()
