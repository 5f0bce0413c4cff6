"""Ray Train path of the loader: committed shards as a Ray Dataset of packed windows
(pipeline/loader/ray_data.py), fed to a tiny LM on Ray Train workers through `iter_torch_batches`.

    RAY_AUTH_MODE=disabled .venv/bin/python -m jobs.train_ray_example --shards out/demo/tokens \
        [--labels mask|ids]

`--labels mask` (the default): the rows carry `targets` and a bool `target_mask` instead of
`labels`; the labels are built on the device (`pipeline.loader.labels_from`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn

from jobs.train_example import TinyLM
from pipeline.loader import IGNORE_INDEX, committed_shards, labels_from
from pipeline.loader.ray_data import ray_dataset


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker: its split of the windows, a few steps, one report."""
    import ray.train
    import ray.train.torch

    model = ray.train.torch.prepare_model(TinyLM(config["vocab_size"], config["seq_len"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    device = ray.train.torch.get_device()
    columns = ["input_ids", "position_ids"]
    columns += ["targets", "target_mask"] if config.get("labels") == "mask" else ["labels"]
    dtypes = {c: torch.bool if c == "target_mask" else torch.int64 for c in columns}
    batches = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=config["batch"], dtypes=dtypes, device=device
    )
    t0, tokens, loss, steps = time.perf_counter(), 0, torch.tensor(0.0), 0
    for batch in batches:
        if steps == config["steps"]:
            break
        steps += 1
        logits = model(batch["input_ids"], batch["position_ids"])
        loss = nn.functional.cross_entropy(
            logits.flatten(0, 1), labels_from(batch).flatten(), ignore_index=IGNORE_INDEX
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += batch["input_ids"].numel()
    metrics = {
        "rank": ray.train.get_context().get_world_rank(),
        "steps": steps,  # (done: fewer than asked when the shard ran out; 0 on an empty one)
        "loss": round(float(loss), 4),
        "tokens": tokens,
        "tokens_per_s": round(tokens / (time.perf_counter() - t0)),
    }
    print(json.dumps(metrics), flush=True)  # Train V2 keeps metrics only with checkpoints
    ray.train.report(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="out/demo/tokens")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--labels", choices=["mask", "ids"], default="mask")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        # logical CPUs >= 4: Train workers, the controller and Ray Data's read tasks must all fit
        # (on 2 cores, whole-CPU requests leave the read tasks waiting forever)
        ray.init(
            num_cpus=max(os.cpu_count() or 1, 4),
            include_dashboard=False,
            runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
    windows = ray_dataset(
        args.shards, args.seq_len, position_ids=True, samples_per_block=256, labels=args.labels
    )
    vocab = int(committed_shards(args.shards)[1]["vocab_size"])
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "vocab_size": vocab,
            "seq_len": args.seq_len,
            "batch": args.batch,
            "steps": args.steps,
            "labels": args.labels,
        },
        scaling_config=ScalingConfig(
            num_workers=args.workers, use_gpu=args.use_gpu, resources_per_worker={"CPU": 0.5}
        ),
        run_config=RunConfig(storage_path="/tmp/tokenmill-ray-train", name="train_ray_example"),
        datasets={"train": windows},
    )
    result = trainer.fit()
    print(json.dumps({"error": str(result.error) if result.error else None}))


if __name__ == "__main__":
    main()
