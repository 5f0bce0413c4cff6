"""TokenDataset(labels="mask") (issue 15): batches carry `targets` (the window shifted by one, a
view of the chunk as `input_ids` is, never -100) and `target_mask` (bool, 1 byte a token) instead
of `labels`. The invariant, batch by batch against labels="ids" with the same options:
`where(target_mask, targets, -100) == labels` and every other key identical. Checked over whole
epochs of real shards (the sample corpus tokenized by the engine, and a copy given a chat
`loss_mask` column): concat and best_fit, BOS, skip_documents, cross-document masks, loss masks,
a mixture, a drop_last=False tail, single samples, int32, DataLoader workers (shared slots,
by-value bundles, per-tensor transport, persistent workers over epochs), pinned batches,
samples(a, b), a mid-epoch resume under another world size, the Ray Data rows and the training
example."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline.loader import IGNORE_INDEX, TokenDataset, labels_from

from .helpers import (
    LOADER_BATCH,
    LOADER_BOS,
    LOADER_SEQ,
    resume_at_a_new_world_size,
    small_dataset,
)

BATCH, BOS = LOADER_BATCH, LOADER_BOS
# the configurations of `configuration()`, each checked over whole epochs
CONFIGURATIONS = [
    "concat",
    "concat_tail",
    "concat_skip_cross",
    "best_fit_bos_skip_cross_ids",
    "chat_concat_tail",
    "chat_best_fit_bos_int32",
    "mixture_best_fit",
    "mixture_concat_int32",
    "single_samples_tail",
    "single_samples_best_fit",
]


@pytest.fixture(scope="module")
def skip(plain) -> list[str]:
    """The documents of two samples: skipped in the configurations that skip."""
    ds = small_dataset(plain, 3, packing="best_fit")
    return sorted({seg["doc_id"] for i in (2, 9) for seg in ds.provenance(i)})


def configuration(name: str, plain: str, masked: str, skip: list[str]) -> tuple:
    """(urls, options) of a named configuration."""
    mixture = {"weights": [0.6, 0.4], "stopping_strategy": "all_exhausted", "mix_block": 8}
    return {
        # concat without any label mask: "ids" has no labels block (labels = the shifted window)
        "concat": (plain, {}),
        "concat_tail": (plain, {"drop_last": False}),
        "concat_skip_cross": (
            plain,
            {"skip_documents": skip, "mask_cross_document": True, "drop_last": False},
        ),
        "best_fit_bos_skip_cross_ids": (
            plain,
            {
                "packing": "best_fit",
                "bos_id": BOS,
                "skip_documents": skip,
                "mask_cross_document": True,
                "position_ids": True,
                "document_ids": True,
                "seq_lens": True,
            },
        ),
        "chat_concat_tail": (masked, {"drop_last": False}),
        "chat_best_fit_bos_int32": (
            masked,
            {"packing": "best_fit", "bos_id": BOS, "dtype": torch.int32, "seq_lens": True},
        ),
        "mixture_best_fit": (
            [masked, plain],
            {**mixture, "packing": "best_fit", "seq_lens": True, "skip_documents": skip},
        ),
        "mixture_concat_int32": ([plain, masked], {**mixture, "dtype": torch.int32}),
        "single_samples_tail": (plain, {"batch_size": None, "drop_last": False}),
        "single_samples_best_fit": (
            masked,
            {"batch_size": None, "packing": "best_fit", "position_ids": True},
        ),
    }[name]


def pair(urls, **options) -> tuple[TokenDataset, TokenDataset]:
    """The same dataset with labels="ids" and labels="mask"."""
    return (
        small_dataset(urls, 3, labels="ids", **options),
        small_dataset(urls, 3, labels="mask", **options),
    )


def same(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def assert_equivalent(ids: dict, mask: dict) -> None:
    """One batch (or sample) of each format: the invariant."""
    assert "labels" not in mask and "targets" not in ids and "target_mask" not in ids
    assert set(ids) - {"labels"} == set(mask) - {"targets", "target_mask"}
    labels, targets, flags = ids["labels"], mask["targets"], mask["target_mask"]
    assert flags.dtype == torch.bool and targets.dtype == labels.dtype == mask["input_ids"].dtype
    assert flags.shape == targets.shape == labels.shape
    assert torch.equal(torch.where(flags, targets, IGNORE_INDEX), labels)
    assert torch.equal(labels_from(mask), labels) and labels_from(ids) is labels
    assert not bool((targets == IGNORE_INDEX).any())  # padding holds pad_id, never -100
    assert torch.equal(targets[..., :-1], mask["input_ids"][..., 1:])  # the shifted window
    for key, value in ids.items():
        if key != "labels":
            assert same(value, mask[key]), key


def check_epoch(ids_batches: list[dict], mask_batches: list[dict]) -> dict:
    """Every batch of an epoch pairwise; counts of the mask's True and False."""
    assert len(ids_batches) == len(mask_batches) > 0
    counts = {True: 0, False: 0}
    for ids, mask in zip(ids_batches, mask_batches, strict=True):
        assert_equivalent(ids, mask)
        trained = int(mask["target_mask"].sum())
        counts[True] += trained
        counts[False] += mask["target_mask"].numel() - trained
    return counts


def by_index(batches: list[dict]) -> dict[int, dict]:
    """Global sample index -> that sample's row of every per-row key, labels built."""
    found = {}
    for batch in batches:
        labels = labels_from(batch)
        for i, index in enumerate(batch["index"].tolist()):
            assert index not in found, f"sample {index} delivered twice"
            found[index] = {"input_ids": batch["input_ids"][i], "labels": labels[i]}
    return found


def assert_same_samples(found: dict[int, dict], reference: dict[int, dict]) -> None:
    assert sorted(found) == sorted(reference)
    for index, row in found.items():
        assert all(torch.equal(row[k], reference[index][k]) for k in row), index


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_mask_batches_equal_ids_batches_over_a_whole_epoch(name, plain, masked, skip):
    urls, options = configuration(name, plain, masked, skip)
    ids_ds, mask_ds = pair(urls, **options)
    assert mask_ds.rows.target_mask and not mask_ds.rows.label_block
    assert mask_ds.rows.labels == ids_ds.rows.labels  # (whether labels differ from the window)
    ids_batches, mask_batches = list(ids_ds), list(mask_ds)
    counts = check_epoch(ids_batches, mask_batches)
    rows = [b["input_ids"].reshape(-1, b["input_ids"].shape[-1]).shape[0] for b in ids_batches]
    assert sum(rows) == ids_ds.plan().num_samples
    if name == "concat":  # nothing masked at all
        assert counts[False] == 0
    else:  # a padded tail, skipped documents, loss masks or best_fit padding
        assert counts[True] > 0 and counts[False] > 0
    if name.endswith("tail"):  # the last window is padding after the stream's end
        last = mask_batches[-1]["target_mask"]
        assert not bool(last.reshape(-1, last.shape[-1])[-1, -1])


def test_targets_are_views_of_the_chunk_and_the_mask_is_its_own_bytes(plain):
    """targets and input_ids share one [samples, seq_len + 1] chunk array (no copy of the
    window), target_mask is a bool array of its own (1 byte a token), no int labels block
    exists; an ids trainer's batch["labels"] fails loudly; a bad option is refused."""
    ds = small_dataset(plain, 3, labels="mask", packing="best_fit")
    assert ds.rows.count == 1  # tokens only: the mask is beside the block, not a row of it
    batches = list(itertools.islice(ds, 2))  # (the first: not the last batch of its chunk)
    batch = batches[0]
    inputs, targets, flags = batch["input_ids"], batch["targets"], batch["target_mask"]
    assert targets.untyped_storage().data_ptr() == inputs.untyped_storage().data_ptr()
    assert targets.data_ptr() == inputs.data_ptr() + inputs.element_size()
    assert flags.element_size() == 1 and flags.is_contiguous()
    assert flags.untyped_storage().data_ptr() != inputs.untyped_storage().data_ptr()
    with pytest.raises(KeyError):
        _ = batch["labels"]
    with pytest.raises(ValueError, match="labels 'bool'"):
        small_dataset(plain, 3, labels="bool")


@pytest.mark.parametrize("name", ["mixture_best_fit", "chat_concat_tail"])
def test_workers_shared_slots_by_value_bundles_and_persistent_epochs(name, plain, masked, skip):
    """2 dataloader() workers (shared slots, persistent over two epochs) give the in-process
    "ids" batches in mask form; a consumer keeping every batch makes the workers send bundles
    by value (the mask with them) and still gets them right; per-tensor transport
    (shared_slots=False) too."""
    urls, options = configuration(name, plain, masked, skip)
    ids_ds, mask_ds = pair(urls, **options)
    loader = mask_ds.dataloader(num_workers=2)
    for epoch in (0, 1):
        ids_ds.set_epoch(epoch)
        mask_ds.set_epoch(epoch)
        reference = list(ids_ds)
        kept = []
        for batch in loader:  # compared when it arrives: its slot must not be refilled under it
            assert_equivalent(reference[len(kept)], batch)
            kept.append(batch)
        check_epoch(reference, kept)  # and again once the epoch has ended
    assert loader.bundles["by_value"] > 0 and loader.bundles["in_slots"] > 0
    per_tensor = small_dataset(urls, 3, labels="mask", **options)
    per_tensor.set_epoch(1)
    check_epoch(reference, list(per_tensor.dataloader(2, shared_slots=False)))


def test_single_samples_batched_by_two_torch_workers(plain, masked, skip):
    """batch_size=None with 2 workers: the DataLoader batches (collates) the samples; every
    sample's labels are the ids dataset's."""
    urls, options = configuration("single_samples_best_fit", plain, masked, skip)
    ids_ds, mask_ds = pair(urls, return_index=True, **options)
    reference = {}
    for sample in ids_ds:
        reference[int(sample["index"])] = {
            "input_ids": sample["input_ids"],
            "labels": sample["labels"],
        }
    batches = list(mask_ds.dataloader(num_workers=2, batch_size=3))
    assert all(b["target_mask"].dtype == torch.bool and b["targets"].dim() == 2 for b in batches)
    assert_same_samples(by_index(batches), reference)


def test_pinned_batches(plain, monkeypatch):
    """pin_memory: every key goes through the pinned copy (pin_memory faked as a contiguous
    copy here: no CUDA), values unchanged; also when dataloader(pin_memory=True) pins."""
    pinned = []

    def fake_pin(tensor, device=None):
        pinned.append(tensor.dtype)
        return tensor.clone(memory_format=torch.contiguous_format)

    ids_ds, mask_ds = pair(plain, packing="best_fit", drop_last=False)
    reference = list(ids_ds)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    mask_ds.pin_memory = True
    batches = list(mask_ds)
    check_epoch(reference, batches)
    assert torch.bool in pinned and all(b["targets"].is_contiguous() for b in batches)
    pinned.clear()
    mask_ds.pin_memory = False
    check_epoch(reference, list(mask_ds.dataloader(pin_memory=True)))  # the loader pins
    assert torch.bool in pinned


def test_samples_and_a_resume_under_another_world_size(plain, masked, skip):
    """samples(a, b) equals the ids dataset's; a best_fit mixture over 2 ranks x 2 workers,
    resumed after 3 steps under 3 ranks (loader states -> global_state), gives every sample
    once, each with the input_ids and labels of the uninterrupted ids sequence."""
    urls, options = configuration("mixture_best_fit", plain, masked, skip)
    ids_ds, mask_ds = pair(urls, **options)
    for a, b in ((0, 5), (7, 19), (30, 31)):
        assert_equivalent(ids_ds.samples(a, b), mask_ds.samples(a, b))
    first, rest, state = resume_at_a_new_world_size(
        lambda rank, world: small_dataset(
            urls, 3, labels="mask", rank=rank, world_size=world, **options
        ),
        take=3,
        workers_rank=1,
    )
    assert state["sample"] == 3 * 2 * BATCH
    found = by_index(first + rest)  # (all_exhausted: whole steps of 3 ranks, maybe a few more)
    assert len(found) >= ids_ds.plan().num_samples
    assert_same_samples(found, by_index([ids_ds.samples(0, len(found))]))


@pytest.mark.parametrize(("labels", "prefetch"), [("ids", 0), ("mask", 0), ("ids", 1), ("mask", 1)])
def test_a_loop_holding_its_batch_refills_one_chunk_array_and_kept_batches_keep_values(
    plain, labels, prefetch
):
    """With 20 batches a chunk the last batch of each chunk is a copy of its own rows, so a loop
    that holds only its current batch gets every chunk filled into the same arrays (no
    alternation between two; with a prefetch thread, at most 1 + prefetch: the chunk consumed
    and the one filled ahead); batches kept longer (every fourth) still hold their values,
    compared at the end with a fresh read."""
    options = {"labels": labels, "packing": "best_fit", "drop_last": False, "seq_lens": True}
    chunk = 20 * BATCH * (LOADER_SEQ + 1)
    ds = small_dataset(plain, 3, chunk_tokens=chunk, prefetch=prefetch, **options)
    starts = []
    for i, batch in enumerate(ds):  # (holds one batch while asking for the next)
        if i % 20 == 0:
            starts.append(batch["input_ids"].untyped_storage().data_ptr())
        elif i % 20 == 19:  # the last of a chunk: its own rows
            assert batch["input_ids"].untyped_storage().nbytes() < chunk
    assert len(starts) > 3  # (the epoch's last chunk is shorter: an array of its own)
    assert 1 <= len(set(starts[:-1])) <= 1 + prefetch
    reference = list(small_dataset(plain, 3, **options))
    ds = small_dataset(plain, 3, chunk_tokens=chunk, prefetch=prefetch, **options)
    kept = [(i, b) for i, b in enumerate(ds) if i % 4 == 0]
    for i, batch in kept:
        assert all(same(v, reference[i][k]) for k, v in batch.items()), i
    if labels == "mask":
        check_epoch(list(small_dataset(plain, 3, **{**options, "labels": "ids"})), reference)


def test_ray_data_rows_carry_targets_and_target_mask(plain, masked, skip):
    """The Ray Data read function (what each Ray task runs) gives the columns of the option:
    targets and a bool target_mask with labels="mask", equal to the ids rows."""
    from pipeline.loader.ray_data import read_windows

    urls, options = configuration("chat_concat_tail", plain, masked, skip)
    ids_ds, mask_ds = pair(urls, batch_size=64, **options)
    ranges = {"start": np.array([0, 10]), "stop": np.array([10, 25])}
    ids_rows, mask_rows = read_windows(ranges, ids_ds), read_windows(ranges, mask_ds)
    assert mask_rows["target_mask"].dtype == np.bool_ and "labels" not in mask_rows
    labels = np.where(mask_rows["target_mask"], mask_rows["targets"], IGNORE_INDEX)
    assert np.array_equal(labels, ids_rows["labels"])
    assert np.array_equal(mask_rows["input_ids"], ids_rows["input_ids"])


@pytest.mark.slow  # Ray Data's task start-up costs about a minute on the shared 2-core machine
def test_ray_dataset_with_labels_mask(plain, ray_session):
    from pipeline.loader.ray_data import ray_dataset

    ids_ds, _ = pair(plain, return_index=True, drop_last=False)
    reference = by_index(list(ids_ds))
    ds = ray_dataset(
        plain,
        512,
        seed=3,
        labels="mask",
        eos_id=ids_ds.eos_id,
        return_index=True,
        drop_last=False,
        samples_per_block=4096,
    )
    batches = list(ds.iter_torch_batches(batch_size=128))
    assert all(b["target_mask"].dtype == torch.bool for b in batches)
    assert_same_samples(by_index(batches), reference)


def test_training_example_gives_the_same_losses_with_either_format(plain):
    from jobs.train_example import train

    options = {"steps": 3, "seq_len": 32, "batch": 2, "device": "cpu", "dim": 16, "layers": 1}
    runs = {labels: train(plain, log=False, labels=labels, **options) for labels in ("mask", "ids")}
    assert runs["mask"]["labels"] == "mask"
    for key in ("first_loss", "last_loss", "tokens"):
        assert runs["mask"][key] == runs["ids"][key]
    # a window larger than the output: the loop asked for epoch after epoch of nothing, forever
    with (
        pytest.warns(UserWarning, match="holds no batch"),
        pytest.raises(SystemExit, match="an epoch holds no batch"),
    ):
        train(plain, log=False, **{**options, "seq_len": 1 << 24})
