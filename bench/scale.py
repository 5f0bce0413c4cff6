"""The driver's cost per unit at scale (docs/scale-out.md uses these numbers):

  (a) planning: `plan_units` over N small local files; building N WorkUnits and their unit ids
      (the driver's memory for a plan of N units); on the local S3 server, the bytes planning reads
      per unit boundary of a big file (fsspec's read-ahead block); the driver's reader of a big
      compressed file (`iter_ranges`: decompress and cut into ranges), in MB/s;
  (b) resume listing: `committed_unit_ids` (one LIST per 1,000 entries on S3) and
      `committed_entries` (one GET per entry) over an output whose ledger holds N synthetic but
      valid entries written through `Output.write_json`, locally and on the local S3 server;
  (c) dispatch: the Ray dispatch loop of pipeline/tokenize/actors.py (same bounded queue, same
      ray.wait per result) with a no-op actor method, and one `ray.wait` over K refs;
  (d) S3 requests per unit: `process_unit` run in this process on the local S3 server, every S3 API
      call counted by operation (botocore event hooks).

Prints a table: units, seconds, µs/unit, driver RSS (MB) after the step, and its growth.

  .venv/bin/python bench/scale.py                      # 100k local, 20k S3, 100k dispatch (~7 min)
  .venv/bin/python bench/scale.py --units 1000000 --only plan,ledger-local            # ~8 min
  .venv/bin/python bench/scale.py --only ledger-s3 --s3-units 100000                  # ~10 min
  .venv/bin/python bench/scale.py --only dispatch --in-flight 0,1024,4096,16384       # ~8 min

The local S3 server is moto in one Python process on this machine: its request rates are not a
real store's (per-request latency, pagination cost); docs/scale-out.md says which numbers it uses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.output import Output, committed_entries, committed_unit_ids  # noqa: E402
from pipeline.output.storage import url_to_fs  # noqa: E402
from pipeline.tokenize.inputs import ReadOptions, WorkUnit, plan_units  # noqa: E402
from schemas.layout import UnitNames  # noqa: E402
from schemas.records import LedgerEntry, RunCounts  # noqa: E402
from schemas.shards import SCHEMA_VERSION  # noqa: E402

CONFIG_HASH = "c0ffee" * 10 + "abcd"
TOKENIZER = {"kind": "bpe", "name": "bench-32k", "fingerprint": "f" * 16, "vocab_size": 32000}
SECTIONS = ("plan", "stream", "plan-s3", "ledger-local", "ledger-s3", "requests-s3", "dispatch")
ROWS: list[dict[str, Any]] = []


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def measure(step: str, units: int, fn: Callable[[], Any], note: str = "") -> Any:
    """Run fn once; record seconds, µs/unit and the driver's RSS after it (and its growth)."""
    before = rss_mb()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    after = rss_mb()
    row = {
        "step": step,
        "units": units,
        "seconds": round(seconds, 3),
        "us_per_unit": round(seconds / max(units, 1) * 1e6, 1),
        "rss_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "note": note,
    }
    ROWS.append(row)
    print(
        f"  {step:<44} {units:>9,} units {seconds:>9.2f} s {row['us_per_unit']:>9.1f} µs/unit"
        f"  RSS {after:>7.0f} MB (+{after - before:.0f}) {note}",
        flush=True,
    )
    return out


def synthetic_unit(i: int, prefix: str = "s3://corpus/part") -> WorkUnit:
    """Unit i of a corpus of 1 GiB files cut into 64 MiB units (what planning returns)."""
    size, unit = 1 << 30, 64 << 20
    k = i % 16
    return WorkUnit(f"{prefix}-{i // 16:07d}.jsonl", "jsonl", None, k * unit, (k + 1) * unit, size)


def ledger_entry(unit: WorkUnit) -> tuple[str, dict[str, Any]]:
    """A valid ledger entry of a committed unit (the object name, its JSON)."""
    names = UnitNames.of(unit.unit_id, CONFIG_HASH)
    entry = LedgerEntry(
        unit_id=unit.unit_id,
        unit=unit,
        config_hash=CONFIG_HASH,
        shard=names.shard,
        shard_checksum="0" * 64,
        docs_read=31000,
        documents=30990,
        rejected=10,
        tokens=16_000_000,
        bytes=unit.end - unit.start,
        tokenizer=TOKENIZER,
        schema_version=SCHEMA_VERSION,
        tokenmill_version="0.1.0",
        unigrams=names.unigrams,
        unigrams_checksum="1" * 64,
        batches=122,
        timings={"read_s": 0.4, "tokenize_s": 3.1, "stats_s": 0.6, "write_s": 0.5, "total_s": 4.6},
    )
    return names.ledger, entry.to_json()


def measure_memory(step: str, units: int, fn: Callable[[], Any]) -> Any:
    """Python heap that fn's result keeps (tracemalloc; slower, so not a timing row)."""
    tracemalloc.start()
    out = fn()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    row = {"step": step, "units": units, "kept_mb": round(kept / 2**20, 1)}
    row["bytes_per_unit"] = round(kept / max(units, 1))
    ROWS.append(row)
    print(
        f"  {step:<44} {units:>9,} units kept {kept / 2**20:>8.1f} MB = "
        f"{row['bytes_per_unit']} bytes/unit",
        flush=True,
    )
    return out


# -- (a) planning ---------------------------------------------------------------------------------


def bench_plan(n: int, work: Path) -> None:
    inputs = work / "inputs"
    t0 = time.perf_counter()
    for i in range(n):
        d = inputs / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}.jsonl").write_bytes(b'{"text": "a small document"}\n')
    print(f"  (created {n:,} input files in {time.perf_counter() - t0:.1f} s)")
    units = measure(
        "plan_units, N small local files",
        n,
        lambda: plan_units([f"{inputs}/*/*.jsonl"], ReadOptions()),
        "glob+stat+sha256 per file",
    )
    assert len(units) == n, len(units)
    del units
    shutil.rmtree(inputs)
    built = measure(
        "build N WorkUnits (kept: the plan's memory)",
        n,
        lambda: [synthetic_unit(i) for i in range(n)],
    )
    ids = measure("unit_id of N WorkUnits (sha256 of JSON)", n, lambda: [u.unit_id for u in built])
    measure("describe() of N units (what dispatch sends)", n, lambda: [u.describe() for u in built])
    del built, ids
    built = measure_memory(
        "memory of N WorkUnits (the plan)", n, lambda: [synthetic_unit(i) for i in range(n)]
    )
    ids = measure_memory(
        "memory of N committed unit ids (a set)", n, lambda: {u.unit_id for u in built}
    )
    done = set(list(ids)[::2])
    measure(
        "todo = units not in committed ids (half)",
        n,
        lambda: [u for u in built if u.unit_id not in done],
    )


def bench_plan_s3(server: Any, mib: int) -> None:
    """Bytes planning reads on S3 to align 64 MiB units of one big JSONL file to line starts."""
    server.create_bucket("plan")
    line = b'{"text": "' + b"x" * 1000 + b'"}\n'
    server.filesystem().pipe_file("plan/big.jsonl", line * (mib * 2**20 // len(line)))
    fs, _ = url_to_fs("s3://plan/big.jsonl", server.storage_options)
    calls, got = count_s3_calls(fs)
    units = measure(
        f"plan_units, one {mib} MiB file on S3 (64 MiB units)",
        1,
        lambda: plan_units(["s3://plan/big.jsonl"], ReadOptions(), server.storage_options),
    )
    ROWS[-1]["units"] = len(units)
    ROWS[-1]["us_per_unit"] = round(ROWS[-1]["seconds"] / max(len(units), 1) * 1e6, 1)
    boundaries = max(len(units) - 1, 1)
    print(
        f"    {len(units)} units, {boundaries} boundaries: {dict(calls)}, "
        f"{got['bytes'] / 2**20:.0f} MiB read = {got['bytes'] / 2**20 / boundaries:.0f} MiB "
        f"per boundary ({got['bytes'] / (mib * 2**20):.0%} of the file)"
    )
    ROWS[-1]["note"] = f"{got['bytes'] / 2**20 / boundaries:.0f} MiB GET per unit boundary"


def bench_stream(work: Path, mib: int) -> None:
    """The driver's reader of a big compressed file (feed.py -> streams.iter_ranges): it
    decompresses the whole file and cuts it into 64 MiB ranges, in the driver process."""
    import numpy as np
    import zstandard

    from pipeline.tokenize.inputs import iter_ranges

    rng = np.random.default_rng(0)
    words = np.array([f"w{i}x{i * 7919 % 1000}" for i in range(20000)])
    path = work / "big.jsonl.zst"
    total = 0
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        while total < mib << 20:
            doc = " ".join(words[rng.integers(0, len(words), 2000)])
            line = json.dumps({"text": doc}).encode() + b"\n"
            out.write(line)
            total += len(line)
    size = path.stat().st_size
    (unit,) = plan_units([str(path)], ReadOptions())
    ranges = measure(
        f"iter_ranges: {total / 2**20:.0f} MiB zstd JSONL in the driver",
        max(1, total >> 26),
        lambda: sum(1 for _ in iter_ranges(unit, ReadOptions(), None)),
    )
    seconds = ROWS[-1]["seconds"]
    ROWS[-1]["units"] = ranges
    ROWS[-1]["us_per_unit"] = round(seconds / ranges * 1e6, 1)
    ROWS[-1]["note"] = (
        f"{total / 1e6 / seconds:.0f} MB/s decompressed ({size / 2**20:.0f} MiB file)"
    )
    print(f"    {ranges} ranges; {ROWS[-1]['note']}")
    path.unlink()


# -- (b) resume listing -------------------------------------------------------------------------


def write_ledger(output: Output, n: int, threads: int) -> None:
    def write(i: int) -> None:
        rel, doc = ledger_entry(synthetic_unit(i))
        output.write_json(rel, doc)

    if threads <= 1:
        for i in range(n):
            write(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(write, range(n), chunksize=64):
                pass


def bench_ledger(output: Output, n: int, where: str, threads: int, entries_max: int) -> None:
    measure(
        f"write N ledger entries ({where}, {threads} threads)",
        n,
        lambda: write_ledger(output, n, threads),
    )
    ids = measure(
        f"committed_unit_ids ({where})", n, lambda: committed_unit_ids(output, CONFIG_HASH)
    )
    assert len(ids) == n, len(ids)
    del ids
    m = min(n, entries_max)
    if m < n:  # committed_entries is one GET per entry, in sequence: time it over m entries
        output = Output(output.url + "-entries", output.storage_options)
        write_ledger(output, m, threads)
    entries = measure(
        f"committed_entries ({where}: list + 1 GET each)",
        m,
        lambda: committed_entries(output, CONFIG_HASH),
    )
    assert len(entries) == m, len(entries)


# -- (d) S3 requests per unit ---------------------------------------------------------------------


def count_s3_calls(fs: Any) -> tuple[Counter, dict[str, int]]:
    """Count every S3 API call of this fs by operation, and the bytes its GETs returned."""
    calls: Counter = Counter()
    got = {"bytes": 0}

    def before(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    def after(parsed: Any, model: Any, **_: Any) -> None:
        if model.name == "GetObject":
            got["bytes"] += int(parsed.get("ContentLength") or 0)

    fs.connect()
    fs.s3.meta.events.register("before-call.s3", before)
    fs.s3.meta.events.register("after-call.s3", after)
    return calls, got


def bench_requests(server: Any, work: Path) -> None:
    from pipeline.tokenize.unit import UnitTask, process_unit
    from tokenizers_impl import load_tokenizer
    from tokenizers_impl.bpe import BPETokenizer

    sample = sorted((REPO / "data" / "sample").glob("*.jsonl"))
    texts = [json.loads(line)["text"] for line in sample[0].read_text().splitlines()[:200]]
    BPETokenizer.train(texts, vocab_size=600).save(str(work / "bpe.json"))
    tokenizer = load_tokenizer(f"bpe:{work / 'bpe.json'}")
    server.create_bucket("req")
    fs0 = server.filesystem()
    for path in sample:
        fs0.put_file(str(path), f"req/in/{path.name}")
    read = ReadOptions(unit_bytes=200_000)
    units = plan_units(["s3://req/in/*.jsonl"], read, server.storage_options)
    output = Output("s3://req/out", server.storage_options)
    calls, _ = count_s3_calls(output.fs)  # the same cached fs reads the inputs
    task = UnitTask(read, CONFIG_HASH, False, True, server.storage_options)

    def run_all() -> None:
        for u in units:  # an actor lists nothing: no file info is cached when it opens its input
            output.fs.invalidate_cache()
            process_unit(u, tokenizer, task, output)

    measure("process_unit on S3 (sample corpus, 200 kB units)", len(units), run_all)
    per_unit = {op: round(n / len(units), 2) for op, n in sorted(calls.items())}
    print(f"    S3 calls per unit (first commit): {per_unit}")
    ROWS[-1]["note"] = json.dumps(per_unit)
    calls.clear()
    run_all()
    again = {op: round(n / len(units), 2) for op, n in sorted(calls.items())}
    print(f"    S3 calls per unit, already committed (a resumed run's skip): {again}")


# -- (c) dispatch ---------------------------------------------------------------------------------


def dispatch_loop(ray: Any, actors: list, todo: list[WorkUnit], max_in_flight: int) -> RunCounts:
    """pipeline/tokenize/actors.py `dispatch` (planned units, no stream ranges), minus actor
    creation and the disabled bar."""
    n_actors = len(actors)
    per_actor = max(1, (max_in_flight or 2 * n_actors) // n_actors)
    pending: dict[Any, tuple[int, WorkUnit]] = {}
    load = [0] * n_actors
    queue = list(reversed(todo))
    done = RunCounts()
    while queue or pending:
        for i in range(n_actors):
            while queue and load[i] < per_actor:
                unit = queue.pop()
                pending[actors[i].process.remote(unit.describe(), None)] = (i, unit)
                load[i] += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i, _unit = pending.pop(ref)
            load[i] -= 1
            done = done.add(ray.get(ref))
    return done


def bench_dispatch(n: int, n_actors: int, in_flight: list[int], wait_refs: list[int]) -> None:
    import ray

    @ray.remote
    class Noop:
        def process(self, unit: dict[str, Any], data: bytes | None = None) -> RunCounts:
            return RunCounts(1, 0, 0, 0, 0)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actors = [Noop.options(num_cpus=2 / n_actors).remote() for _ in range(n_actors)]
        ray.get([a.process.remote({}) for a in actors])  # started
        for k in in_flight:  # 0: the default, 2 per actor; more: a big cluster's queue depth
            m = n if k == 0 else max(n // 5, 3 * k)
            todo = [synthetic_unit(i) for i in range(m)]
            done = measure(
                f"dispatch loop, no-op actor ({n_actors} actors, {k or 2 * n_actors} in flight)",
                m,
                lambda todo=todo, k=k: dispatch_loop(ray, actors, todo, k),
            )
            assert done.units == m, done
        for k in wait_refs:
            refs = [ray.put(i) for i in range(k)]
            reps = max(3, min(200, 200_000 // k))
            measure(
                f"one ray.wait(num_returns=1) over {k:,} refs",
                reps,
                lambda refs=refs, reps=reps: [ray.wait(refs, num_returns=1) for _ in range(reps)],
                "µs/unit = µs per call",
            )
            del refs
    finally:
        ray.shutdown()


# -- main -----------------------------------------------------------------------------------------


def stop_server(server: Any) -> None:
    """moto holding 100k objects can take longer than S3Server.stop waits: then kill it."""
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)


def print_table() -> None:
    print("\n| step | units | seconds | µs/unit | driver RSS MB (growth) |")
    print("|---|---:|---:|---:|---:|")
    for r in ROWS:
        if "kept_mb" in r:
            print(
                f"| {r['step']} | {r['units']:,} | | | kept {r['kept_mb']} MB = {r['bytes_per_unit']} B/unit |"
            )
            continue
        print(
            f"| {r['step']} | {r['units']:,} | {r['seconds']:.2f} | {r['us_per_unit']:.1f} | "
            f"{r['rss_mb']:.0f} (+{r['rss_growth_mb']:.0f}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--units", type=int, default=100_000, help="local planning and ledger units"
    )
    parser.add_argument("--s3-units", type=int, default=20_000, help="ledger entries on local S3")
    parser.add_argument(
        "--s3-entries-max",
        type=int,
        default=5_000,
        help="committed_entries on S3 reads at most this many (one GET each)",
    )
    parser.add_argument("--dispatch-units", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument(
        "--in-flight",
        default="0,1024,4096",
        help="max_in_flight values (0: 2 per actor); others run max(N/5, 3k) units",
    )
    parser.add_argument("--wait-refs", default="1000,10000,100000")
    parser.add_argument(
        "--plan-s3-mib", type=int, default=180, help="2 x 64 MiB + 52: no read-ahead hits the end"
    )
    parser.add_argument("--stream-mib", type=int, default=512, help="zstd file (decompressed)")
    parser.add_argument("--threads", type=int, default=16, help="writer threads for the S3 ledger")
    parser.add_argument("--only", default=",".join(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument(
        "--workdir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="scratch for local files (default /dev/shm: no disk fsync cost)",
    )
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        raise SystemExit(f"unknown --only {sorted(only - set(SECTIONS))}; known: {SECTIONS}")
    work = Path(tempfile.mkdtemp(prefix="tokenmill-scale-", dir=args.workdir))
    print(f"driver RSS at start {rss_mb():.0f} MB; scratch {work}")
    server = None
    try:
        if "plan" in only:
            bench_plan(args.units, work)
        if "stream" in only:
            bench_stream(work, args.stream_mib)
        if "ledger-local" in only:
            bench_ledger(Output(str(work / "out")), args.units, "local", 1, args.units)
            shutil.rmtree(work / "out")
        if only & {"plan-s3", "ledger-s3", "requests-s3"}:
            from infra.s3_server import S3Server

            server = S3Server().start()
        if "plan-s3" in only:
            bench_plan_s3(server, args.plan_s3_mib)
        if "ledger-s3" in only:
            server.create_bucket("ledger")
            output = Output("s3://ledger/out", server.storage_options)
            bench_ledger(output, args.s3_units, "S3", args.threads, args.s3_entries_max)
        if "requests-s3" in only:
            bench_requests(server, work)
        if "dispatch" in only:
            waits = [int(k) for k in args.wait_refs.split(",") if k]
            flights = [int(k) for k in args.in_flight.split(",") if k]
            bench_dispatch(args.dispatch_units, args.actors, flights, waits)
    finally:
        try:
            if server:
                stop_server(server)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table()
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=1) + "\n")


if __name__ == "__main__":
    main()
