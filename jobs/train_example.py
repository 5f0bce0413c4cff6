"""A tiny causal transformer LM trained for a few steps on committed shards through TokenDataset:
the loader's end-to-end example (CPU here, CUDA where one exists).

    .venv/bin/python -m jobs.train_example --shards out/demo/tokens --steps 20 --device auto \
        [--labels mask|ids]

`--labels mask` (the default): batches carry `targets` and a bool `target_mask` (1 byte a token)
instead of an int `labels` block; the labels are built on the device after the copy
(`pipeline.loader.labels_from`). `--labels ids`: the loader's `labels` tensor, copied as is.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from torch import nn

from pipeline.loader import IGNORE_INDEX, TokenDataset, labels_from

LABELS = ("labels", "targets", "target_mask")  # the label keys of either format


class TinyLM(nn.Module):
    """Token + position embeddings, a few pre-norm causal transformer layers, a tied head."""

    def __init__(
        self, vocab_size: int, seq_len: int, dim: int = 128, layers: int = 2, heads: int = 4
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(seq_len, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.position(position_ids)
        mask = nn.Transformer.generate_square_subsequent_mask(input_ids.shape[1], device=x.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.norm(x) @ self.embed.weight.T


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    shards: str,
    *,
    steps: int = 20,
    seq_len: int = 256,
    batch: int = 8,
    workers: int = 0,
    device: str = "auto",
    dim: int = 128,
    layers: int = 2,
    lr: float = 3e-3,
    storage_options: dict | None = None,
    log: bool = True,
    labels: str = "mask",
) -> dict[str, Any]:
    """Train `steps` steps; returns loss and the tokens/s the loader delivered to the model.
    `labels`: the loader's label format ("mask": labels built on the device; "ids")."""
    dev = pick_device(device)
    torch.manual_seed(0)
    ds = TokenDataset(
        shards,
        seq_len,
        seed=0,
        batch_size=batch,
        position_ids=True,
        pin_memory=dev.type == "cuda",
        storage_options=storage_options,
        labels=labels,
    )
    model = TinyLM(int(ds.tokenizer["vocab_size"]), seq_len, dim, layers).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses, tokens, epoch, waited = [], 0, 0, 0.0  # (losses: one float a step)
    loader = ds.dataloader(num_workers=workers)  # one for the run: workers follow set_epoch
    t0 = time.perf_counter()
    while len(losses) < steps:
        ds.set_epoch(epoch)
        if epoch and not losses:  # (the loader warned: an epoch holds no batch)
            raise SystemExit(f"{shards}: an epoch holds no batch of {batch} x {seq_len} tokens")
        fetched = time.perf_counter()
        for item in loader:
            waited += time.perf_counter() - fetched
            ids = item["input_ids"].to(dev, non_blocking=True)
            positions = item["position_ids"].to(dev, non_blocking=True)
            # either label format as it comes (target_mask: 1 byte a token), labels made here
            moved = {k: v.to(dev, non_blocking=True) for k, v in item.items() if k in LABELS}
            logits = model(ids, positions)
            wanted = labels_from(moved).flatten().long()
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), wanted, ignore_index=IGNORE_INDEX
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            tokens += ids.numel()
            if log and (len(losses) % max(steps // 10, 1) == 0 or len(losses) == 1):
                rate = tokens / (time.perf_counter() - t0)
                print(
                    f"step {len(losses):4d}  loss {losses[-1]:.3f}  {rate:,.0f} tokens/s",
                    flush=True,
                )
            if len(losses) == steps:
                break
            fetched = time.perf_counter()
        epoch += 1
    seconds = time.perf_counter() - t0
    return {
        "device": str(dev),
        "steps": steps,
        "seq_len": seq_len,
        "batch": batch,
        "workers": workers,
        "labels": labels,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds),
        "loader_wait_s": round(waited, 3),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="out/demo/tokens", help="an engine output URL")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--labels",
        choices=["mask", "ids"],
        default="mask",
        help="loader label format: targets + target_mask (labels built on the device) or labels",
    )
    args = parser.parse_args()
    stats = train(
        args.shards,
        steps=args.steps,
        seq_len=args.seq_len,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        labels=args.labels,
    )
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
