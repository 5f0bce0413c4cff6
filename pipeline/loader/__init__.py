"""Trainer data loader: committed shards of one output (or a weighted mixture of several) as packed,
shuffled, resumable token windows for torch (`TokenDataset`, `TokenDataset.dataloader`) and, via
`pipeline.loader.ray_data.ray_dataset`, for Ray Train (imported on its own: it needs Ray).

Modules: dataset (TokenDataset), options (its checks), windows (an epoch and how a block of its
windows is filled), mixing (source shares, order and epoch length), source (one output's windows in
an epoch, its passes one after another), stream (one pass: shuffle, concat and best_fit reading),
kernels (the compiled copy and label kernels), plankernels (packing, mixture order, ids, cu_seqlens
kernels), plan (EpochPlan), provenance (a sample's documents, skipped documents, `find_documents` by
id), shards (the
ledger's shards, memory-mapped), cache (the shared remote shard cache), batches (batch assembly),
arrays (recycled chunk arrays), prefetch (a process's own chunk-by-chunk iteration and its prefetch
thread), slots (DataLoader workers' shared batch slots), dataloader (which DataLoader `dataloader()`
builds), state (resume state), ray_data. `labels_from(batch)`: a batch's labels from either label
format (labels="ids" or "mask")."""

from pipeline.errors import LoaderError
from pipeline.loader.batches import IGNORE_INDEX, labels_from
from pipeline.loader.cache import ShardCache
from pipeline.loader.dataset import TokenDataset
from pipeline.loader.mixing import STRATEGIES, UNITS, Schedule
from pipeline.loader.plan import EpochPlan
from pipeline.loader.provenance import find_documents
from pipeline.loader.shards import ShardInfo, ShardStore, committed_shards
from pipeline.loader.source import PACKINGS, SourceEpoch
from pipeline.loader.state import STATE_VERSION
from pipeline.loader.stream import BestFitPass, PackedStream

__all__ = [
    "IGNORE_INDEX",
    "PACKINGS",
    "STATE_VERSION",
    "STRATEGIES",
    "UNITS",
    "BestFitPass",
    "EpochPlan",
    "LoaderError",
    "PackedStream",
    "Schedule",
    "ShardCache",
    "ShardInfo",
    "ShardStore",
    "SourceEpoch",
    "TokenDataset",
    "committed_shards",
    "find_documents",
    "labels_from",
]
