"""The remote shard cache with cache_limit (issue 15): real processes (two ranks, each with two
DataLoader workers) read an s3:// output from the local S3 server through one cache directory;
the cache never holds more than the limit (every admission's usage, logged under the directory
lock, and a monitor polling the directory), shards are evicted and fetched again, every batch is
the local output's, and a shard another process holds is never evicted."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
import time

import pytest
import torch

from pipeline.errors import LoaderError
from pipeline.loader import TokenDataset
from pipeline.loader.cache import ShardCache
from pipeline.loader.shards import ShardStore, committed_shards

from .helpers import job_config

SEQ, BATCH, EOS = 64, 8, 8000


@pytest.fixture(scope="module")
def local_url(tmp_path_factory, ray_session, sample_dir, bpe_path) -> str:
    from pipeline.tokenize import run_job

    out = tmp_path_factory.mktemp("cache") / "out"
    run_job(job_config(sample_dir / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=150_000))
    return str(out)


@pytest.fixture(scope="module")
def s3_url(local_url, s3) -> str:
    s3.create_bucket("cached")
    s3.filesystem().put(local_url, "cached/out", recursive=True)
    return "s3://cached/out"


def dataset(url: str, **options) -> TokenDataset:
    options = {"batch_size": BATCH, "eos_id": EOS, "return_index": True, "seed": 2, **options}
    return TokenDataset(url, SEQ, **options)


def windows(batches) -> dict[int, tuple[int, ...]]:
    found = {}
    for batch in batches:
        full = torch.cat([batch["input_ids"][:, :1], batch["labels"]], dim=1)
        for index, row in zip(batch["index"].tolist(), full.tolist(), strict=True):
            found[index] = tuple(row)
    return found


def run_rank(url, storage_options, cache_dir, limit, rank, epochs, result_path) -> None:
    """One rank (a spawned process) reading `epochs` epochs through 2 DataLoader workers."""
    ds = dataset(
        url,
        rank=rank,
        world_size=2,
        storage_options=storage_options,
        cache_dir=cache_dir,
        cache_limit=limit,
        group_shards=1,
    )
    loader = ds.dataloader(num_workers=2)
    found = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        found.append(windows(loader))
    with open(result_path, "wb") as f:
        pickle.dump(found, f)


def shard_sizes(local_url: str) -> list[int]:
    shards, _ = committed_shards(local_url)
    return [os.path.getsize(os.path.join(local_url, s.rel)) for s in shards]


def test_two_ranks_and_two_workers_share_a_cache_within_its_limit(
    local_url, s3_url, s3, tmp_path, monkeypatch
):
    sizes = shard_sizes(local_url)
    limit = sum(sorted(sizes)[-9:])  # room for 9 shards: the 4 readers hold at most 8
    assert limit < sum(sizes) and len(sizes) >= 11
    cache_dir, log = str(tmp_path / "cache"), tmp_path / "admissions.log"
    monkeypatch.setenv("TOKENMILL_CACHE_LOG", str(log))
    cache, seen, stop = ShardCache(cache_dir), [], threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):  # not made yet, or a file went
                seen.append(cache.usage())
            time.sleep(0.002)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    context = multiprocessing.get_context("spawn")
    results = [tmp_path / f"rank{r}.pkl" for r in range(2)]
    ranks = [
        context.Process(
            target=run_rank,
            args=(s3_url, s3.storage_options, cache_dir, limit, r, 2, str(results[r])),
        )
        for r in range(2)
    ]
    try:
        for process in ranks:
            process.start()
        for process in ranks:
            process.join(timeout=600)
            assert process.exitcode == 0
    finally:
        stop.set()
        watcher.join()
    admissions = [line.split() for line in log.read_text().splitlines()]
    assert all(int(usage) <= int(lim) == limit for _, _, usage, lim in admissions)
    assert len(admissions) > len(sizes)  # shards were evicted and fetched again
    assert seen and max(seen) <= limit
    for epoch in range(2):
        expected = dataset(local_url, group_shards=1, rank=0, world_size=2)
        expected.set_epoch(epoch)
        reference = windows(expected.samples(0, expected.plan().num_samples) for _ in [0])
        got = {}
        for path in results:
            with open(path, "rb") as f:
                got.update(pickle.load(f)[epoch])
        assert got == reference


def hold_shard(url, storage_options, cache_dir, limit, ready, release) -> None:
    store = ShardStore(url, storage_options, cache_dir, limit)
    shards, _ = committed_shards(url, storage_options)
    held = store.tokens(shards[0])  # mapped, so held
    ready.set()
    release.wait(120)
    del held
    store._open.clear()  # the mapping's last array goes: the hold ends


def test_a_shard_in_use_is_never_evicted(local_url, s3_url, s3, tmp_path):
    sizes = shard_sizes(local_url)
    cache_dir = str(tmp_path / "cache")
    limit = sizes[0] + sizes[1] - 1  # room for one of the two, not both
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(
        target=hold_shard, args=(s3_url, s3.storage_options, cache_dir, limit, ready, release)
    )
    holder.start()
    try:
        assert ready.wait(120)
        shards, _ = committed_shards(s3_url, s3.storage_options)
        first = os.path.join(cache_dir, shards[0].rel.replace("/", "__"))
        store = ShardStore(s3_url, s3.storage_options, cache_dir, limit)
        store.cache.wait_s = 1.0
        with pytest.raises(LoaderError, match="every cached shard is in use"):
            store.tokens(shards[1])
        assert os.path.exists(first)
        release.set()
        holder.join(60)
        assert holder.exitcode == 0
        second = store.tokens(shards[1])
        assert not os.path.exists(first)  # evicted once nobody held it
        assert len(second.doc_len) == shards[1].documents
    finally:
        release.set()
        holder.join(60)
    with pytest.raises(LoaderError, match="exceeds cache_limit"):
        ShardStore(s3_url, s3.storage_options, str(tmp_path / "tiny"), 100).tokens(shards[0])


def test_a_limit_too_small_for_one_reader_fails_at_once(local_url, s3_url, s3, tmp_path):
    """When what blocks an admission is this process's own holdings, nobody can free them (the
    reader is the one waiting): LoaderError at once, saying how much it holds and needs, not a
    wait of wait_s (600 s) first. A hold whose arrays are gone does not count."""
    sizes = shard_sizes(local_url)
    shards, _ = committed_shards(s3_url, s3.storage_options)
    limit = sizes[0] + sizes[1] - 1  # room for one of the two, not both
    store = ShardStore(s3_url, s3.storage_options, str(tmp_path / "cache"), limit)
    assert store.cache.wait_s == 600.0
    first = store.tokens(shards[0])
    started = time.monotonic()
    with pytest.raises(LoaderError, match="cannot hold what this process reads at once") as err:
        store.tokens(shards[1])
    assert time.monotonic() - started < 60
    assert f"holds 1 shard(s), {sizes[0]} bytes" in str(err.value)
    assert f"at least {sizes[0] + sizes[1]} bytes" in str(err.value)
    del first
    store._open.clear()  # the first shard's arrays go: its hold ends, it may be evicted
    second = store.tokens(shards[1])
    assert len(second.doc_len) == shards[1].documents


def test_a_damaged_local_shard_is_named_not_a_pyarrow_traceback(local_url, tmp_path):
    """A shard cut short (a copy interrupted, a full disk) or replaced by another shard's file
    stops the loader with an error naming the shard and the way to redo it."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(local_url, out)
    shards, _ = committed_shards(str(out))
    first, second = (str(out / s.rel) for s in shards[:2])
    size = os.path.getsize(first)
    os.truncate(first, size // 2)
    with pytest.raises(LoaderError, match=rf"{shards[0].rel}: damaged shard.*--repair"):
        list(dataset(str(out)).dataloader(num_workers=0))
    shutil.copyfile(second, first)  # a readable Arrow file, another unit's documents
    with pytest.raises(LoaderError, match=rf"{shards[0].rel}: \d+ documents .* ledger says"):
        list(dataset(str(out)).dataloader(num_workers=0))


@pytest.mark.parametrize(("group", "packing"), [(1, "concat"), (2, "concat"), (2, "best_fit")])
def test_one_reader_fits_in_two_groups_of_shards(local_url, s3_url, s3, tmp_path, group, packing):
    """What docs/loader.md says a reader holds: 2 * group_shards shards. Both caches (the
    stream's groups, the store's mappings) now drop their oldest entry before mapping the next,
    not after: a limit of the 2 * group_shards largest shards failed ("cannot hold what this
    process reads at once") and needed 3 * group_shards."""
    sizes = shard_sizes(local_url)
    limit = sum(sorted(sizes)[-2 * group :])
    options = {"group_shards": group, "packing": packing}
    ds = dataset(
        s3_url,
        storage_options=s3.storage_options,
        cache_dir=str(tmp_path / "cache"),
        cache_limit=limit,
        **options,
    )
    assert windows(ds) == windows(dataset(local_url, **options))


@pytest.mark.parametrize("room", [None, 20])
def test_admissions_scan_the_cache_rarely_and_leave_no_file_per_shard(tmp_path, monkeypatch, room):
    """Every admission scanned the whole directory (a stat per file) and every download left a
    `<shard>.lock` behind, so the directory grew with every shard ever fetched: 16k admissions
    took 103 s with room for 8 shards. Now a running bound on the usage spares the scan while
    there is room, a scan evicts down to 9/10 of the limit, and downloads lock one of 64 files."""
    from pipeline.loader import cache as cache_module

    size, count = 1000, 400
    limit = 10**9 if room is None else room * size
    cache = ShardCache(str(tmp_path / "cache"), limit=limit)
    scans = []
    real = cache_module.ShardCache._make_room

    def make_room(self, need):
        scans.append(need)
        return real(self, need)

    monkeypatch.setattr(cache_module.ShardCache, "_make_room", make_room)

    def fetch(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"x" * size)

    for i in range(count):
        path, held = cache.acquire(f"shard-{i:04d}.arrow", lambda: size, fetch)
        held.release()
        assert cache.usage() <= limit
    names = os.listdir(tmp_path / "cache")
    shards = [n for n in names if n.startswith("shard-")]
    assert len(shards) == (count if room is None else len(shards)) and len(shards) <= limit // size
    assert len(names) - len(shards) <= 64 + 2  # download locks, the directory lock, .usage
    assert len(scans) <= (1 if room is None else count // 2)
    if room is not None:  # the most recently used shards stayed
        assert f"shard-{count - 1:04d}.arrow" in shards and len(shards) >= room * 8 // 10
