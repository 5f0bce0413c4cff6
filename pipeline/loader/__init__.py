"""Trainer data loader: committed shards of one output (or a weighted mixture of several) as packed,
shuffled, resumable token windows for torch (`TokenDataset`, `TokenDataset.dataloader`) and, via
`pipeline.loader.ray_data.ray_dataset`, for Ray Train (imported on its own: it needs Ray).

Modules: dataset (TokenDataset), stream (the packed stream of an epoch, mixing), shards (the
ledger's shards, memory-mapped), batches (batch assembly), slots (DataLoader workers' shared batch
slots), dataloader (which DataLoader `dataloader()` builds), state (resume state), ray_data."""

from pipeline.errors import LoaderError
from pipeline.loader.batches import IGNORE_INDEX
from pipeline.loader.dataset import EpochPlan, TokenDataset
from pipeline.loader.shards import ShardInfo, ShardStore, committed_shards
from pipeline.loader.state import STATE_VERSION
from pipeline.loader.stream import Mixture, PackedStream

__all__ = [
    "IGNORE_INDEX",
    "STATE_VERSION",
    "EpochPlan",
    "LoaderError",
    "Mixture",
    "PackedStream",
    "ShardInfo",
    "ShardStore",
    "TokenDataset",
    "committed_shards",
]
