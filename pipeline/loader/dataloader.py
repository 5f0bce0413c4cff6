"""TokenDataset's DataLoader integration: which DataLoader class `TokenDataset.dataloader()` builds
(shared batch slots with workers, the dataset's own iterator without), and its settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_convert

from pipeline.loader.slots import slot_loader


def build_dataloader(
    dataset: Any,
    num_workers: int = 0,
    *,
    stateful: bool = False,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    shared_slots: bool = True,
    **kwargs: Any,
) -> DataLoader:
    """TokenDataset.dataloader (documented there) for `dataset`, a TokenDataset."""
    if stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader as base
    else:
        base = DataLoader
    if pin_memory is None:
        pin_memory = dataset.pin_memory and torch.cuda.is_available()
    slots = (
        shared_slots
        and num_workers > 0
        and dataset.batch_size is not None
        and kwargs.get("collate_fn") in (None, default_convert)  # it would get descriptors
    )
    if num_workers and prefetch_factor is None:  # items: bundles of batches with slots
        prefetch_factor = 2 if slots else 4
    if slots:  # workers that follow set_epoch: no fork and join every epoch (~80 ms here)
        kwargs.setdefault("persistent_workers", True)
    if slots:
        loader_class = slot_loader(base)
    elif num_workers == 0 and not stateful and dataset.batch_size is not None:
        loader_class = DirectDataLoader
    else:
        loader_class = base
    return loader_class(
        dataset,
        batch_size=None if dataset.batch_size else kwargs.pop("batch_size", 1),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers else None,
        **kwargs,
    )


class DirectDataLoader(DataLoader):
    """DataLoader without workers whose iterator is the dataset's own (batches are built there)."""

    def __iter__(self):
        plain = self.batch_size is None and self.collate_fn is default_convert
        if self.num_workers or not plain:  # batching or a collate_fn: the DataLoader's job
            return super().__iter__()
        pin = self.pin_memory and torch.cuda.is_available()
        return pinned(iter(self.dataset)) if pin else iter(self.dataset)

    def state_dict(self) -> dict:
        """The resume state after the batches handed out so far: the dataset's own (its iterator
        runs in this process), as the loaders with workers give theirs."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()` of any of the dataset's loaders (or a StatefulDataLoader's)."""
        self.dataset.load_state_dict(type(self.dataset).global_state(state))


def pinned(items: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    for item in items:
        yield {k: v.pin_memory() if pinnable(v) else v for k, v in item.items()}


def pinnable(value: object) -> bool:
    return isinstance(value, torch.Tensor) and not value.is_pinned()
