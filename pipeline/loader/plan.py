"""What an epoch delivers (`TokenDataset.plan()`): sample and token counts for the current world
size and batch, and per source the tokens available and used, repeats, tokens dropped, share,
padding and cut documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.loader.windows import Epoch


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch delivers, counted from its start, for the current world size and batch.

    `sources` has one dict per output (in order): url, weight, samples, tokens_available (stream
    tokens of one pass: document tokens plus their EOS and BOS), tokens_used (stream tokens the
    epoch delivers, repeats counted, padding not), repeats (tokens_used / tokens_available),
    tokens_dropped (tokens of one pass the epoch never delivers), share (of the epoch's weight
    units: tokens, bytes or documents; a document cut by the end counts by the fraction of its
    tokens delivered), token_share, padding (pad tokens in its windows), padding_fraction (of its
    window tokens), and with `detail` documents, split_documents (documents of one pass cut
    across windows: concat's truncations) and split_fraction."""

    epoch: int
    num_samples: int  # samples delivered (global, all ranks)
    samples_per_step: int  # batch_size * world_size
    steps: int  # global steps (batches per rank, the last one maybe partial unless drop_last)
    stream_tokens: int  # one pass over every source: documents' tokens plus separators
    dropped_samples: int  # full windows dropped to keep every step full (drop_last)
    dropped_tokens: int  # stream tokens of one pass that no sample covers (summed over sources)
    sources: list[dict[str, Any]] = field(default_factory=list)
    packing: str = "concat"
    stopping_strategy: str = "first_exhausted"  # or all_exhausted, or budget (budget_tokens)
    weight_unit: str = "token"
    padding_tokens: int = 0
    padding_fraction: float = 0.0  # pad tokens / window tokens of the epoch
    split_fraction: float | None = None  # cut documents / documents (with detail)


def plan_epoch(
    epoch: Epoch,
    end: int,
    per_step: int,
    *,
    urls: list[str],
    weights: list[float],
    packing: str,
    weight_unit: str,
    detail: bool,
) -> EpochPlan:
    """The plan of samples [0, end) of `epoch`."""
    counts = [end] if len(epoch.sources) == 1 else epoch.samples_of(end)
    sources = []
    for source, n, url, weight in zip(epoch.sources, counts, urls, weights, strict=True):
        used = source.tokens_used(n, epoch.limit)
        windows = n * source.window
        sources.append(
            {
                "url": url,
                "weight": weight,
                "samples": n,
                "tokens_available": source.total,
                "tokens_used": used,
                "repeats": used / source.total if source.total else 0.0,
                "tokens_dropped": max(source.total - used, 0),
                "padding": windows - used,
                "padding_fraction": (windows - used) / windows if windows else 0.0,
                "_units": source.units_used(n, weight_unit, epoch.limit),
            }
        )
        if detail:
            split = source.split_documents()
            sources[-1].update(
                documents=source.documents,
                split_documents=split,
                split_fraction=split / source.documents if source.documents else 0.0,
            )
    units = [s.pop("_units") for s in sources]
    used = sum(s["tokens_used"] for s in sources) or 1
    for s, u in zip(sources, units, strict=True):
        s["share"] = u / (sum(units) or 1)
        s["token_share"] = s["tokens_used"] / used
    padding = sum(s["padding"] for s in sources)
    window_tokens = end * epoch.sources[0].window
    documents = sum(s.get("documents", 0) for s in sources)
    return EpochPlan(
        epoch.epoch,
        end,
        per_step,
        -(-end // per_step),
        sum(source.total for source in epoch.sources),
        max(epoch.length - end, 0) if epoch.mode == "first_exhausted" else 0,
        sum(s["tokens_dropped"] for s in sources),
        sources,
        packing,
        epoch.mode,
        weight_unit,
        padding,
        padding / window_tokens if window_tokens else 0.0,
        sum(s["split_documents"] for s in sources) / documents if detail and documents else None,
    )
