"""Ray Train path of the loader: an epoch's packed windows as a Ray Dataset, for
`ray.train.get_dataset_shard(...).iter_torch_batches(...)` on Ray Train workers.

The windows are the same global sample sequence TokenDataset yields (same seed, epoch, seq_len);
Ray Data splits them among the Train workers. Exact mid-epoch resume is TokenDataset's job:
Ray Data's split is not a function of the sample index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.loader import TokenDataset


class WindowReader:
    """Ray Data map_batches callable: turns [start, stop) sample ranges into packed windows."""

    def __init__(self, dataset: TokenDataset):
        self.dataset = dataset  # its shard store reopens the output in this process

    def __call__(self, ranges: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [self.dataset.samples(int(a), int(b))
                 for a, b in zip(ranges["start"], ranges["stop"], strict=True)]
        return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def ray_dataset(url: str | list[str], seq_len: int, *, seed: int = 0, epoch: int = 0,
                samples_per_block: int = 64, concurrency: int = 1, num_cpus: float = 0.5,
                **options: Any):
    """A ray.data.Dataset of one epoch's windows (columns input_ids, labels, and the optional
    ones TokenDataset takes as options), in blocks of `samples_per_block` windows."""
    import ray.data

    dataset = TokenDataset(url, seq_len, seed, batch_size=samples_per_block, **options)
    dataset.set_epoch(epoch)
    n = dataset.plan().num_samples
    starts = np.arange(0, n, samples_per_block)
    ranges = ray.data.from_items([{"start": int(a), "stop": int(min(a + samples_per_block, n))}
                                  for a in starts])
    return ranges.map_batches(WindowReader, fn_constructor_kwargs={"dataset": dataset},
                              batch_size=1, concurrency=concurrency, num_cpus=num_cpus)
