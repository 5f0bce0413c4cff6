"""Scale-out: the same job submitted with `ray job submit` to a two-node Ray cluster on this machine
writes the same shard bytes as a single-node run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.engine import run_job
from pipeline.verify import verify_output

from .conftest import REPO, shard_files

BIN = Path(sys.executable).parent
PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port",
    "--runtime-env-agent-port",
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_flags() -> list[str]:
    """Explicit free ports, so this cluster never collides with the test session's local Ray."""
    return [
        f"{flag}={port}" for flag, port in zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)
    ]


class TwoNodeCluster:
    """`ray start --head` plus `ray start --address`, each with --block in its own process group,
    so teardown stops exactly these processes (never `ray stop`, which would stop every cluster)."""

    def __init__(self):
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.temp_dir = tempfile.mkdtemp(prefix="tms", dir="/tmp")
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"node{len(self.procs)}.log", "wb")  # noqa: SIM115
        argv = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            *args,
            *node_flags(),
        ]
        self.procs.append(
            subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def start(self) -> TwoNodeCluster:
        self._start(
            "--head",
            f"--port={self.gcs_port}",
            "--num-cpus=1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--temp-dir={self.temp_dir}",
        )
        self._wait(lambda: self._status().count("node_") >= 1, "head node")
        self._start(f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=1")
        self._wait(lambda: self._status().count("node_") >= 2, "second node")
        return self

    def _status(self) -> str:
        proc = subprocess.run(
            [str(BIN / "ray"), "status", f"--address=127.0.0.1:{self.gcs_port}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout if proc.returncode == 0 else ""

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(
                    f"ray start exited while waiting for the {what}: "
                    + (Path(self.temp_dir) / f"node{len(self.procs) - 1}.log").read_text()
                )
            if ready():
                return
            time.sleep(1)
        raise TimeoutError(f"the {what} did not come up")

    def submit(self, *entry: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                f"--address=http://127.0.0.1:{self.dashboard_port}",
                "--working-dir",
                ".",
                "--",
                *entry,
            ],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers left in the group


@pytest.mark.slow
def test_ray_job_submit_on_a_two_node_cluster_matches_the_single_node_run(
    ray_session, tmp_path, sample_dir, bpe_path
):
    inputs = str(sample_dir / "*.jsonl")
    single = tmp_path / "single"
    run_job(
        load_config(
            input=[inputs],
            output=str(single),
            tokenizer=f"bpe:{bpe_path}",
            unit_bytes=200_000,
            actors=2,
            progress=False,
        )
    )
    cluster = TwoNodeCluster().start()
    try:
        result = cluster.submit(
            sys.executable,
            "-m",
            "jobs.tokenize",
            "--input",
            inputs,
            "--output",
            str(tmp_path / "cluster"),
            "--tokenizer",
            f"bpe:{bpe_path}",
            "--unit-bytes",
            "200000",
            "--actors",
            "2",
            "--no-progress",
        )
        nodes = cluster._status().count("node_")
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert nodes == 2
    assert verify_output(str(tmp_path / "cluster"))["ok"]
    assert shard_files(tmp_path / "cluster") == shard_files(single)
