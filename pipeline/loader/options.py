"""TokenDataset's option checks (a bad option is a ValueError naming it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.errors import LoaderError
from pipeline.loader.mixing import STRATEGIES, UNITS
from pipeline.loader.source import PACKINGS


def check_options(
    urls: list[str],
    seq_len: int,
    batch_size: int | None,
    rank: int | None,
    world_size: int | None,
    weights: Sequence[float] | None,
    weight_unit: str,
    stopping_strategy: str | None,
) -> None:
    if not urls:
        raise ValueError("no outputs given: url is an output URL or a list of them")
    if seq_len < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
    if (rank is None) != (world_size is None) or (rank is not None and not 0 <= rank < world_size):
        raise ValueError(f"rank={rank}, world_size={world_size}: give both, 0 <= rank < world_size")
    if weights is not None and len(weights) != len(urls):
        raise ValueError(f"{len(weights)} weights for {len(urls)} outputs")
    if weights is not None and (
        not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0
    ):
        raise ValueError(f"weights {list(weights)} must be finite, non-negative, not all 0")
    if weight_unit not in UNITS:
        raise ValueError(f"weight_unit {weight_unit!r}: one of {', '.join(UNITS)}")
    if stopping_strategy is not None and stopping_strategy not in STRATEGIES:
        raise ValueError(f"stopping_strategy {stopping_strategy!r}: one of {', '.join(STRATEGIES)}")


def check_packing(
    packing: str,
    pack_buffer: int,
    budget_tokens: int | None,
    seq_len: int,
    stopping_strategy: str | None,
) -> None:
    if packing not in PACKINGS:
        raise ValueError(f"packing {packing!r}: one of {', '.join(PACKINGS)}")
    if pack_buffer < 1:
        raise ValueError(f"pack_buffer ({pack_buffer}) must be >= 1")
    if budget_tokens is not None:
        if stopping_strategy is not None:
            raise ValueError("give budget_tokens or stopping_strategy, not both")
        if budget_tokens < 1 or budget_tokens % seq_len:
            raise ValueError(
                f"budget_tokens ({budget_tokens}) must be a positive multiple of seq_len "
                f"({seq_len}): an epoch is budget_tokens / seq_len samples of seq_len tokens"
            )


def check_counts(group_shards: int, mix_block: int, chunk_tokens: int, bundle_tokens: int) -> None:
    """Options that must be ints >= 1 (the kernels repeat or divide by them)."""
    given = {"group_shards": group_shards, "mix_block": mix_block}
    given.update(chunk_tokens=chunk_tokens, bundle_tokens=bundle_tokens)
    for name, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} ({value!r}) must be an int >= 1")


LABELS = ("ids", "mask")


def check_labels(labels: str, prefetch: int = 0) -> None:
    if labels not in LABELS:
        raise ValueError(
            f"labels {labels!r}: 'ids' (a labels tensor, -100 where masked) or 'mask' "
            "(targets + a bool target_mask)"
        )
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ValueError(f"prefetch {prefetch!r}: chunks filled ahead, an int >= 0")


def check_special_ids(urls: list[str], tokenizers: Sequence[dict], **given: int | None) -> None:
    """The outputs of a mixture agree on each special id not `given` (one EOS / BOS for every
    document), else LoaderError naming each output's id."""
    for key, value in given.items():
        for url, tokenizer in zip(urls, tokenizers, strict=True):
            mixed = tokenizer.get("mixed", {}).get(key)  # (committed_shards)
            if mixed and value is None:
                raise LoaderError(
                    f"output {url} mixes {key}s {mixed} across its units: pass {key}="
                )
        found = {u: t.get(key) for u, t in zip(urls, tokenizers, strict=True)}
        if value is None and len(set(found.values())) > 1:
            raise LoaderError(
                f"outputs disagree on {key} ({', '.join(f'{u}: {v}' for u, v in found.items())}): "
                f"the same tokenizer run with other special tokens; pass {key}= (it applies to "
                f"every output{', -1 for none' if key == 'bos_id' else ''})"
            )


def check_id_range(**ids: int | None) -> None:
    """The special ids the loader writes into windows are token ids (ints >= 0; one past the
    vocabulary is allowed: a model may give EOS or padding an embedding row of its own), else
    LoaderError naming the id."""
    for key, value in ids.items():
        if value is None:
            continue
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise LoaderError(f"{key}={value!r} must be a token id (an int >= 0)")
