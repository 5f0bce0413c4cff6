"""Loader benchmark: tokens/s TokenDataset delivers into a training loop (0 and 2 DataLoader
workers) against the ceiling of reading the same shards straight into numpy arrays in one process.

    .venv/bin/python -m bench.loader --output /tmp/tokenmill-bench-loader/out \
        --input '/tmp/tokenmill-bench-corpus/corpus/*.jsonl' --tokenizer bpe:/path/bpe.json

The output is tokenized by the engine first when it holds no ledger yet (then reused). Prints
one JSON object. litdata is not a dependency and is not measured here (see docs/loader.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import torch

from pipeline.loader import TokenDataset
from pipeline.loader_shards import read_ledger


def ensure_output(output: str, inputs: str | None, tokenizer: str | None) -> None:
    if os.path.isdir(os.path.join(output, "ledger")) and os.listdir(os.path.join(output, "ledger")):
        return
    if not inputs or not tokenizer:
        raise SystemExit(f"{output} has no ledger: pass --input and --tokenizer to build it")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.config import load_config
    from pipeline.engine import run_job

    run_job(load_config(input=[inputs], output=output, tokenizer=tokenizer, progress=False))


def numpy_ceiling(output: str) -> dict:
    """Every committed shard's tokens into int64 numpy arrays, one process, no packing."""
    shards, _ = read_ledger(output)
    t0, tokens = time.perf_counter(), 0
    for shard in shards:
        with pa.memory_map(os.path.join(output, shard.rel), "r") as mapped:
            reader = pa.ipc.open_file(mapped)
            for i in range(reader.num_record_batches):
                values = reader.get_batch(i).column("tokens").values.to_numpy()
                tokens += len(values.astype(np.int64))
    seconds = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds}


def loader_rate(output: str, workers: int, seq_len: int, batch: int, **options) -> dict:
    """A whole epoch through a DataLoader, each batch touched as a training step would."""
    ds = TokenDataset(output, seq_len, seed=0, batch_size=batch, **options)
    t0, tokens, checksum = time.perf_counter(), 0, 0
    for item in ds.dataloader(num_workers=workers):
        tokens += item["input_ids"].numel()
        checksum ^= int(item["labels"][0, -1])
    seconds = time.perf_counter() - t0
    return {
        "workers": workers,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": tokens / seconds,
        "dropped_tokens": ds.plan().dropped_tokens,
    }


class EmptyBatches(torch.utils.data.IterableDataset):
    """Yields zero tensors shaped like the loader's batches: the DataLoader transport floor."""

    def __init__(self, batches: int, batch: int, seq_len: int):
        super().__init__()
        self.batches, self.shape = batches, (batch, seq_len)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        share = info.num_workers if info else 1
        for _ in range(self.batches // share):
            yield {
                "input_ids": torch.zeros(self.shape, dtype=torch.int64),
                "labels": torch.zeros(self.shape, dtype=torch.int64),
            }


def transport_floor(workers: int, seq_len: int, batch: int, batches: int = 1000) -> dict:
    """Tokens/s a DataLoader moves when the dataset does no work at all."""
    loader = torch.utils.data.DataLoader(
        EmptyBatches(batches, batch, seq_len),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    t0, tokens = time.perf_counter(), 0
    for item in loader:
        tokens += item["input_ids"].numel()
    seconds = time.perf_counter() - t0
    return {"workers": workers, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/tmp/tokenmill-bench-loader/out")
    parser.add_argument("--input", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs of each")
    args = parser.parse_args()
    ensure_output(args.output, args.input, args.tokenizer)
    numpy_ceiling(args.output)  # warm the page cache so every contender reads from memory
    ceiling = max(
        (numpy_ceiling(args.output) for _ in range(args.repeat)), key=lambda r: r["tokens_per_s"]
    )
    result = {
        "output": args.output,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "ceiling_numpy": ceiling,
        "loader": [],
    }
    for workers in args.workers:
        for extra in ({}, {"position_ids": True, "document_ids": True}):
            best = max(
                (
                    loader_rate(args.output, workers, args.seq_len, args.batch, **extra)
                    for _ in range(args.repeat)
                ),
                key=lambda r: r["tokens_per_s"],
            )
            best["options"] = sorted(extra)
            best["vs_ceiling"] = round(best["tokens_per_s"] / ceiling["tokens_per_s"], 3)
            floor = transport_floor(workers, args.seq_len, args.batch)["tokens_per_s"]
            best["dataloader_floor_tokens_per_s"] = floor
            best["vs_floor"] = round(best["tokens_per_s"] / floor, 3)
            result["loader"].append(best)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
