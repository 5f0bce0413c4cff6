"""Resume state of TokenDataset: the plain dicts `state_dict` returns and `load_state_dict` takes.

A global state is one number, the global sample index of an epoch (every sample before it was
delivered): it resumes under any world size or worker count. A consumer state (one DataLoader
worker's, or a process that iterated the dataset itself) also records that consumer's layout
[world, rank, workers, worker, batch(, bundle)] and next step: exact for that layout only, so the
states of several workers are first combined with `global_state`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from fractions import Fraction
from typing import Any

from pipeline.errors import LoaderError
from pipeline.loader.mixing import STRATEGIES, integer_rates

STATE_VERSION = 1


def epoch_state(
    epoch: int, sample: int, seed: int, seq_len: int, exact: bool, order: str | None = None
) -> dict[str, Any]:
    """A resume point: global sample `sample` of `epoch` for a dataset of (seed, seq_len) whose
    other settings of the sample order have the digest `order` (order_key)."""
    state = {
        "version": STATE_VERSION,
        "epoch": epoch,
        "sample": sample,
        "seed": seed,
        "seq_len": seq_len,
        "exact": exact,
    }
    if order is not None:
        state["order"] = order
    return state


def order_key(ds: Any) -> str:
    """A digest of what fixes a dataset's sample order besides seed and seq_len: each output's
    committed shards (names and tokens), the weights and their unit, the stopping strategy or
    budget, the packing and its buffer, the mixture block, shuffling, shuffle groups and BOS
    insertion. Batch size, world size, workers, dtype and labels do not enter it."""
    key = ds.__dict__.get("_order_key")
    if key is None:
        # what the order depends on, not how it was spelled: the weights' exact proportions
        # (the mixture's integer rates follow them: [7, 3] and [14, 6] give one order; floats
        # such as [0.7, 0.3] are other fractions), the default strategy named or not
        rates = integer_rates([Fraction(w) for w in ds.weights])
        strategy = ds.stopping_strategy
        if strategy is None and ds.budget_tokens is None:
            strategy = STRATEGIES[0]  # (first_exhausted)
        key = ds.__dict__["_order_key"] = _digest(ds, rates, strategy)
    return key


def order_keys(ds: Any) -> tuple[str, str]:
    """The digests a state of this dataset's order may hold: order_key, and the one versions
    before 2026-12-07 13:49 UTC wrote (the weights and the strategy as they were spelled; the
    sample order itself is the same)."""
    return order_key(ds), _digest(ds, ds.weights, ds.stopping_strategy)


def _digest(ds: Any, weights: list, strategy: str | None) -> str:
    opts = ds.options
    parts = [
        [[(s.rel, s.tokens) for s in shards] for shards in ds.shards],
        [weights, ds.weight_unit, strategy, ds.budget_tokens, ds.mix_block],
        [ds.packing, opts.buffer, opts.shuffle, opts.group_shards, opts.lead],
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def warn_other_order(state: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Warn when a state was saved under another sample order (states saved before the order
    was recorded are taken as they are; `keys`: the digests of this order)."""
    if state.get("order", keys[0]) not in keys:
        warnings.warn(
            f"resume state of epoch {state.get('epoch')} at sample {state.get('sample')} was "
            "saved for another sample order (the outputs' shards, weights, stopping strategy or "
            "budget, packing or shuffling changed): resuming at that sample of this order, so "
            "samples of this epoch may repeat or be missed; resume at an epoch boundary "
            "(set_epoch) for none of that",
            stacklevel=4,
        )


def consumer_state(
    state: dict[str, Any], layout: list[int], start: int, next_step: int
) -> dict[str, Any]:
    """`state` (an epoch_state) with the position of the consumer of `layout` added."""
    state["consumer"] = {"layout": layout, "start": start, "next_step": next_step}
    return state


def check_state(
    state: dict[str, Any], order: tuple[str, ...] | None = None, **expected: Any
) -> None:
    """Refuse a state made for a dataset with other values of `expected` (seed, seq_len); warn
    when it was saved for another sample order than `order`'s digests (warn_other_order)."""
    for key, value in expected.items():
        if state.get(key) != value:
            raise LoaderError(f"resume state has {key}={state.get(key)}, dataset has {value}")
    if order is not None:
        warn_other_order(state, order)


def start_point(resume: dict[str, Any] | None, layout: list[int]) -> tuple[int, int, int]:
    """(global start sample, the consumer's first step, sample reported before any yield) of the
    consumer of `layout` from a loaded state of the current epoch (None: the epoch's start)."""
    worker = layout[3] * (layout[5] if len(layout) > 5 else 1)  # steps before its first
    if resume is None:
        return 0, worker, 0
    consumer = resume.get("consumer")
    if consumer is not None and consumer["layout"] == layout:
        return consumer["start"], consumer["next_step"], resume["sample"]
    if consumer is not None and not resume.get("exact", False):
        raise LoaderError(
            f"state of consumer {consumer['layout']} (world, rank, workers, worker, batch) "
            f"cannot resume consumer {layout}: combine the workers' states first with "
            "TokenDataset.global_state(loader.state_dict())"
        )
    return resume["sample"], worker, resume["sample"]


def resume_sample(resume: dict[str, Any] | None, layout: list[int]) -> int:
    """The global sample an iteration in the main process (`layout`) starts at: a loaded global
    state of the current epoch, else 0."""
    if resume is None:
        return 0
    if resume.get("consumer") is not None and not resume.get("exact", False):
        start_point(resume, layout)  # raises: a worker's state needs global_state first
    return resume["sample"]


def global_state(loader_states: Any) -> dict[str, Any]:
    """One global resume point from StatefulDataLoader state(s) (one per rank, or one) or
    from consumer states: the furthest worker of a rank marks the rank's prefix; across ranks
    the smallest prefix is taken (ranks move in lockstep, so they agree)."""
    if isinstance(loader_states, dict):
        loader_states = [loader_states]
    per_rank = [max(consumer_states(s), key=lambda c: c["sample"]) for s in loader_states]
    first = min(per_rank, key=lambda c: c["sample"])
    if len({(c["epoch"], c["seed"], c["seq_len"], c.get("order")) for c in per_rank}) > 1:
        raise LoaderError("ranks' states disagree on epoch, seed, seq_len or sample order")
    return epoch_state(
        first["epoch"], first["sample"], first["seed"], first["seq_len"], True, first.get("order")
    )


def consumer_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The TokenDataset states inside one StatefulDataLoader state (or the state itself)."""
    if "sample" in state:
        return [state]
    if "_snapshot" in state:
        workers = state["_snapshot"]["_worker_snapshots"].values()
        return [w["dataset_state"] for w in workers if w.get("dataset_state")]
    if state.get("dataset_state"):
        return [state["dataset_state"]]
    raise LoaderError(f"no TokenDataset state in {sorted(state)}")
