"""Ray Train path of the loader: an epoch's packed windows as a Ray Dataset, for
`ray.train.get_dataset_shard(...).iter_torch_batches(...)` on Ray Train workers.

The windows are the same global sample sequence TokenDataset yields (same seed, epoch, seq_len);
Ray Data splits them among the Train workers. Exact mid-epoch resume is TokenDataset's job:
Ray Data's split is not a function of the sample index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.dataset import TokenDataset


def read_windows(ranges: dict[str, np.ndarray], dataset: TokenDataset) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: [start, stop) sample ranges -> packed windows."""
    parts = [
        dataset.samples(int(a), int(b))
        for a, b in zip(ranges["start"], ranges["stop"], strict=True)
    ]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def ray_dataset(
    url: str | list[str],
    seq_len: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    samples_per_block: int = 256,
    num_cpus: float = 0.5,
    **options: Any,
):
    """A ray.data.Dataset of one epoch's windows (columns input_ids, labels, and the optional
    ones TokenDataset takes as options; with labels="mask", targets and target_mask (bool)
    instead of labels: `pipeline.loader.labels_from(batch)` builds labels from either), read by
    Ray tasks in blocks of `samples_per_block`.
    Rows are single samples, so `seq_lens` (per batch) is not offered: cu_seqlens of a batch
    follow from its position_ids (0 at every segment start)."""
    import ray.data

    if options.get("seq_lens"):
        raise LoaderError("ray_dataset rows are samples: ask position_ids, not seq_lens")
    # (no batch_size: a read block is not a batch, and its size must not change the epoch: with
    # batch_size=samples_per_block the epoch was cut to whole blocks, up to samples_per_block - 1
    # windows dropped, and an output of fewer windows than a block gave none)
    dataset = TokenDataset(url, seq_len, seed, **options)
    dataset.set_epoch(epoch)
    n = dataset.plan(detail=False).num_samples
    ranges = ray.data.from_items(
        [
            {"start": int(a), "stop": int(min(a + samples_per_block, n))}
            for a in np.arange(0, n, samples_per_block)
        ]
    )
    return ranges.map_batches(
        read_windows, fn_kwargs={"dataset": dataset}, batch_size=1, num_cpus=num_cpus
    )
