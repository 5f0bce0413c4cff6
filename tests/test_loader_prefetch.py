"""TokenDataset(prefetch=N) (issue 15): without DataLoader workers a thread fills the next chunks
while the consumer works through the current one. Checked on real shards (the sample corpus
tokenized by the engine, and a copy with a chat loss_mask column): every batch equals the
prefetch=0 batch, compared on arrival and again at the end for the batches kept (so a chunk
refilled under a held batch would show), in every configuration of the label-format tests with
both label formats, other depths and chunk sizes, `ds.dataloader(num_workers=0)` and a
StatefulDataLoader without workers; samples / plan / provenance during an iteration; resume
states count consumed batches, never prefetched ones (same and other world size); abandoned
iterations (break, del, a reference cycle, set_epoch, load_state_dict, a close while the
consumer holds the dataset's lock) leave no live thread; a fill error re-raises in the consumer
at its chunk, after every batch before it."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import threading
import time

import pytest
import torch

from pipeline.errors import LoaderError
from pipeline.loader import TokenDataset

from .helpers import LOADER_BATCH, LOADER_SEQ, small_dataset
from .test_loader_target_mask import CONFIGURATIONS, configuration

BATCH = LOADER_BATCH
NAMES = CONFIGURATIONS
THREAD = "tokenmill-prefetch"


@pytest.fixture(scope="module")
def skip(plain) -> list[str]:
    ds = small_dataset(plain, 3, packing="best_fit", prefetch=0)
    return sorted({seg["doc_id"] for i in (2, 9) for seg in ds.provenance(i)})


def threads() -> list[threading.Thread]:
    """Live prefetch threads of this process."""
    return [t for t in threading.enumerate() if t.name == THREAD and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left():
    """Every test starts and ends without a live prefetch thread."""
    assert threads() == []
    yield
    gc.collect()
    assert threads() == []


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def assert_same(batch: dict, expected: dict, where: object = None) -> None:
    assert batch.keys() == expected.keys(), where
    for key, value in expected.items():
        assert same(batch[key], value), (where, key)


def check_on_arrival(batches, reference: list[dict], keep_every: int = 3) -> int:
    """Each batch equal to the reference when it arrives (the loop holds only it and every
    `keep_every`-th; 0: none), the kept ones again at the end: a chunk refilled under a held
    batch would show. Returns the batches seen."""
    kept, n = [], 0
    for i, batch in enumerate(batches):
        assert i < len(reference), "more batches than without prefetch"
        assert_same(batch, reference[i], i)
        if keep_every and i % keep_every == 0:
            kept.append((i, batch))
        n += 1
    for i, batch in kept:
        assert_same(batch, reference[i], ("kept", i))
    return n


@pytest.mark.parametrize("labels", ["ids", "mask"])
@pytest.mark.parametrize("name", NAMES)
def test_prefetch_gives_the_batches_of_prefetch_0(name, labels, plain, masked, skip):
    urls, options = configuration(name, plain, masked, skip)
    options = {**options, "labels": labels}
    reference = list(small_dataset(urls, 3, prefetch=0, **options))
    ds = small_dataset(urls, 3, prefetch=1, **options)
    assert check_on_arrival(ds, reference) == len(reference) > 6  # (several chunks)
    ds.set_epoch(1)  # a second epoch of the same dataset: another order, still the same
    other = small_dataset(urls, 3, prefetch=0, **options)
    other.set_epoch(1)
    expected = list(other)  # (best_fit: another packing, maybe another length)
    assert check_on_arrival(ds, expected) == len(expected)


@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_depths_chunk_sizes_and_chunk_arrays_in_use(plain, prefetch):
    """Other depths, chunks of one batch and of 20. A loop holding only its current batch
    uses at most 1 + prefetch chunk arrays (the one consumed and those filled ahead): also with
    one batch a chunk, whose batch is a view of its chunk, not a copy (the next fill starts once
    the loop asks for the batch after a chunk's first, having let go of the previous one)."""
    options = {"packing": "best_fit", "drop_last": False, "seq_lens": True}
    reference = list(small_dataset(plain, 5, prefetch=0, **options))
    for batches in (20, 1):
        chunk = batches * BATCH * (LOADER_SEQ + 1)
        ds = small_dataset(plain, 5, prefetch=prefetch, chunk_tokens=chunk, **options)
        arrays = set()
        for i, batch in enumerate(ds):
            assert_same(batch, reference[i], i)
            if i % batches == 0:
                arrays.add(batch["input_ids"].untyped_storage().data_ptr())
        arrays.discard(batch["input_ids"].untyped_storage().data_ptr())  # (shorter: its own)
        assert i + 1 == len(reference) and 1 <= len(arrays) <= 1 + prefetch
        del batch
        # batches kept (every third) hold their arrays: fresh ones are made, values stay
        assert check_on_arrival(ds, reference) == len(reference)


def test_prefetch_0_starts_no_thread_and_bad_values_are_refused(plain):
    ds = small_dataset(plain, 3, prefetch=0)
    it = iter(ds)
    next(it)
    assert threads() == []
    del it
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="prefetch"):
            small_dataset(plain, 3, prefetch=bad)


def test_dataloader_without_workers_and_stateful_dataloader(plain, masked, skip):
    """ds.dataloader(num_workers=0) (the dataset's own iterator), a torch DataLoader of single
    samples and a StatefulDataLoader without workers: the same batches; the stateful one's
    state after 5 batches resumes the rest exactly."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    urls, options = configuration("mixture_best_fit", plain, masked, skip)
    reference = list(small_dataset(urls, 3, prefetch=0, **options))
    ds = small_dataset(urls, 3, prefetch=1, **options)
    assert check_on_arrival(ds.dataloader(num_workers=0), reference) == len(reference)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=0)
    first = list(itertools.islice(loader, 5))
    state = loader.state_dict()
    del first
    resumed = small_dataset(urls, 3, prefetch=1, **options)
    again = StatefulDataLoader(resumed, batch_size=None, num_workers=0)
    again.load_state_dict(state)
    assert check_on_arrival(again, reference[5:]) == len(reference) - 5
    single = small_dataset(plain, 3, prefetch=1, batch_size=None, drop_last=False)
    samples = list(small_dataset(plain, 3, prefetch=0, batch_size=None, drop_last=False))
    loader = torch.utils.data.DataLoader(single, batch_size=None, num_workers=0)
    assert check_on_arrival(loader, samples) == len(samples)


def test_samples_plan_and_provenance_during_an_iteration(plain, masked, skip):
    """The consumer's own reads while the thread fills (they share the dataset's caches and
    stores under its lock): the same results as a fresh dataset's, and the iteration goes on
    right."""
    urls, options = configuration("mixture_best_fit", plain, masked, skip)
    fresh = small_dataset(urls, 3, prefetch=0, **options)
    reference = list(small_dataset(urls, 3, prefetch=0, **options))
    ds = small_dataset(urls, 3, prefetch=2, **options)
    for i, batch in enumerate(ds):
        assert_same(batch, reference[i], i)
        if i % 5 == 2:
            assert_same(ds.samples(3 * i, 3 * i + 7), fresh.samples(3 * i, 3 * i + 7))
            assert ds.provenance(2 * i) == fresh.provenance(2 * i)
            assert ds.plan() == fresh.plan()
        if i == 7:  # another epoch's plan rebuilds the cached epoch under the thread
            assert ds.plan(epoch=4) == fresh.plan(epoch=4)


@pytest.mark.parametrize("name", ["concat_tail", "mixture_best_fit"])
def test_resume_counts_consumed_batches_not_prefetched_ones(name, plain, masked, skip):
    """After 5 batches (the thread has filled further) the state is sample 5 * BATCH; resumed
    with prefetch it gives exactly the rest, also as a global state split over 2 ranks (the
    same batches as those ranks read without prefetch)."""
    urls, options = configuration(name, plain, masked, skip)
    reference = list(small_dataset(urls, 3, prefetch=0, **options))
    ds = small_dataset(urls, 3, prefetch=1, **options)
    it = iter(ds)
    first = [next(it) for _ in range(5)]
    time.sleep(0.05)  # (let the thread run ahead)
    state = ds.state_dict()
    assert state["sample"] == 5 * BATCH and state["consumer"]["next_step"] == 5
    del it, first
    resumed = small_dataset(urls, 3, prefetch=1, **options)
    resumed.load_state_dict(state)
    assert check_on_arrival(resumed, reference[5:]) == len(reference) - 5
    state = TokenDataset.global_state(state)
    for rank in range(2):
        ranks = [
            small_dataset(urls, 3, prefetch=p, rank=rank, world_size=2, **options) for p in (0, 1)
        ]
        for r in ranks:
            r.load_state_dict(state)
        expected = list(ranks[0])
        assert expected and expected[0]["index"][0] == 5 * BATCH + rank * BATCH
        assert check_on_arrival(ranks[1], expected) == len(expected)


def test_abandoned_iterations_leave_no_thread(plain):
    """break, del, a reference cycle (collected by the cycle collector), set_epoch and
    load_state_dict during an iteration: the thread is gone once the iteration is; a second
    iteration of the same dataset runs beside an abandoned one and each gives its own rest."""
    reference = list(small_dataset(plain, 3, prefetch=0))
    ds = small_dataset(plain, 3, prefetch=1)
    for i, _ in enumerate(ds):
        if i == 4:
            break
    assert threads() == []
    it = iter(ds)
    next(it)
    assert len(threads()) == 1
    del it
    assert threads() == []
    holder: dict = {}
    holder["self"], holder["it"] = holder, iter(ds)
    next(holder["it"])
    del holder
    gc.collect()
    assert threads() == []
    old = iter(ds)
    taken = [next(old) for _ in range(4)]
    ds.set_epoch(1)  # a new epoch while the old iteration is alive: it goes on with its own
    other = small_dataset(plain, 3, prefetch=0)
    other.set_epoch(1)
    expected = list(other)
    assert check_on_arrival(ds, expected) == len(expected)
    assert len(threads()) == 1  # (the old iteration's, waiting for its consumer)
    ds.load_state_dict(small_dataset(plain, 3).state_dict(steps=4))  # epoch 0, sample 16
    assert check_on_arrival(old, reference[4:]) == len(reference) - 4  # its own rest
    assert check_on_arrival(ds, reference[4:]) == len(reference) - 4  # the loaded state's
    del old, taken
    assert threads() == []


def test_close_while_the_consumer_holds_the_lock_does_not_deadlock(plain):
    """A generator collected while its consumer holds the dataset's lock (a garbage collection
    inside plan(), say): closing it returns at once and its thread ends."""
    ds = small_dataset(plain, 3, prefetch=2)
    it = iter(ds)
    next(it)
    with ds._lock():
        t0 = time.perf_counter()
        del it
        assert time.perf_counter() - t0 < 5
    assert threads() == []


def test_a_fill_error_reraises_in_the_consumer_at_its_chunk(plain, monkeypatch):
    """The 4th fill raises: the consumer gets exactly the 9 batches of the 3 chunks before it
    (3 batches a chunk), then that exception, as without prefetch; the thread is gone."""
    reference = list(small_dataset(plain, 3, prefetch=0))
    for prefetch in (0, 1, 3):
        ds = small_dataset(plain, 3, prefetch=prefetch)
        calls, fill = [0], ds._chunk

        def failing(*args, calls=calls, fill=fill):
            calls[0] += 1
            if calls[0] == 4:
                raise RuntimeError("injected fill error")
            return fill(*args)

        monkeypatch.setattr(ds, "_chunk", failing)
        got = []
        with pytest.raises(RuntimeError, match="injected fill error"):
            for batch in ds:
                got.append(batch)
        assert len(got) == 9
        for i, batch in enumerate(got):
            assert_same(batch, reference[i], i)
        del got
        assert threads() == []


def test_a_shard_that_disappears_raises_in_the_consumer(plain, tmp_path):
    """Every shard file removed after the first batch: a later fill cannot map its shard and
    the consumer gets the error (after the batches before it, all right); no thread is left."""
    out = tmp_path / "copy"
    shutil.copytree(plain, out)
    reference = list(small_dataset(str(out), 3, prefetch=0))
    ds = small_dataset(str(out), 3, prefetch=1)
    got = []
    with pytest.raises(LoaderError, match="listed by the ledger is missing: the output changed"):
        for batch in ds:
            if not got:
                for name in os.listdir(out / "shards"):
                    os.remove(out / "shards" / name)
            got.append(batch)
    assert 0 < len(got) < len(reference)
    for i, batch in enumerate(got):
        assert_same(batch, reference[i], i)


@pytest.mark.parametrize("prefetch", [0, 1])
def test_the_state_at_every_batch_of_a_chunk_and_after_a_break(plain, prefetch):
    """Without prefetch a chunk's batches come from a list iterator with no Python per batch,
    and the position is read from it when a state is asked for: the state after every batch
    (chunks of three batches) counts exactly the batches taken, and an iteration abandoned after
    k batches (mid-chunk or at its end) leaves the state at k, lets go of the chunk, and resumes
    to exactly the rest."""
    reference = list(small_dataset(plain, 3, prefetch=0))
    assert len(reference) > 7
    ds = small_dataset(plain, 3, prefetch=prefetch)
    it = iter(ds)
    states = [ds.state_dict()]
    for batch in reference:
        assert_same(next(it), batch)
        states.append(ds.state_dict())
    assert next(it, None) is None
    assert [s["sample"] for s in states] == [k * BATCH for k in range(len(reference) + 1)]
    assert [s["consumer"]["next_step"] for s in states[1:]] == list(range(1, len(reference) + 1))
    for k in (1, 2, 3, 4, 7):
        ds = small_dataset(plain, 3, prefetch=prefetch)
        it = iter(ds)
        taken = [next(it) for _ in range(k)]
        del it, taken
        gc.collect()
        assert type(ds._progress) is tuple  # (a state that no longer holds the chunk)
        state = ds.state_dict()
        assert state["sample"] == k * BATCH
        resumed = small_dataset(plain, 3, prefetch=prefetch)
        resumed.load_state_dict(state)
        assert check_on_arrival(resumed, reference[k:]) == len(reference) - k


def saved_after(plain, batches: int) -> dict:
    """The state of a fresh dataset after `batches` batches."""
    ds = small_dataset(plain, 3, prefetch=0)
    it = iter(ds)
    for _ in range(batches):
        next(it)
    return ds.state_dict()


@pytest.mark.parametrize("prefetch", [0, 1])
def test_close_pickle_two_iterations_and_moves_during_an_iteration(plain, prefetch):
    """The iterator of a process that reads the dataset itself closes as a generator does (no
    batch after close(), the thread joined, the position kept); a dataset pickled mid-iteration
    carries its position, not the chunk's batches; with two iterations alive the state is the
    latest one's; set_epoch / load_state_dict during an iteration stay the state while the old
    iteration goes on past chunk boundaries (they apply to the next iteration)."""
    import pickle

    ds = small_dataset(plain, 3, prefetch=prefetch)
    it = iter(ds)
    next(it), next(it)
    it.close()
    assert next(it, None) is None and threads() == []
    assert ds.state_dict()["sample"] == 2 * BATCH
    it = iter(ds)
    next(it)
    blob = pickle.dumps(ds)
    assert len(blob) < 50_000  # (a chunk of batches is megabytes)
    assert pickle.loads(blob).state_dict() == ds.state_dict()
    a = iter(ds)
    next(a)
    b = iter(ds)
    next(b)
    for _ in range(4):  # (past a's chunk boundary)
        next(a)
    assert ds.state_dict()["sample"] == BATCH  # b's position: the latest iteration
    del it, a, b
    gc.collect()
    for move in ("set_epoch", "load_state_dict"):
        ds = small_dataset(plain, 3, prefetch=prefetch)
        it = iter(ds)
        next(it)
        if move == "set_epoch":
            ds.set_epoch(1)
            expected = (1, 0)
        else:
            ds.load_state_dict(saved_after(plain, 5))
            expected = (0, 5 * BATCH)
        for _ in range(5):  # (past a chunk boundary: chunks of three batches)
            next(it)
            state = ds.state_dict()
            assert (state["epoch"], state["sample"]) == expected, move
        del it
        gc.collect()
        assert [b["index"][0] for b in itertools.islice(ds, 1)] == [expected[1]]
