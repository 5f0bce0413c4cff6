"""TokenDataset mixtures (issue 15): all_exhausted covers every token of every source across
ranks x workers with per-source shares within 1% of the weights (per token, byte and document),
budget_tokens delivers exactly its tokens, plan() reports what each source gives, resume stays
exact across world sizes, and `tokenmill plan` prints the same plan. Outputs are the sample's
English, Chinese and German files tokenized by the engine."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
import torch

from pipeline.loader import LoaderError, TokenDataset

from .helpers import job_config, shard_rows

SEQ = 64
BATCH = 8
EOS = 8000  # one past the 8k vocabulary: never inside a document, so the stream splits exactly
LANGS = ("en", "zh", "de")
WEIGHTS = [0.5, 0.3, 0.2]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, ray_session, sample_dir, bpe_path) -> list[str]:
    """One output per language, each of several committed shards."""
    from pipeline.tokenize import run_job

    root = tmp_path_factory.mktemp("mix")
    urls = []
    for lang in LANGS:
        out = root / lang
        run_job(job_config(sample_dir / f"{lang}.jsonl", out, f"bpe:{bpe_path}", unit_bytes=60_000))
        urls.append(str(out))
    return urls


@pytest.fixture(scope="module")
def rows(outputs) -> list[list[dict]]:
    return [shard_rows(url) for url in outputs]


def mixture(outputs: list[str], **options) -> TokenDataset:
    options = {
        "batch_size": BATCH,
        "eos_id": EOS,
        "return_index": True,
        "seed": 3,
        "mix_block": 16,
        "weights": WEIGHTS,
        "chunk_tokens": 3 * BATCH * (SEQ + 1),
        "bundle_tokens": 3 * BATCH * (SEQ + 1),
        **options,
    }
    return TokenDataset(outputs, SEQ, **options)


def windows(batches) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Global sample index -> (source, whole seq_len + 1 window), each index at most once."""
    found: dict[int, tuple[int, tuple[int, ...]]] = {}
    for batch in batches:
        full = torch.cat([batch["input_ids"][:, :1], batch["labels"]], dim=1)
        for index, source, row in zip(
            batch["index"].tolist(), batch["source"].tolist(), full.tolist(), strict=True
        ):
            assert index not in found, f"sample {index} delivered twice"
            found[index] = (source, tuple(row))
    return found


def run_ranks(outputs, world: int, workers: int, state=None, steps=None, **options):
    batches, datasets = [], []
    for rank in range(world):
        ds = mixture(outputs, rank=rank, world_size=world, **options)
        if state is not None:
            ds.load_state_dict(state)
        batches += list(itertools.islice(ds.dataloader(num_workers=workers), steps))
        datasets.append(ds)
    return batches, datasets


def source_streams(found: dict) -> list[np.ndarray]:
    """Each source's windows in global order, concatenated: its passes one after another."""
    streams = []
    for s in range(len(LANGS)):
        parts = [np.array(found[i][1]) for i in sorted(found) if found[i][0] == s]
        streams.append(np.concatenate(parts))
    return streams


def pieces(stream: np.ndarray) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Whole documents of a stream (split at EOS) and the unfinished rest."""
    parts = np.split(stream, np.flatnonzero(stream == EOS) + 1)
    return [tuple(p[:-1].tolist()) for p in parts[:-1]], parts[-1]


def realised(streams, rows, unit: str) -> list[float]:
    """Per-source share of what the samples deliver, counted in `unit`: tokens (document tokens
    plus EOS), or each whole document's UTF-8 bytes / 1 document, and the unfinished one in
    proportion to the tokens of it delivered."""
    amounts = []
    for stream, source_rows in zip(streams, rows, strict=True):
        if unit == "token":
            amounts.append(len(stream))
            continue
        size = {tuple(r["tokens"]): (r["n_bytes"] if unit == "byte" else 1) for r in source_rows}
        whole, rest = pieces(stream)
        amount = float(sum(size[d] for d in whole))
        if len(rest):  # the document it is a prefix of (the first that matches)
            doc = next(d for d in size if d[: len(rest)] == tuple(rest.tolist()))
            amount += size[doc] * len(rest) / (len(doc) + 1)
        amounts.append(amount)
    return [a / sum(amounts) for a in amounts]


@pytest.mark.parametrize("unit", ["token", "byte", "document"])
def test_all_exhausted_gives_every_token_of_every_source_at_shares_within_1_percent(
    outputs, rows, unit
):
    """Two ranks x two workers: the union of what they take is the whole epoch, once; each
    source's first pass is there whole (every document, every token), and the realised shares,
    counted in the weight unit, are within 1% of the weights."""
    batches, datasets = run_ranks(
        outputs, world=2, workers=2, stopping_strategy="all_exhausted", weight_unit=unit
    )
    found = windows(batches)
    plan = datasets[0].plan()
    assert sorted(found) == list(range(plan.num_samples))
    assert plan.num_samples % (2 * BATCH) == 0
    streams = source_streams(found)
    for s, (stream, source_rows) in enumerate(zip(streams, rows, strict=True)):
        docs = Counter(tuple(r["tokens"]) for r in source_rows)
        whole, _ = pieces(stream)
        first_pass = Counter(whole[: sum(docs.values())])
        assert first_pass == docs, f"source {s}: pass 0 is not every document once"
        report = plan.sources[s]
        assert report["tokens_dropped"] == 0 and report["repeats"] >= 1.0
        assert report["tokens_used"] == len(stream)  # nothing padded with concat
    shares = realised(streams, rows, unit)
    assert np.abs(np.array(shares) - np.array(WEIGHTS)).max() < 0.01, shares
    planned = [s["share"] for s in plan.sources]
    assert np.abs(np.array(planned) - np.array(WEIGHTS)).max() < 0.01, planned


def test_budget_tokens_is_exactly_that_many_tokens_repeating_or_subsampling(outputs, rows):
    total = sum(len(r["tokens"]) + 1 for source_rows in rows for r in source_rows)
    for budget in (SEQ * 7 * BATCH * 2, SEQ * (3 * total // SEQ // 2)):  # small, 1.5x the data
        batches, datasets = run_ranks(
            outputs, world=2, workers=1, budget_tokens=budget, drop_last=False
        )
        found = windows(batches)
        assert sorted(found) == list(range(budget // SEQ))
        assert sum(b["input_ids"].numel() for b in batches) == budget
        plan = datasets[0].plan()
        assert plan.num_samples * SEQ == budget and plan.stopping_strategy == "budget"
        used = [s["tokens_used"] for s in plan.sources]
        assert used == [len(s) for s in source_streams(found)]
        if budget < total:
            assert all(s["repeats"] < 1 and s["tokens_dropped"] > 0 for s in plan.sources)
        else:
            assert any(s["repeats"] > 1 for s in plan.sources)
    odd = mixture(outputs, budget_tokens=SEQ * (2 * BATCH + 3))  # not whole steps: refused
    with pytest.raises(LoaderError, match="whole steps"):
        next(iter(odd))
    with pytest.raises(ValueError, match="multiple of seq_len"):
        mixture(outputs, budget_tokens=SEQ * 10 + 1)


def test_default_first_exhausted_warns_and_plan_reports_what_it_leaves(outputs):
    ds = mixture(outputs)
    with pytest.warns(UserWarning, match="stops when its first source runs out"):
        plan = ds.plan()
    found = windows(list(ds))
    streams = source_streams(found)
    for report, stream in zip(plan.sources, streams, strict=True):
        assert report["tokens_used"] == len(stream)
        assert report["tokens_dropped"] == report["tokens_available"] - len(stream)
        assert report["repeats"] <= 1.0
    assert sum(s["tokens_dropped"] for s in plan.sources) == plan.dropped_tokens > 0
    assert max(s["repeats"] for s in plan.sources) > 0.99  # the first exhausted one


@pytest.mark.parametrize("packing", ["concat", "best_fit"])
def test_plan_counts_the_samples_the_loader_delivers_for_every_seed(outputs, packing):
    """A mixture block's sources are permuted, so an epoch that ends inside a block holds that
    block's first samples, not its ideal counts: the epoch's length and plan() must count those
    (they counted the ideal ones, and then first_exhausted read a source past its full windows,
    all_exhausted could leave a window out, and plan's samples were off by one or two)."""
    for seed, strategy in itertools.product(range(8), ("first_exhausted", "all_exhausted")):
        ds = mixture(outputs, seed=seed, stopping_strategy=strategy, packing=packing)
        delivered = Counter(s for b in ds for s in b["source"].tolist())
        plan = ds.plan()
        assert [r["samples"] for r in plan.sources] == [delivered[s] for s in range(len(LANGS))]
        epoch = ds._epoch(0)
        sources, windows_of = epoch.schedule.locate(0, epoch.length)  # each sample's
        for s, source in enumerate(epoch.sources):
            seen = set(windows_of[sources == s].tolist())
            if strategy == "first_exhausted":  # never past its full windows: nothing repeats
                assert max(seen) < source.full_windows(), (seed, s)
            else:  # every window of its first pass
                assert seen >= set(range(source.covering_windows())), (seed, s)


def test_mixture_resume_across_world_sizes_with_best_fit_sees_each_sample_once(outputs):
    options = {"stopping_strategy": "all_exhausted", "packing": "best_fit", "drop_last": False}
    reference = windows(mixture(outputs, **options))
    first, ds = run_ranks(outputs, world=2, workers=2, steps=5, **options)
    state = ds[0].state_dict(steps=5)
    second, ds = run_ranks(outputs, world=3, workers=1, state=state, steps=4, **options)
    state = ds[0].state_dict(steps=4)
    rest, _ = run_ranks(outputs, world=1, workers=2, state=state, **options)
    assert windows(first + second + rest) == reference


def test_plan_command_prints_the_dataset_plan(outputs):
    from click.testing import CliRunner

    from jobs.cli import main

    args = [*outputs, "--seq-len", str(SEQ), "--seed", "3", "--weights", "0.5,0.3,0.2"]
    args += ["--stopping-strategy", "all_exhausted", "--eos-id", str(EOS), "--mix-block", "16"]
    args += ["--batch-size", str(BATCH), "--world-size", "2", "--weight-unit", "byte"]
    result = CliRunner().invoke(main, ["plan", *args])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    ds = mixture(
        outputs, stopping_strategy="all_exhausted", weight_unit="byte", world_size=2, rank=0
    )
    assert printed == json.loads(json.dumps(asdict(ds.plan())))
    bad = CliRunner().invoke(main, ["plan", *outputs, "--seq-len", "8", "--weights", "1,2"])
    assert bad.exit_code == 2 and "3 outputs" in bad.output
    # the weights space-separated, after the outputs or before them: the same plan
    spaced = [o if o != "0.5,0.3,0.2" else "0.5" for o in args] + ["0.3", "0.2"]
    options = [a for a in args[len(outputs) :] if a not in ("--weights", "0.5,0.3,0.2")]
    before = ["--weights", "0.5", "0.3", "0.2", *outputs, *options]
    for line in (spaced, before):
        again = CliRunner().invoke(main, ["plan", *line])
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout.strip().splitlines()[-1]) == printed
    bad = CliRunner().invoke(main, ["plan", *outputs, "--seq-len", "8", "--weights", "1", "2"])
    assert bad.exit_code == 2 and "2 weights for 3 outputs" in bad.output


def test_a_state_saved_for_another_sample_order_warns_when_loaded(outputs):
    """A resume state names the sample index of its epoch's order; loaded into a dataset whose
    order differs (other weights, packing or outputs) it resumed silently at that index of
    another order. It warns now; the same order, or a state from before the order was recorded,
    loads without a word, and global_state keeps the order of the states it combines."""
    import warnings

    from pipeline.loader.state import order_keys

    saved = mixture(outputs, stopping_strategy="all_exhausted")
    state = saved.state_dict(steps=3)
    assert len(state["order"]) == 16
    workers = run_ranks(outputs, world=2, workers=2, steps=2, stopping_strategy="all_exhausted")[1]
    assert TokenDataset.global_state(workers[0].state_dict())["order"] == state["order"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixture(outputs, stopping_strategy="all_exhausted", batch_size=4).load_state_dict(state)
        old = {k: v for k, v in state.items() if k != "order"}
        mixture(outputs, stopping_strategy="all_exhausted", weights=[1, 1, 1]).load_state_dict(old)
        # the same order spelled otherwise (it warned): weights in the same exact proportion,
        # the default strategy given by name
        scaled = [4 * w for w in WEIGHTS]  # (exact in binary floats, as 10 * 0.3 is not)
        mixture(outputs, stopping_strategy="all_exhausted", weights=scaled).load_state_dict(state)
        with pytest.warns(UserWarning, match="stops when its first source runs out"):
            default = mixture(outputs).state_dict(steps=3)  # (the default strategy's warning)
        mixture(outputs, stopping_strategy="first_exhausted").load_state_dict(default)
        # the digest versions before 2026-12-07 13:49 UTC wrote (weights and strategy as spelled)
        spelled = order_keys(saved)[1]
        assert spelled != state["order"]
        mixture(outputs, stopping_strategy="all_exhausted").load_state_dict(
            {**state, "order": spelled}
        )
    other = mixture(outputs, stopping_strategy="all_exhausted", packing="best_fit")
    with pytest.warns(UserWarning, match="saved for another sample order"):  # (another order's)
        saved.load_state_dict({**state, "order": order_keys(other)[1]})
    for changed in ({"weights": [0.2, 0.3, 0.5]}, {"packing": "best_fit"}, {"mix_block": 8}):
        other = mixture(outputs, stopping_strategy="all_exhausted", **changed)
        with pytest.warns(UserWarning, match="saved for another sample order"):
            other.load_state_dict(state)
    with pytest.warns(UserWarning, match="saved for another sample order"):
        mixture(outputs[:2], stopping_strategy="all_exhausted", weights=[1, 1]).load_state_dict(
            state
        )
