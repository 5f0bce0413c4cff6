"""TokenDataset and loss masks (issue 16): the shards of a chat output carry `loss_mask`
(list<uint8>, one entry per token), and the loader's labels are -100 exactly where the target
token's mask is 0, together with the other label masks (padding, skip_documents, cross-document
masking). Checked sample by sample against the documents that `provenance()` names, with concat
and best_fit packing, a mixture of a masked and an unmasked output over 2 ranks x 2 workers, a
mid-epoch resume under another world size, and `loss_mask=False`. The output is the sample
corpus tokenized by the engine (in the driver), then given a loss_mask column by rewriting each
committed shard (the ledger's checksum fixed) with a deterministic rule."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pipeline.loader import IGNORE_INDEX, LoaderError, TokenDataset
from pipeline.output import Output, iter_committed
from pipeline.output.shards import file_checksum, read_ipc

from .helpers import (
    LOADER_BATCH,
    LOADER_BOS,
    LOADER_EOS,
    LOADER_SEQ,
    add_loss_mask,
    mask_rule,
    resume_at_a_new_world_size,
    small_dataset,
)

SEQ, BATCH, EOS, BOS = LOADER_SEQ, LOADER_BATCH, LOADER_EOS, LOADER_BOS


@pytest.fixture(scope="module")
def documents(masked) -> dict[tuple[str, int], dict]:
    """(shard, row) -> the document's tokens and loss mask, read back from the masked shards."""
    output, found = Output(masked), {}
    for entry in iter_committed(output):
        table = read_ipc(output, entry.shard)
        for row, (tokens, mask) in enumerate(
            zip(table["tokens"].to_pylist(), table["loss_mask"].to_pylist(), strict=True)
        ):
            assert mask == mask_rule(row, len(tokens))
            found[(entry.shard, row)] = {"tokens": tokens, "mask": mask}
    assert any(d["mask"] is None for d in found.values())  # plain documents of a chat job
    return found


def dataset(urls, **options) -> TokenDataset:
    return small_dataset(urls, 11, **options)


def expected(ds: TokenDataset, index: int, documents: dict, masked_sources: set[int]):
    """(input_ids, labels) of global sample `index` rebuilt from its provenance alone: the
    window from the documents' tokens (BOS / EOS where a segment says), and the labels the
    window shifted by one, -100 where the target is padding, a BOS, a token of mask 0 (the EOS
    takes its document's last token's mask; a null mask is all 1) in a masked source, a token
    of a skipped document, or (mask_cross_document) a segment's first token (a document's
    start, or the rest of a split document, after another segment of the row)."""
    window, trained = [ds.pad_id] * (SEQ + 1), [0] * (SEQ + 1)
    for seg in ds.provenance(index):
        doc = documents[(seg["shard"], seg["row"])]
        a, b = seg["doc_tokens"]
        tokens = [BOS] * seg["bos"] + doc["tokens"][a:b] + [EOS] * seg["eos"]
        if seg["source"] in masked_sources:  # a null mask: every token (not the BOS)
            tokens_mask = [1] * len(doc["tokens"]) if doc["mask"] is None else doc["mask"]
            last = tokens_mask[-1] if tokens_mask else 0
            mask = [0] * seg["bos"] + tokens_mask[a:b] + [last] * seg["eos"]
        else:
            mask = [1] * seg["bos"] + [1] * (b - a) + [1] * seg["eos"]
        if seg["skipped"]:
            mask = [0] * len(mask)
        start, end = seg["window"]
        if ds.rows.mask_cross:  # every segment's first token (it follows another segment)
            mask[0] = 0
        window[start:end], trained[start:end] = tokens, mask
    labels = [t if m else IGNORE_INDEX for t, m in zip(window[1:], trained[1:], strict=True)]
    return window[:SEQ], labels


def check(ds: TokenDataset, batches, documents, masked_sources: set[int]) -> dict[str, int]:
    """Every sample of the batches equals its expectation; counts of what the labels hold."""
    counts = {"samples": 0, "trained": 0, "ignored": 0}
    for batch in batches:
        for i, index in enumerate(batch["index"].tolist()):
            inputs, labels = expected(ds, index, documents, masked_sources)
            assert batch["input_ids"][i].tolist() == inputs, index
            assert batch["labels"][i].tolist() == labels, index
            counts["samples"] += 1
            counts["trained"] += sum(label != IGNORE_INDEX for label in labels)
            counts["ignored"] += sum(label == IGNORE_INDEX for label in labels)
    return counts


@pytest.mark.parametrize("packing", ["concat", "best_fit"])
def test_labels_are_ignored_exactly_where_the_target_is_masked(masked, plain, documents, packing):
    """A whole epoch of the masked output in one process: concat without any other label mask
    (the loss mask alone forces a labels block), and best_fit with BOS, cross-document masking
    and skipped documents on top; the input_ids are those of the unmasked output."""
    options = {"packing": packing, "drop_last": False}
    if packing == "best_fit":
        skip = {seg["doc_id"] for seg in dataset(plain, **options).provenance(3)}
        options.update(bos_id=BOS, mask_cross_document=True, skip_documents=sorted(skip))
    ds = dataset(masked, **options)
    assert ds.masked == [True] and ds.rows.labels
    batches = list(ds)
    counts = check(ds, batches, documents, {0})
    assert counts["samples"] == ds.plan().num_samples
    assert counts["trained"] > 0.2 * counts["ignored"] > 0
    reference = list(dataset(plain, **options))
    assert len(reference) == len(batches)
    eos_labels = {True: 0, False: 0}  # labels whose target is an EOS: trained or not
    for batch, ref in zip(batches, reference, strict=True):
        assert torch.equal(batch["input_ids"], ref["input_ids"])
        assert torch.equal(batch["index"], ref["index"])
        ignored = batch["labels"] == IGNORE_INDEX
        assert bool((ignored | (batch["labels"] == ref["labels"])).all())
        assert bool((ref["labels"] == IGNORE_INDEX)[~ignored].sum() == 0)  # masks only add
        window = torch.cat([batch["input_ids"], ref["labels"][:, -1:]], 1)[:, 1:]
        for trained in (True, False):
            eos_labels[trained] += int(((window == EOS) & (ignored != trained)).sum())
    assert eos_labels[True] > 0 and eos_labels[False] > 0
    # loss_mask=False: the column is ignored, the batches are the unmasked output's
    ignored = dataset(masked, loss_mask=False, **options)
    assert ignored.masked == [None]
    for batch, ref in zip(ignored, reference, strict=True):
        assert all(torch.equal(batch[k], ref[k]) for k in ref)


def test_a_masked_and_an_unmasked_output_mix_across_ranks_workers_and_a_resume(
    masked, plain, documents
):
    """best_fit mixture of the masked output and the unmasked one, 2 ranks x 2 workers (shared
    slots): every sample's labels follow its source's masks. Resumed after 6 steps under 3 ranks
    (loader.state_dict -> global_state -> load_state_dict), the rest of the epoch is the same
    samples, each once, as the uninterrupted global sequence."""
    options = {
        "weights": [1, 1],
        "packing": "best_fit",
        "stopping_strategy": "all_exhausted",
        "mix_block": 8,
        "bos_id": BOS,
    }
    whole = dataset([masked, plain], **options)
    assert whole.masked == [True, False]
    end = whole.plan().num_samples
    first, rest, state = resume_at_a_new_world_size(
        lambda rank, world: dataset([masked, plain], rank=rank, world_size=world, **options),
        take=6,
        workers_rank=0,
    )
    assert state["sample"] == 6 * 2 * BATCH
    indices = [i for b in first + rest for i in b["index"].tolist()]
    assert sorted(indices) == list(range(end))
    counts = check(whole, first + rest, documents, {0})
    assert counts["samples"] == end
    sources = torch.cat([b["source"] for b in first + rest])
    assert set(sources.tolist()) == {0, 1}
    for batch in rest:  # the same samples as the uninterrupted sequence, exactly
        a = int(batch["index"][0])
        ref = whole.samples(a, a + len(batch["index"]))
        assert all(torch.equal(batch[k], ref[k]) for k in ("input_ids", "labels", "index"))


def test_provenance_and_plan_are_those_of_the_unmasked_output(masked, plain):
    for packing in ("concat", "best_fit"):
        ds, ref = dataset(masked, packing=packing), dataset(plain, packing=packing)
        plan, ref_plan = asdict(ds.plan()), asdict(ref.plan())
        assert [s.pop("url") for s in plan["sources"]] == [masked]
        assert [s.pop("url") for s in ref_plan["sources"]] == [plain]
        assert plan == ref_plan
        for index in range(0, ds.plan().num_samples, 13):
            assert ds.provenance(index) == ref.provenance(index)


def test_a_mask_that_does_not_fit_its_tokens_or_some_shards_without_one_are_refused(
    plain, tmp_path
):
    short = tmp_path / "short"
    add_loss_mask(plain, short, rule=lambda row, length: [1] * (length - (row == 2)))
    with pytest.raises(LoaderError, match="row 2 has .* loss_mask entries for"):
        list(dataset(str(short), shuffle=False))
    partial = tmp_path / "partial"
    add_loss_mask(plain, partial)
    entries = sorted((partial / "ledger").glob("*.json"))
    for path in entries[1:]:  # the first shard keeps its mask: the others lose theirs
        shard = json.loads(path.read_text())["shard"]
        shutil.copy(Path(plain) / shard, partial / shard)
        entry = json.loads(path.read_text())
        entry["shard_checksum"] = file_checksum(str(partial / shard))
        path.write_text(json.dumps(entry))
    ds = dataset(str(partial))
    with pytest.raises(LoaderError, match="some shards have a loss_mask column"):
        list(ds)


def test_null_masks_train_every_token(plain, tmp_path):
    """Plain documents of a chat job have null masks (record batches whose mask values are
    empty): every token trained, so without BOS the batches are the unmasked output's."""
    nulls = tmp_path / "nulls"
    add_loss_mask(plain, nulls, rule=lambda row, length: None)
    for packing in ("concat", "best_fit"):
        ds = dataset(str(nulls), packing=packing)
        assert ds.masked == [True]
        for batch, ref in zip(ds, dataset(plain, packing=packing), strict=True):
            assert all(torch.equal(batch[k], ref[k]) for k in ref)
