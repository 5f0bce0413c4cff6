"""Soak run: the same `tokenmill run` repeated N times on (a slice of) the bench corpus, sampling the
RSS of every process of the run (the driver and every Ray process it starts) in a thread, to show
peak memory stays flat from pass to pass.

    .venv/bin/python bench/soak.py --passes 4 --slice-mb 24 --out /tmp/soak

Each pass is a fresh driver (a new local Ray) writing a fresh output; the figures are the peak RSS
per process role and the peak of the sum over all processes, per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

CORPUS = Path("/tmp/tokenmill-bench-corpus/corpus")
BIN = Path(sys.executable).parent


def make_slice(corpus: Path, dest: Path, slice_mb: float) -> list[Path]:
    """The first slice_mb / n_files MB of every corpus file, cut at a line end."""
    files = sorted(corpus.glob("*.jsonl"))
    per_file = int(slice_mb * (1 << 20) / len(files))
    stamp = dest / ".params"
    params = f"{corpus.resolve()} {per_file}"
    if dest.exists() and (not stamp.exists() or stamp.read_text() != params):
        shutil.rmtree(dest)  # (cut for another --slice-mb: it was reused, and so its tokenizer)
        (dest.parent / "bpe-32k.json").unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    stamp.write_text(params)
    out = []
    for path in files:
        target = dest / path.name
        if not target.exists():
            with open(path, "rb") as src:
                data = src.read(per_file)
                data += src.readline()
            target.write_bytes(data)
        out.append(target)
    return out


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if cmd.startswith("ray::"):
        return cmd.split()[0].split(".")[0]  # ray::TokenizeWorker, ray::IDLE, ...
    for name in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py"):
        if name in cmd:
            return name
    return "other"


class Sampler(threading.Thread):
    """Samples the RSS of a process tree every `interval` seconds until stopped."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root = psutil.Process(root)
        self.interval = interval
        self.peak_by_role: dict[str, int] = defaultdict(int)
        self.peak_by_pid: dict[int, tuple[frozenset[str], int]] = {}  # roles seen, peak RSS
        self.peak_total = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                name = "driver" if proc.pid == self.root.pid else role(proc)
                total += rss
                self.peak_by_role[name] = max(self.peak_by_role[name], rss)
                roles, prev = self.peak_by_pid.get(proc.pid, (frozenset(), 0))
                self.peak_by_pid[proc.pid] = (roles | {name}, max(prev, rss))
            self.peak_total = max(self.peak_total, total)
            self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--slice-mb", type=float, default=24.0, help="0 = the whole corpus")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--tokenizer", default=None, help="KIND:PATH (default: train a 32k bpe)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokenmill-soak"))
    args = parser.parse_args()

    for _ in range(60):  # the bench corpus may still be being built: wait a few minutes at most
        if list(args.corpus.glob("*.jsonl")):
            break
        time.sleep(5)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    inputs = (
        make_slice(args.corpus, args.out / "slice", args.slice_mb)
        if args.slice_mb
        else sorted(args.corpus.glob("*.jsonl"))
    )
    input_mb = sum(p.stat().st_size for p in inputs) / 1e6
    tokenizer = args.tokenizer
    if tokenizer is None:
        tok_path = args.out / "bpe-32k.json"
        if not tok_path.exists():
            subprocess.run(
                [
                    str(BIN / "tokenmill"),
                    "train-tokenizer",
                    "--kind",
                    "bpe",
                    "--input",
                    str(inputs[0].parent / "*.jsonl"),
                    "--vocab-size",
                    "32000",
                    "--max-docs",
                    "20000",
                    "--output",
                    str(tok_path),
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        tokenizer = f"bpe:{tok_path}"
    rows = []
    for n in range(1, args.passes + 1):
        output = args.out / f"pass{n}"
        argv = [
            str(BIN / "tokenmill"),
            "run",
            "--input",
            str(inputs[0].parent / "*.jsonl"),
            "--output",
            str(output),
            "--tokenizer",
            tokenizer,
            "--actors",
            str(args.actors),
            "--overwrite",
            "--no-progress",
        ]
        t0 = time.time()
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.stop()
        if proc.returncode != 0:
            raise SystemExit(f"pass {n} failed: {stderr[-2000:]}")
        summary = json.loads(stdout)
        workers = [
            rss for roles, rss in sampler.peak_by_pid.values() if "ray::TokenizeWorker" in roles
        ]
        row = {
            "pass": n,
            "seconds": round(time.time() - t0, 1),
            "mb_per_s": summary["mb_per_s"],
            "documents": summary["documents"],
            "tokens": summary["tokens"],
            "peak_total_mb": round(sampler.peak_total / 2**20, 1),
            "peak_driver_mb": round(sampler.peak_by_role["driver"] / 2**20, 1),
            "peak_worker_mb": [round(w / 2**20, 1) for w in sorted(workers)],
            "peak_by_role_mb": {
                k: round(v / 2**20, 1) for k, v in sorted(sampler.peak_by_role.items())
            },
            "processes": len(sampler.peak_by_pid),
            "samples": sampler.samples,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    totals = [r["peak_total_mb"] for r in rows]
    report = {
        "input_mb": round(input_mb, 1),
        "input_files": [str(p) for p in inputs],
        "tokenizer": tokenizer,
        "actors": args.actors,
        "passes": rows,
        "peak_total_spread_mb": round(max(totals) - min(totals), 1),
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    print(
        f"input {input_mb:.1f} MB x {args.passes} passes; peak total RSS per pass (MB): {totals}; "
        f"spread {report['peak_total_spread_mb']} MB; report {args.out / 'soak.json'}"
    )


if __name__ == "__main__":
    main()
