"""TokenDataset: coverage, determinism, exact resume across world sizes, StatefulDataLoader,
s3:// with workers, mixing, and the Ray Data path, on shards the engine wrote from the sample."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import numpy as np
import pytest
import torch

from pipeline.loader import IGNORE_INDEX, LoaderError, TokenDataset

from .helpers import job_config, shard_rows

SEQ = 64
BATCH = 16
EOS = 8000  # one past the 8k vocabulary: never inside a document, so the stream splits exactly


@pytest.fixture(scope="module")
def shards_url(tmp_path_factory, ray_session, sample_dir, bpe_path) -> str:
    """The sample corpus tokenized once by the engine into ~12 small committed shards."""
    from pipeline.tokenize import run_job

    out = tmp_path_factory.mktemp("loader") / "out"
    run_job(job_config(sample_dir / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=200_000))
    return str(out)


@pytest.fixture(scope="module")
def documents(shards_url) -> Counter:
    return Counter(tuple(r["tokens"]) for r in shard_rows(shards_url))


CHUNK = 3 * BATCH * (SEQ + 1)  # 3 batches per fill and per worker bundle: many of each here


def dataset(url: str, **options) -> TokenDataset:
    options = {
        "batch_size": BATCH,
        "eos_id": EOS,
        "return_index": True,
        "seed": 7,
        "chunk_tokens": CHUNK,
        "bundle_tokens": CHUNK,
        **options,
    }
    return TokenDataset(url, SEQ, **options)


def mixture(url: str, seed: int, weights: list[float], **options) -> TokenDataset:
    """The output mixed with itself (two sources), blocks of 8 samples, batches of 8."""
    options = {"mix_block": 8, "batch_size": 8, "eos_id": EOS, "return_index": True, **options}
    return TokenDataset([url, url], SEQ, seed=seed, weights=weights, **options)


def windows(batches) -> dict[int, tuple[int, ...]]:
    """Global sample index -> the whole seq_len + 1 window of every sample in the batches."""
    found: dict[int, tuple[int, ...]] = {}
    for batch in batches:
        full = torch.cat([batch["input_ids"][:, :1], batch["labels"]], dim=1)
        for index, row in zip(batch["index"].tolist(), full.tolist(), strict=True):
            assert index not in found, f"sample {index} delivered twice"
            found[index] = tuple(row)
    return found


def take(loader, n: int | None = None) -> list[dict]:
    """The first n batches (all if None), pulling no batch beyond them."""
    return list(itertools.islice(loader, n))


def run_ranks(
    url: str,
    world: int,
    workers: int,
    state: dict | None = None,
    steps: int | None = None,
    **options,
) -> tuple[list[dict], list[TokenDataset]]:
    batches, datasets = [], []
    for rank in range(world):
        ds = dataset(url, rank=rank, world_size=world, **options)
        if state is not None:
            ds.load_state_dict(state)
        batches += take(ds.dataloader(num_workers=workers), steps)
        datasets.append(ds)
    return batches, datasets


@pytest.fixture(scope="module")
def reference(shards_url) -> dict[int, tuple[int, ...]]:
    """The uninterrupted epoch 0 (drop_last=False), read in one process."""
    return windows(dataset(shards_url, drop_last=False))


def test_one_epoch_over_2_ranks_x_2_workers_yields_every_document_token_once(
    shards_url, documents, reference
):
    batches, datasets = run_ranks(shards_url, world=2, workers=2)
    found = windows(batches)
    plan = datasets[0].plan()
    assert sorted(found) == list(range(plan.num_samples))
    assert found == {i: reference[i] for i in found}  # the same global sequence, cut earlier
    assert plan.num_samples % (2 * BATCH) == 0
    stream = np.array([t for i in sorted(found) for t in found[i]])
    assert (
        len(stream) + plan.dropped_tokens
        == plan.stream_tokens
        == sum((len(d) + 1) * n for d, n in documents.items())
    )
    parts = np.split(stream, np.flatnonzero(stream == EOS) + 1)
    seen = Counter(tuple(p[:-1].tolist()) for p in parts[:-1])
    assert seen + Counter() == seen and not seen - documents  # whole documents, none twice
    unseen = documents - seen
    # what was not delivered is exactly the reported tail: the cut document plus those after it
    assert sum((len(d) + 1) * n for d, n in unseen.items()) == plan.dropped_tokens + len(parts[-1])
    assert any(d[: len(parts[-1])] == tuple(parts[-1].tolist()) for d in unseen)


def test_global_sample_sequence_does_not_depend_on_world_size_or_workers(shards_url, reference):
    batches, _ = run_ranks(shards_url, world=3, workers=0, drop_last=False)
    assert windows(batches) == reference


def test_same_seed_and_epoch_give_the_same_batches_another_epoch_another_order(shards_url):
    first, again, other = (dataset(shards_url) for _ in range(3))
    other.set_epoch(1)
    a, b, c = take(first, 20), take(again, 20), take(other, 20)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c, strict=True))
    assert dataset(shards_url).plan().stream_tokens == other.plan(1).stream_tokens


def test_resume_with_same_then_other_world_sizes_twice_sees_each_sample_once(shards_url, reference):
    first, ds = run_ranks(shards_url, world=2, workers=2, steps=5, drop_last=False)
    state = ds[0].state_dict(steps=5)
    assert state["sample"] == 5 * 2 * BATCH
    second, ds = run_ranks(shards_url, world=2, workers=0, state=state, steps=3, drop_last=False)
    state = ds[0].state_dict(steps=3)
    third, ds = run_ranks(shards_url, world=3, workers=1, state=state, steps=4, drop_last=False)
    state = ds[0].state_dict(steps=4)
    rest, _ = run_ranks(shards_url, world=1, workers=2, state=state, drop_last=False)
    assert windows(first + second + third + rest) == reference  # windows() rejects repeats


def test_stateful_dataloader_state_round_trip_same_and_other_layout(shards_url, reference):
    loaders = [
        dataset(shards_url, rank=r, world_size=2, drop_last=False).dataloader(
            num_workers=2, stateful=True
        )
        for r in range(2)
    ]
    first = [b for loader in loaders for b in take(iter(loader), 3)]
    states = [loader.state_dict() for loader in loaders]
    assert TokenDataset.global_state(states)["sample"] == 3 * 2 * BATCH

    resumed = []
    for rank, state in enumerate(states):  # same layout: each worker resumes its own position
        loader = dataset(shards_url, rank=rank, world_size=2, drop_last=False).dataloader(
            num_workers=2, stateful=True
        )
        loader.load_state_dict(state)
        resumed += take(loader)
    assert windows(first + resumed) == reference

    other = dataset(shards_url, drop_last=False)  # 1 rank, 1 worker, from the global index
    other.load_state_dict(TokenDataset.global_state(states))
    assert windows(first + take(other.dataloader(num_workers=1, stateful=True))) == reference


def test_the_loader_without_workers_checkpoints_like_the_others(shards_url, reference):
    """`dataloader(num_workers=0)` (jobs/train_example.py's default) had no state_dict: the
    README's `loader.state_dict()` raised AttributeError there. It gives the dataset's state;
    a loader with workers resumes from it, and it resumes from theirs."""
    loader = dataset(shards_url, drop_last=False).dataloader(num_workers=0)
    first = take(loader, 4)
    state = loader.state_dict()
    assert state["sample"] == 4 * BATCH
    workers = dataset(shards_url, drop_last=False).dataloader(num_workers=2)
    workers.load_state_dict(state)
    second = take(workers, 3)
    direct = dataset(shards_url, drop_last=False).dataloader(num_workers=0)
    direct.load_state_dict(workers.state_dict())
    assert windows(first + second + take(direct)) == reference


def test_bundled_workers_resume_mid_bundle_under_other_layouts(shards_url, reference):
    """Workers send bundles of 3 batches: a state taken 5 batches in (inside a bundle) counts
    batches handed out, not bundles received, so resuming under other layouts, twice, repeats
    and skips nothing."""
    loader = dataset(shards_url, drop_last=False).dataloader(num_workers=2, stateful=True)
    first = take(loader, 5)
    state = loader.state_dict()
    assert state["sample"] == 5 * BATCH and TokenDataset.global_state(state) == state
    ranks = [dataset(shards_url, rank=r, world_size=2, drop_last=False) for r in range(2)]
    loaders = [ds.dataloader(num_workers=3, stateful=True) for ds in ranks]
    second = []
    for loader in loaders:
        loader.load_state_dict(state)
        second += take(loader, 4)
    states = [loader.state_dict() for loader in loaders]
    assert TokenDataset.global_state(states)["sample"] == 5 * BATCH + 4 * 2 * BATCH
    last = dataset(shards_url, drop_last=False).dataloader(num_workers=2)
    last.load_state_dict(TokenDataset.global_state(states))
    assert windows(first + second + take(last)) == reference


def test_chunk_size_changes_no_batch_and_held_batches_keep_their_values(shards_url):
    """Batches are views of chunk arrays that are refilled once nothing references them: the
    same batches come out for any chunk size (also per sample), and batches kept while the
    iteration goes on keep their values."""
    default = list(dataset(shards_url, chunk_tokens=1 << 20, drop_last=False))
    for chunk in (1, CHUNK, 5 * (SEQ + 1)):
        same_batches(list(dataset(shards_url, chunk_tokens=chunk, drop_last=False)), default)
    singles = list(dataset(shards_url, batch_size=None, chunk_tokens=CHUNK, drop_last=False))
    same_batches(
        [
            {k: torch.stack([s[k] for s in singles[i : i + BATCH]]) for k in singles[0]}
            for i in range(0, len(singles), BATCH)
        ],
        default,
    )
    kept = [batch for i, batch in enumerate(dataset(shards_url, drop_last=False)) if i % 4 == 0]
    same_batches(kept, default[::4])


def test_worker_state_refuses_another_layout_without_global_state(shards_url):
    from torchdata.stateful_dataloader import StatefulDataLoader

    # a StatefulDataLoader of one's own (one batch per item): its state holds worker states
    loader = StatefulDataLoader(dataset(shards_url), batch_size=None, num_workers=2)
    take(iter(loader), 3)
    worker_state = loader.state_dict()["_snapshot"]["_worker_snapshots"]["worker_0"]
    other = dataset(shards_url, rank=0, world_size=2)
    other.load_state_dict(worker_state["dataset_state"])
    with pytest.raises(LoaderError, match="global_state"):
        next(iter(other))


def same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for key in e:
            assert g[key].dtype == e[key].dtype and torch.equal(g[key], e[key]), key


def slowly(loader):
    """A slow consumer: a pause every 7 batches lets the workers fill every slot they may."""
    for i, batch in enumerate(loader):
        if i % 7 == 0:
            time.sleep(0.01)
        yield batch


def consume_checking(loader, expected: list[dict], keep_every: int) -> list[tuple[int, dict]]:
    """Iterate, checking each batch against `expected` as it arrives and keeping every
    keep_every-th one (the others are dropped, so their slots can be reused)."""
    kept, n = [], 0
    for i, batch in enumerate(loader):
        same_batches([batch], [expected[i]])
        if i % keep_every == 0:
            kept.append((i, batch))
        n += 1
    assert n == len(expected)
    return kept


@pytest.mark.parametrize(("stateful", "persistent"), [(False, False), (True, True)])
@pytest.mark.parametrize("prefetch", [1, 4])
def test_shared_slot_workers_deliver_the_in_process_batches_every_epoch(
    shards_url, stateful, persistent, prefetch
):
    """Workers fill bundles into shared slots that are reused once nothing references them:
    every batch must equal the batch read in one process when it arrives, and the batches kept
    (their slots stay held) still at the end of the epoch, also with a slow consumer that lets
    the workers run ahead. A consumer that drops its batches never makes a worker fall back to
    sending by value; one that keeps many does, and still gets the right batches."""
    options = {"position_ids": True, "document_ids": True, "drop_last": False, "seed": 11}
    ds = dataset(shards_url, **options)
    loader = ds.dataloader(
        num_workers=2, prefetch_factor=prefetch, stateful=stateful, persistent_workers=persistent
    )
    assert type(loader).__name__.startswith("Slot")
    for epoch, keep_every in ((0, 10**9), (1, 10**9), (2, 4)):
        ds.set_epoch(epoch)
        expected = dataset(shards_url, **options)
        expected.set_epoch(epoch)
        expected = list(expected)
        kept = consume_checking(slowly(loader) if epoch == 1 else loader, expected, keep_every)
        same_batches([b for _, b in kept], [expected[i] for i, _ in kept])
        assert kept[-1][1]["labels"][-1, -1] == IGNORE_INDEX or keep_every > 1
        bundles = loader.bundles
        assert bundles["in_slots"] > 0
        assert (bundles["by_value"] > 0) == (keep_every == 4), bundles
    assert expected[-1]["labels"][-1, -1] == IGNORE_INDEX  # the padded tail came through too


def test_persistent_slot_workers_follow_set_epoch_resume_and_abandoned_iterations(shards_url):
    options = {"drop_last": False, "seed": 5}
    ds = dataset(shards_url, **options)
    loader = ds.dataloader(num_workers=2, persistent_workers=True)

    def expected(epoch: int, start: int = 0) -> list[dict]:
        reference = dataset(shards_url, **options)
        reference.set_epoch(epoch)
        return list(reference)[start // BATCH :]

    consume_checking(loader, expected(0), 10**9)
    ds.set_epoch(1)
    # a checkpoint at the epoch boundary: it said epoch 1 was over (epoch 0's batch count added
    # to epoch 1's start), so a resume from it yielded nothing
    assert (loader.state_dict()["epoch"], loader.state_dict()["sample"]) == (1, 0)
    assert len(take(loader, 5)) == 5  # abandoned: its unread bundles' slots come back
    ds.set_epoch(2)
    consume_checking(loader, expected(2), 3)
    ds.set_epoch(3)
    ds.load_state_dict({**loader.state_dict(), "epoch": 3, "sample": 5 * BATCH})
    assert loader.state_dict()["sample"] == 5 * BATCH  # (not 5 batches + the ones taken before)
    loader.load_state_dict({**loader.state_dict(), "epoch": 3, "sample": 7 * BATCH})
    consume_checking(loader, expected(3, 7 * BATCH), 10**9)
    assert loader.state_dict()["sample"] == ds.plan(3).num_samples
    assert loader.bundles["in_slots"] > 0 and loader.bundles["by_value"] > 0


def test_shared_slot_workers_started_by_spawn(shards_url):
    """Spawned workers get the ring, control block and pipes by pickling (not by fork)."""
    ds = dataset(shards_url, drop_last=False)
    loader = ds.dataloader(num_workers=2, multiprocessing_context="spawn", persistent_workers=True)
    for epoch in range(2):
        ds.set_epoch(epoch)
        expected = dataset(shards_url, drop_last=False)
        expected.set_epoch(epoch)
        consume_checking(loader, list(expected), 10**9)
    assert loader.bundles["in_slots"] > 0


def test_shared_slot_workers_with_a_mixture_and_int32(shards_url):
    got = list(
        mixture(shards_url, 2, [1, 2], dtype=torch.int32).dataloader(
            num_workers=2, prefetch_factor=2
        )
    )
    expected = list(mixture(shards_url, 2, [1, 2], dtype=torch.int32))
    same_batches(got, expected)
    assert got[0]["input_ids"].dtype == torch.int32 and got[0]["index"].dtype == torch.int64


def test_dataloader_leaves_batching_and_collate_fn_to_torch(shards_url, reference):
    single = dataset(shards_url, batch_size=None, drop_last=False)  # DataLoader batches
    for workers in (0, 2):
        batch = next(iter(single.dataloader(num_workers=workers, batch_size=4)))
        assert batch["input_ids"].shape == (4, SEQ)
    assert windows([batch]) == {i: reference[i] for i in batch["index"].tolist()}
    ds = dataset(shards_url)  # a collate_fn sees real batches, never slot descriptors
    for workers in (0, 2):
        seen, item = next(iter(ds.dataloader(num_workers=workers, collate_fn=lambda b: ("c", b))))
        assert seen == "c" and item["input_ids"].shape == (BATCH, SEQ)


def test_drop_last_false_pads_the_tail_window_and_masks_its_labels(shards_url, reference):
    ds = dataset(shards_url, drop_last=False)
    plan = ds.plan()
    assert plan.dropped_tokens == 0 and plan.num_samples == len(reference)
    last = ds.samples(plan.num_samples - 1, plan.num_samples)
    tail = plan.stream_tokens - (plan.num_samples - 1) * (SEQ + 1)
    assert (last["labels"][0, tail - 1 :] == IGNORE_INDEX).all()
    assert (last["labels"][0, : tail - 1] != IGNORE_INDEX).all()


def test_position_ids_restart_after_each_eos_and_document_ids_count_segments(shards_url):
    ds = dataset(shards_url, position_ids=True, document_ids=True, seed=3)
    for batch in take(ds, 30):
        ids, pos, doc = batch["input_ids"], batch["position_ids"], batch["document_ids"]
        new_doc = torch.zeros_like(ids, dtype=torch.bool)
        new_doc[:, 0] = True
        new_doc[:, 1:] = ids[:, :-1] == EOS
        assert torch.equal(pos[new_doc], torch.zeros_like(pos[new_doc]))
        assert torch.equal(pos[:, 1:][~new_doc[:, 1:]], pos[:, :-1][~new_doc[:, 1:]] + 1)
        assert torch.equal(doc, torch.cumsum(new_doc.long(), dim=1) - 1)


def test_mixture_follows_weights_per_block_and_never_repeats_a_document(shards_url, documents):
    batches = list(mixture(shards_url, 1, [3, 1]))
    assert batches and all(
        torch.equal(b["source"].sort().values, torch.tensor([0] * 6 + [1] * 2)) for b in batches
    )
    again = list(mixture(shards_url, 1, [3, 1]))
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again, strict=True)
    )
    for source in (0, 1):
        rows = [
            torch.cat([b["input_ids"][:, :1], b["labels"]], 1)[b["source"] == source]
            for b in batches
        ]
        stream = torch.cat(rows).reshape(-1).numpy()
        parts = np.split(stream, np.flatnonzero(stream == EOS) + 1)[1:-1]  # whole ones only
        seen = Counter(tuple(p[:-1].tolist()) for p in parts)
        assert not seen - documents


def test_reads_s3_output_with_two_dataloader_workers(shards_url, s3, tmp_path, reference):
    s3.create_bucket("loader")
    s3.filesystem().put(shards_url, "loader/out", recursive=True)
    ds = dataset(
        "s3://loader/out",
        storage_options=s3.storage_options,
        drop_last=False,
        cache_dir=str(tmp_path / "cache"),
    )
    assert windows(take(ds.dataloader(num_workers=2))) == reference
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == len(ds.shards[0])


@pytest.mark.slow  # Ray Data's task start-up costs about a minute on the shared 2-core machine
def test_ray_dataset_holds_the_same_windows_as_the_loader(shards_url, ray_session, reference):
    from pipeline.loader.ray_data import ray_dataset

    ds = ray_dataset(
        shards_url,
        SEQ,
        seed=7,
        eos_id=EOS,
        return_index=True,
        drop_last=False,
        samples_per_block=4096,
    )
    found = windows(ds.iter_torch_batches(batch_size=128))
    assert found == reference


def test_ray_dataset_read_blocks_do_not_change_the_epoch(shards_url, ray_session):
    """The epoch was cut to whole read blocks (a block was the TokenDataset's batch): up to
    samples_per_block - 1 windows never delivered, none at all for an output smaller than one
    block. Every block size now gives the windows of TokenDataset's epoch."""
    from pipeline.loader.ray_data import ray_dataset

    whole = TokenDataset(shards_url, SEQ, 7, eos_id=EOS, return_index=True)
    whole.set_epoch(0)
    n = whole.plan(detail=False).num_samples
    expected = windows([whole.samples(0, n)])
    for block in (7, n + 1):
        assert n % 7 and len(expected) == n
        ds = ray_dataset(
            shards_url, SEQ, seed=7, eos_id=EOS, return_index=True, samples_per_block=block
        )
        assert windows(ds.iter_torch_batches(batch_size=64)) == expected
