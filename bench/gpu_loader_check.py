"""GPU loader check (< 3 minutes): tokens/s TokenDataset delivers to a CUDA device, alone and
while a small transformer LM trains, with 0 and 2 DataLoader workers. Falls back to CPU.

    .venv/bin/python bench/gpu_loader_check.py                  # tokenizes data/sample itself
    .venv/bin/python bench/gpu_loader_check.py --shards OUT_DIR # an existing engine output

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.train_example import pick_device, train  # noqa: E402
from pipeline.loader import TokenDataset  # noqa: E402


def build_shards(workdir: str) -> str:
    """Tokenize data/sample with a BPE trained on it (Ray engine, local)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    from pipeline.tokenize import load_config, run_job
    from tests.helpers import read_jsonl
    from tokenizers_impl.bpe import BPETokenizer

    texts = [
        r["text"] for p in sorted((REPO / "data" / "sample").glob("*.jsonl")) for r in read_jsonl(p)
    ]
    tok = os.path.join(workdir, "bpe-8k.json")
    BPETokenizer.train(texts, vocab_size=8000).save(tok)
    out = os.path.join(workdir, "out")
    ray.init(  # (a local Ray: never a cluster an earlier session left in /tmp/ray)
        address="local",
        num_cpus=min(os.cpu_count() or 2, 8),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        run_job(
            load_config(
                input=[str(REPO / "data" / "sample" / "*.jsonl")],
                output=out,
                tokenizer=f"bpe:{tok}",
                progress=False,
                unit_bytes=200_000,
            )
        )
    finally:
        ray.shutdown()
    return out


def delivery_rate(
    shards: str, device: torch.device, workers: int, seq_len: int, batch: int, seconds: float
) -> dict:
    """Batches copied to the device as fast as the loader gives them (no model)."""
    ds = TokenDataset(
        shards, seq_len, batch_size=batch, position_ids=True, pin_memory=device.type == "cuda"
    )
    loader = ds.dataloader(num_workers=workers)  # persistent workers follow set_epoch
    tokens, epoch, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds.set_epoch(epoch)
        for item in loader:
            for value in item.values():
                value.to(device, non_blocking=True)
            tokens += item["input_ids"].numel()
            if time.perf_counter() - t0 >= seconds:
                break
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "workers": workers,
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default=None, help="engine output; default: build one")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=8.0, help="per delivery measurement")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch has no CUDA device (give auto)")
    if device.type == "cpu":  # fallback: keep the run short, the figures are for plumbing only
        print("no CUDA device: the CPU fallback checks the plumbing, its figures are not H2D")
        args.steps, args.seq_len = min(args.steps, 3), min(args.seq_len, 256)
        args.batch, args.seconds = min(args.batch, 4), min(args.seconds, 3.0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tokenmill-gpu-check-") as workdir:
        shards = args.shards or build_shards(workdir)
        built_s = time.perf_counter() - t0
        result = {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "shards": args.shards,
            "build_s": round(built_s, 1),
            "delivery": [],
            "training": [],
        }
        for workers in (0, 2):
            result["delivery"].append(
                delivery_rate(shards, device, workers, args.seq_len, args.batch, args.seconds)
            )
        for workers in (0, 2):
            result["training"].append(
                train(
                    shards,
                    steps=args.steps,
                    seq_len=args.seq_len,
                    batch=args.batch,
                    workers=workers,
                    device=str(device),
                    dim=256,
                    layers=4,
                    log=False,
                )
            )
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
