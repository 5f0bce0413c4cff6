"""Helpers shared by the tests (fixtures live in conftest.py): the sample corpus, one job-config
factory, and readers of committed output."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"
LANGS = ("code", "de", "en", "ru", "zh")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def job_config(inputs: Any, output: Any, tokenizer: str, **fields: Any):
    """A validated JobConfig for tests: progress bar off unless asked; inputs may be one glob."""
    from pipeline.tokenize.config import load_config

    fields.setdefault("progress", False)
    inputs = [str(p) for p in inputs] if isinstance(inputs, (list, tuple)) else [str(inputs)]
    return load_config(input=inputs, output=str(output), tokenizer=tokenizer, **fields)


def shard_rows(output_url: str, storage_options: dict | None = None) -> list[dict]:
    """All committed shard rows of an output, in ledger order."""
    from pipeline.output import Output, iter_committed
    from pipeline.output.shards import read_ipc

    output = Output(str(output_url), storage_options)
    rows: list[dict] = []
    for entry in iter_committed(output):
        rows.extend(read_ipc(output, entry.shard).to_pylist())
    return rows


def shard_files(output_dir: str | Path) -> dict[str, bytes]:
    """name -> bytes of every committed shard of a local output."""
    out = Path(output_dir)
    names = [json.loads(p.read_text())["shard"] for p in sorted((out / "ledger").glob("*.json"))]
    return {name: (out / name).read_bytes() for name in names}


def start_run(inputs: Any, output: Any, tokenizer: str, *flags: str, **popen: Any):
    """`tokenmill run` in a subprocess with its own local Ray cluster (not the tests' one);
    stdout is discarded, stderr piped as text."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        "--input",
        str(inputs),
        "--output",
        str(output),
        "--tokenizer",
        tokenizer,
        "--no-progress",
        *flags,
    ]
    return subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "RAY_AUTH_MODE": "disabled"},
        **popen,
    )


def wait_for_commits(output: Any, proc, count: int = 1, timeout: float = 180) -> None:
    """Wait until `count` units of a subprocess run are committed (fails if the run ends first)."""
    import time

    deadline = time.time() + timeout
    while len(list((Path(output) / "ledger").glob("*.json"))) < count:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"no {count} commits within {timeout} s"
        time.sleep(0.05)


# The loader provenance tests' small windows: EOS and BOS outside the 8k test vocabulary, so they
# never occur inside a document.
LOADER_SEQ, LOADER_BATCH, LOADER_EOS, LOADER_BOS = 512, 4, 8000, 8001


def small_dataset(urls: Any, seed: int, **options: Any):
    """A TokenDataset of the loader provenance tests: LOADER_SEQ windows, LOADER_BATCH samples a
    batch, sample indices returned, chunks and bundles of three batches (several per epoch)."""
    from pipeline.loader import TokenDataset

    per = 3 * LOADER_BATCH * (LOADER_SEQ + 1)
    options = {
        "batch_size": LOADER_BATCH,
        "eos_id": LOADER_EOS,
        "return_index": True,
        "seed": seed,
        "chunk_tokens": per,
        "bundle_tokens": per,
        **options,
    }
    return TokenDataset(urls, LOADER_SEQ, **options)


def resume_at_a_new_world_size(make: Any, take: int, workers_rank: int) -> tuple:
    """An epoch read at world size 2 (`take` batches a rank, each through a DataLoader with 2
    workers), its global state, then the rest of it read at world size 3 from that state (rank
    `workers_rank` with 2 workers, the others without). `make(rank, world_size)` builds a rank's
    TokenDataset. Returns (first batches, the rest, the state)."""
    from pipeline.loader import TokenDataset

    first, states = [], []
    for rank in range(2):
        loader = make(rank, 2).dataloader(num_workers=2)
        first += list(itertools.islice(loader, take))
        states.append(loader.state_dict())
    state = TokenDataset.global_state(states)
    rest = []
    for rank in range(3):
        ds = make(rank, 3)
        ds.load_state_dict(state)
        rest += list(ds.dataloader(num_workers=2 if rank == workers_rank else 0))
    return first, rest, state


def mask_rule(row: int, length: int) -> list[int] | None:
    """Every fifth document is all prompt (0), every seventh a plain document of a chat job
    (a null mask: every token trained); the others train on their second half except every
    fourth token, so the last token, and with it the EOS, is trained on or not."""
    if row % 5 == 0:
        return [0] * length
    if row % 7 == 3:
        return None
    return [int(i >= length // 2 and (i + row) % 4 != 0) for i in range(length)]


def add_loss_mask(src: str | Path, dst: Path, rule=mask_rule) -> None:
    """A copy of output `src` whose committed shards have a loss_mask column (`rule(row,
    tokens)` for each document, record batches kept as written), their ledger checksums fixed."""
    import os
    import shutil

    import pyarrow as pa

    from pipeline.output.shards import file_checksum
    from schemas.shards import shard_schema

    shutil.copytree(src, dst)
    field = shard_schema(8000, with_loss_mask=True).field("loss_mask")  # the engine's column
    for path in sorted((dst / "ledger").glob("*.json")):
        entry = json.loads(path.read_text())
        shard = dst / entry["shard"]
        reader = pa.ipc.open_file(pa.OSFile(str(shard)))
        schema = reader.schema.append(field)
        batches, row = [], 0
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            tokens = batch.column("tokens").to_pylist()
            masks = [rule(row + k, len(t)) for k, t in enumerate(tokens)]
            row += batch.num_rows
            columns = [*batch.columns, pa.array(masks, field.type)]
            batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        new = dst / f"{entry['shard']}.new"
        with pa.OSFile(str(new), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        os.replace(new, shard)
        entry["shard_checksum"] = file_checksum(str(shard))
        path.write_text(json.dumps(entry))
