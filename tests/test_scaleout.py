"""Scale-out: the same job submitted with `ray job submit` to a two-node Ray cluster on this machine
writes the same shard bytes as a single-node run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.output.verify import verify_output
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job

from .helpers import REPO, shard_files

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TwoNodeCluster:
    """Two Ray nodes (a head with the dashboard/job API and one worker node, 1 CPU each) on this
    machine via ray.cluster_utils.Cluster, which runs each node's processes separately and stops
    exactly them on shutdown (never `ray stop`, which would stop every cluster on the machine)."""

    def __init__(self):
        self.dashboard_port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.cluster = None

    def start(self) -> TwoNodeCluster:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "dashboard_agent_listen_port": free_port(),
            },
        )
        # every node's agent on its own port: the default 52365 is taken by any other local Ray
        self.cluster.add_node(num_cpus=1, dashboard_agent_listen_port=free_port())
        self.cluster.wait_for_nodes(timeout=180)
        deadline = time.time() + 120
        while self.nodes() < 2 and time.time() < deadline:
            time.sleep(2)
        return self

    def nodes(self) -> int:
        proc = subprocess.run(
            [str(BIN / "ray"), "status", f"--address={self.cluster.address}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout.split("Pending:")[0].count(" node_") if proc.returncode == 0 else 0

    def submit(self, *entry: str) -> subprocess.CompletedProcess:
        """`ray job submit`, retried while the head's job agent is still registering."""
        argv = [
            str(BIN / "ray"),
            "job",
            "submit",
            f"--address=http://127.0.0.1:{self.dashboard_port}",
            "--working-dir",
            ".",
            "--",
            *entry,
        ]
        deadline = time.time() + 180
        while True:
            proc = subprocess.run(
                argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=600
            )
            if "No available agent" not in proc.stderr + proc.stdout or time.time() > deadline:
                return proc
            time.sleep(5)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()


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
    cluster = TwoNodeCluster()
    try:
        cluster.start()
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
        nodes = cluster.nodes()
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert nodes == 2
    assert verify_output(str(tmp_path / "cluster")).ok
    assert shard_files(tmp_path / "cluster") == shard_files(single)


def test_actors_get_the_drivers_paths_and_refuse_another_tokenizer(
    ray_session, tmp_path, monkeypatch, bpe_path, sample_dir
):
    """Actors work in the folder their cluster started from, not the driver's: a relative
    tokenizer path loaded whatever file of that name was there (its ids went into an output
    recording the driver's tokenizer, and `verify` said ok), a relative output went there too.
    Actors now get the driver's absolute paths, and one that loads another tokenizer than the
    driver's refuses to start."""
    import shutil

    import ray

    from pipeline.errors import ConfigError
    from pipeline.tokenize.actors import TokenizeWorker
    from pipeline.tokenize.inputs import ReadOptions
    from pipeline.tokenize.unit import UnitTask
    from tests.helpers import job_config

    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(bpe_path, here / "tok.json")
    monkeypatch.chdir(here)  # (the session's actors keep the folder Ray started in)
    cfg = job_config(sample_dir / "de.jsonl", "out", "bpe:tok.json", actors=2)
    summary = run_job(cfg)
    assert summary.complete and summary.actors >= 1, summary
    assert verify_output(str(here / "out")).ok and list((here / "out" / "shards").glob("*.arrow"))

    task = UnitTask(ReadOptions(), "0" * 16, False, True, {}, tokenizer_fingerprint="other")
    actor = TokenizeWorker.remote(f"bpe:{bpe_path}", {}, str(tmp_path / "o"), task)
    with pytest.raises(ray.exceptions.RayActorError, match="not the driver's other"):
        ray.get(actor.pid.remote())
    assert ConfigError  # (the cause the actor raised)
