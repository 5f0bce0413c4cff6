"""TokenDataset document boundaries (issue 15): best_fit packing never splits a document that fits,
BOS insertion (explicit or from the ledger), cu_seqlens / max_seqlen, cross-document label
masking, provenance and `tokenmill which` checked against what the loader yields (every segment
decoded and compared with the document's tokens in the shards), and skip_documents. The output is
the sample corpus tokenized by the engine."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import defaultdict

import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

from pipeline.loader import IGNORE_INDEX, TokenDataset
from pipeline.output import Output, iter_committed
from pipeline.output.shards import read_ipc

from .helpers import LOADER_BATCH, LOADER_BOS, LOADER_EOS, LOADER_SEQ, job_config, small_dataset

SEQ, BATCH, EOS, BOS = LOADER_SEQ, LOADER_BATCH, LOADER_EOS, LOADER_BOS


@pytest.fixture(scope="module")
def url(tmp_path_factory, ray_session, sample_dir, bpe_path) -> str:
    from pipeline.tokenize import run_job

    out = tmp_path_factory.mktemp("docs") / "out"
    run_job(job_config(sample_dir / "*.jsonl", out, f"bpe:{bpe_path}", unit_bytes=200_000))
    return str(out)


@pytest.fixture(scope="module")
def documents(url) -> dict[tuple[str, int], dict]:
    """(shard, row) -> the document's doc_id, tokens and unit (url, start), from the shards."""
    output, found = Output(url), {}
    for entry in iter_committed(output):
        for row, record in enumerate(read_ipc(output, entry.shard).to_pylist()):
            found[(entry.shard, row)] = {
                "doc_id": record["doc_id"],
                "tokens": record["tokens"],
                "url": entry.unit.url,
                "offset": record["input_offset"],
            }
    return found


def dataset(urls, **options) -> TokenDataset:
    return small_dataset(urls, 5, **options)


def expected_window(segments: list[dict], documents: dict, pad: int) -> list[int]:
    """A sample's window rebuilt from its provenance alone: each segment decoded from the
    document's tokens in the shard (BOS / EOS where the segment says), the rest padding."""
    window = [pad] * (SEQ + 1)
    covered = 0
    for seg in segments:
        doc = documents[(seg["shard"], seg["row"])]
        assert (seg["doc_id"], seg["url"], seg["offset"]) == (
            doc["doc_id"],
            doc["url"],
            doc["offset"],
        )
        start, end = seg["doc_tokens"]
        tokens = [BOS] * seg["bos"] + doc["tokens"][start:end] + [EOS] * seg["eos"]
        a, b = seg["window"]
        assert b - a == len(tokens) and a == covered  # one after another, from 0
        window[a:b] = tokens
        covered = b
    return window


def check_batches_against_provenance(ds: TokenDataset, batches, documents) -> int:
    """Every sample of the batches equals its window rebuilt from ds.provenance; returns the
    samples checked."""
    checked = 0
    for batch in batches:
        for i, index in enumerate(batch["index"].tolist()):
            window = expected_window(ds.provenance(index), documents, ds.pad_id)
            assert batch["input_ids"][i].tolist() == window[:SEQ], index
            last = int(batch["labels"][i, -1])
            assert last in (window[SEQ], IGNORE_INDEX)
            checked += 1
    return checked


@pytest.mark.parametrize("packing", ["concat", "best_fit"])
def test_provenance_and_which_agree_with_what_the_loader_yields(url, documents, packing):
    """A mixture (the output twice) with BOS, 2 ranks x 2 workers: each sample is exactly the
    document slices its provenance names, and `tokenmill which` prints those segments."""
    options = {
        "weights": [2, 1],
        "packing": packing,
        "bos_id": BOS,
        "stopping_strategy": "all_exhausted",
        "mix_block": 8,
    }
    checked = 0
    for rank in range(2):
        ds = dataset([url, url], rank=rank, world_size=2, **options)
        batches = list(itertools.islice(ds.dataloader(num_workers=2), 12))
        checked += check_batches_against_provenance(ds, batches, documents)
        assert {int(s) for b in batches for s in b["source"]} == {0, 1}
    assert checked == 2 * 12 * BATCH

    from click.testing import CliRunner

    from jobs.cli import main

    args = ["which", url, url, "--seq-len", str(SEQ), "--seed", "5", "--epoch", "0"]
    args += ["--weights", "2,1", "--packing", packing, "--bos-id", str(BOS), "--eos-id", str(EOS)]
    args += ["--stopping-strategy", "all_exhausted", "--mix-block", "8"]
    args += ["--batch-size", str(BATCH), "--world-size", "2", "--rank", "1", "--step", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    ds = dataset([url, url], rank=1, world_size=2, **options)
    samples = range(3 * 2 * BATCH + BATCH, 3 * 2 * BATCH + 2 * BATCH)
    expected = [
        {"step": 3, "batch_row": i - samples[0], **seg} for i in samples for seg in ds.provenance(i)
    ]
    assert lines == expected


def test_best_fit_never_splits_a_document_that_fits_and_reports_its_padding(url, documents):
    ds = dataset(url, packing="best_fit", drop_last=False)
    plan = ds.plan()
    pieces = defaultdict(list)
    padding = 0
    for index in range(plan.num_samples):
        segments = ds.provenance(index)
        padding += SEQ + 1 - sum(b - a for a, b in (s["window"] for s in segments))
        for seg in segments:
            pieces[(seg["shard"], seg["row"])].append(seg["doc_tokens"])
    assert pieces.keys() == documents.keys()  # every document, once per pass
    fits = split = 0
    for key, ranges in pieces.items():
        length = len(documents[key]["tokens"])
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == length
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # tiled, no overlap
        if length + 1 <= SEQ + 1:
            assert ranges == [[0, length]], key
            fits += 1
        else:
            split += 1
    assert fits > 20 and split > 20  # both kinds are in the sample at this seq_len
    assert plan.padding_tokens == padding and plan.sources[0]["split_documents"] == split
    assert plan.padding_fraction == padding / (plan.num_samples * (SEQ + 1))
    concat = dataset(url).plan()
    assert plan.padding_fraction < concat.split_fraction
    assert concat.sources[0]["split_documents"] > split  # concat also cuts documents that fit
    batches = list(ds)
    assert check_batches_against_provenance(ds, batches, documents) == plan.num_samples
    labels = torch.cat([b["labels"] for b in batches])
    assert int((labels == IGNORE_INDEX).sum()) == padding  # a pad target per pad token


def test_skipped_documents_never_contribute_a_label_and_nothing_else_moves(
    url, documents, tmp_path
):
    plain = dataset(url, packing="best_fit", mask_cross_document=False)
    skipped_ids = {seg["doc_id"] for index in (2, 9, 30) for seg in plain.provenance(index)}
    path = tmp_path / "skip.txt"
    path.write_text("\n".join(sorted(skipped_ids)) + "\n")
    for skip in (sorted(skipped_ids), str(path)):
        ds = dataset(url, packing="best_fit", skip_documents=skip)
        got = list(ds.dataloader(num_workers=2))
        expected = list(plain)
        assert len(got) == len(expected)
        masked = 0
        for batch, ref in zip(got, expected, strict=True):
            assert torch.equal(batch["input_ids"], ref["input_ids"])
            want = ref["labels"].clone()
            for i, index in enumerate(batch["index"].tolist()):
                for seg in ds.provenance(index):
                    assert seg["skipped"] == (seg["doc_id"] in skipped_ids)
                    if seg["skipped"]:
                        a, b = seg["window"]
                        want[i, max(a - 1, 0) : b - 1] = IGNORE_INDEX
                        masked += b - 1 - max(a - 1, 0)
            assert torch.equal(batch["labels"], want)
        assert masked > 0


def test_a_skip_list_bigger_than_any_shard_masks_exactly_the_same_labels(url, documents):
    """Ids bigger than a shard are looked up row by row in a set (Arrow's is_in rebuilt a table
    of the whole list for every shard: shards x ids); same answer as the small list's is_in."""
    from pipeline.loader.shards import id_matches

    plain = dataset(url, packing="best_fit", mask_cross_document=False)
    skipped = sorted({seg["doc_id"] for index in (3, 11) for seg in plain.provenance(index)})
    padded = [*skipped, *(f"not-a-document-{i}" for i in range(20_000))]
    small = [b["labels"] for b in dataset(url, packing="best_fit", skip_documents=skipped)]
    big = [b["labels"] for b in dataset(url, packing="best_fit", skip_documents=padded)]
    assert len(small) == len(big) and all(map(torch.equal, small, big))
    column = pa.array([None, *skipped, *(["other"] * len(skipped))])  # longer than `skipped`
    for ids in (frozenset(skipped), frozenset(padded)):  # Arrow's is_in, then the set
        assert id_matches(column, ids).tolist() == [
            False,
            *[True] * len(skipped),
            *[False] * len(skipped),
        ]


def test_seq_lens_ids_and_cross_document_masks_follow_the_documents(url):
    options = {"position_ids": True, "document_ids": True, "seq_lens": True, "drop_last": False}
    options["return_index"] = True
    split_rests = 0  # segments of a split document's rest after another segment (best_fit)
    for packing in ("concat", "best_fit"):
        ds = dataset(url, packing=packing, mask_cross_document=True, **options)
        in_process = list(ds)
        workers = list(ds.dataloader(num_workers=2))
        for batch, other in zip(in_process, workers, strict=True):
            assert all(torch.equal(batch[k], other[k]) for k in batch if k != "max_seqlen")
            assert batch["max_seqlen"] == other["max_seqlen"]
            starts = torch.flatten(batch["position_ids"] == 0).nonzero().flatten()
            cu = batch["cu_seqlens"]
            assert cu.dtype == torch.int32 and cu[-1] == batch["input_ids"].numel()
            assert torch.equal(cu[:-1].long(), starts)
            assert batch["max_seqlen"] == int(torch.diff(cu).max())
            doc = batch["document_ids"]
            assert torch.equal(doc, torch.cumsum((batch["position_ids"] == 0).long(), 1) - 1)
            if packing == "concat":  # no padding: a label is masked iff its target starts a doc
                after_eos = batch["input_ids"] == EOS
                assert torch.equal(batch["labels"] == IGNORE_INDEX, after_eos)
            # no label predicts a segment's first token from another segment (with best_fit: a
            # split document's rest placed after another document too)
            starts = batch["position_ids"][:, 1:] == 0
            assert bool((batch["labels"][:, :-1][starts] == IGNORE_INDEX).all())
            for index in batch["index"].tolist():  # the rests of split documents, by provenance
                segments = ds.provenance(index)
                split_rests += sum(s["window"][0] > 0 and s["doc_tokens"][0] > 0 for s in segments)
    assert any(len(b["cu_seqlens"]) > BATCH + 1 for b in in_process)
    assert split_rests > 0


def test_bos_from_the_ledger_precedes_every_document_unless_turned_off(url, tmp_path):
    copy = tmp_path / "with-bos"
    shutil.copytree(url, copy)
    for entry in (copy / "ledger").glob("*.json"):
        data = json.loads(entry.read_text())
        data["tokenizer"]["bos_id"] = BOS
        entry.write_text(json.dumps(data))
    plain, with_bos = dataset(url), dataset(str(copy))
    assert with_bos.bos_id == BOS and plain.bos_id is None
    docs = sum(s["documents"] for s in plain.plan().sources)
    assert with_bos.plan().stream_tokens == plain.plan().stream_tokens + docs
    batch = next(iter(with_bos))
    window = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], 1)
    after_eos = window[:, 1:][window[:, :-1] == EOS]
    assert len(after_eos) > 0 and bool((after_eos == BOS).all())
    assert dataset(str(copy), bos_id=-1).bos_id is None


def test_bos_named_at_run_time_reaches_the_loader_and_a_mixture_needs_one_bos(
    url, sample_dir, bpe_path, tmp_path
):
    """`--bos-token` / `--eos-token` (job fields): recorded in the ledger, read by the loader; a
    rerun naming other special tokens is refused (they are hashed into the config: before, it
    skipped every unit and the ledger kept the old ones, so the BOS was silently never used);
    a mixture whose outputs disagree on the BOS is refused unless bos_id= settles it."""
    from jobs.cli import main as cli
    from pipeline.errors import LedgerError, LoaderError
    from pipeline.tokenize import run_job
    from tokenizers_impl import load_tokenizer

    the = load_tokenizer(f"bpe:{bpe_path}").hf.token_to_id("the")
    out = tmp_path / "with-bos"
    flags = ["--input", str(sample_dir / "en.jsonl"), "--output", str(out)]
    flags += ["--tokenizer", f"bpe:{bpe_path}", "--no-progress", "--unit-bytes", "200000"]
    result = CliRunner().invoke(cli, ["run", *flags, "--bos-token", "the"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(p.read_text()) for p in (out / "ledger").glob("*.json")]
    assert entries and {e["tokenizer"]["bos_id"] for e in entries} == {the}
    assert dataset(str(out)).bos_id == the
    with pytest.raises(LedgerError, match="another configuration"):
        run_job(job_config(sample_dir / "en.jsonl", out, f"bpe:{bpe_path}", unit_bytes=200_000))
    again = CliRunner().invoke(cli, ["run", *flags, "--tokenizer-option", "bos_token=the"])
    assert again.exit_code == 0 and '"units_skipped": ' in again.output  # the same config
    with pytest.raises(LoaderError, match=r"outputs disagree on bos_id .*: None"):
        dataset([str(out), url])
    assert dataset([str(out), url], bos_id=-1).bos_id is None
    assert dataset([url, str(out)], bos_id=the).bos_id == the


def test_provenance_gives_the_byte_offset_of_each_record(url):
    """The engine writes each record's byte offset in its input (`input_offset`); every segment's
    offset is where its record's line starts."""
    copy = url
    ds = dataset(str(copy), packing="best_fit")
    checked = 0
    for index in range(0, ds.plan(detail=False).num_samples, 7):
        for seg in ds.provenance(index):
            with open(seg["url"].removeprefix("file://"), "rb") as handle:
                handle.seek(seg["offset"])
                record = json.loads(handle.readline())
            assert record["id"] == seg["doc_id"]
            checked += 1
    assert checked > 50


def test_find_locates_documents_by_id_and_names_the_missing(url, documents, tmp_path):
    """`find_documents` / `tokenmill find`: every copy of each id, in output order, with the
    record's input file and byte offset (the JSON line there holds that id) and the document's
    token count in its shard; ids found nowhere are listed, and the command exits 1 for them."""
    from click.testing import CliRunner

    from jobs.cli import main as cli
    from pipeline.loader import find_documents

    picked = dict(itertools.islice(documents.items(), 0, None, 37))  # a few, across shards
    wanted = {doc["doc_id"] for doc in picked.values()}
    (tmp_path / "ids.txt").write_text("\n".join([*sorted(wanted), "no-such-doc", ""]) + "\n")
    found, missing = find_documents([url, url], tmp_path / "ids.txt")
    assert missing == ["no-such-doc"]
    assert [f["source"] for f in found] == [0] * len(picked) + [1] * len(picked)
    for place in found[: len(picked)]:
        doc = documents[(place["shard"], place["row"])]
        assert place["doc_id"] == doc["doc_id"] and place["tokens"] == len(doc["tokens"])
        with open(place["url"], "rb") as handle:
            handle.seek(place["offset"])
            assert json.loads(handle.readline())["id"] == place["doc_id"]
        assert place["unit_start"] <= place["offset"]  # (the unit holds the record)
    assert {p["doc_id"] for p in found} == wanted
    one = sorted(wanted)[0]
    result = CliRunner().invoke(cli, ["find", url, "--id", one])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert result.exit_code == 0 and lines[-1] == {"found": 1, "missing": []}
    assert [line["doc_id"] for line in lines[:-1]] == [one]
    result = CliRunner().invoke(cli, ["find", url, "--ids-file", str(tmp_path / "ids.txt")])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert result.exit_code == 1 and lines[-1] == {"found": len(wanted), "missing": ["no-such-doc"]}


def test_a_unit_whose_every_record_was_rejected_reads_as_no_documents(
    tmp_path, ray_session, sample_dir, bpe_path
):
    """A unit whose records are all rejects commits a shard with no record batch. Reading such
    an output crashed (numpy/pyarrow concatenations of no arrays) in plan(), best_fit packing,
    skip_documents and find: it holds no document, and everything reads the other units."""
    from pipeline.loader import find_documents
    from pipeline.tokenize import run_job

    (tmp_path / "rejects.jsonl").write_text('42\n[1, 2]\n{"id": "e", "text": ""}\n')
    shutil.copy(sample_dir / "de.jsonl", tmp_path / "de.jsonl")
    out = tmp_path / "out"
    run_job(job_config(tmp_path / "*.jsonl", out, f"bpe:{bpe_path}"))
    entries = list(iter_committed(Output(str(out))))
    assert sorted(e.documents for e in entries)[0] == 0 and len(entries) == 2
    rows = read_ipc(Output(str(out)), next(e.shard for e in entries if e.documents)).to_pylist()
    first = rows[0]["doc_id"]
    for options in ({}, {"packing": "best_fit", "seq_lens": True}, {"skip_documents": [first]}):
        ds = TokenDataset(str(out), SEQ, batch_size=BATCH, eos_id=EOS, seed=1, **options)
        plan = ds.plan()
        assert plan.sources[0]["tokens_available"] == sum(len(r["tokens"]) + 1 for r in rows)
        assert plan.sources[0]["documents"] == len(rows)
        assert sum(b["input_ids"].shape[0] for b in ds) == plan.num_samples > 0
    found, missing = find_documents([str(out)], [first, "e"])
    assert [f["doc_id"] for f in found] == [first] and missing == ["e"]


def test_a_mixture_source_without_a_window_is_refused_unless_its_weight_is_0(
    url, tmp_path, ray_session, bpe_path
):
    """An output whose every record was rejected (or whose documents are empty) has no window:
    its sampling rate came out 0, so a 0.5 / 0.5 mixture silently read the other output alone
    (plan shares 1.0 / 0.0). Now the loader says so; with weight 0 it is accepted."""
    from pipeline.errors import LoaderError
    from pipeline.tokenize import run_job

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rejects.jsonl").write_text('42\n[1, 2]\n{"id": "e", "text": ""}\n')
    empty = tmp_path / "empty"
    assert run_job(job_config(tmp_path / "in" / "*.jsonl", empty, f"bpe:{bpe_path}")).complete
    with pytest.raises(LoaderError, match=rf"mixture source {empty} has no window .* 0 stream"):
        dataset([url, str(empty)], weights=[0.5, 0.5]).plan()
    plan = dataset([url, str(empty)], weights=[1, 0]).plan()
    assert [s["share"] for s in plan.sources] == [1.0, 0.0]


def test_an_epoch_with_no_batch_says_so(url):
    """A seq_len or batch larger than the output gave an empty epoch without a word: a training
    loop then ran no step. It warns with what the output holds and the way out."""
    with pytest.warns(UserWarning, match=r"holds no batch: [\d,]+ stream tokens make 0 window"):
        assert list(TokenDataset(url, 1 << 24, batch_size=BATCH, eos_id=EOS)) == []
    ds = TokenDataset(url, 1 << 24, batch_size=BATCH, eos_id=EOS, drop_last=False)
    assert len(list(ds)) == 1  # (the padded partial window)
    with pytest.warns(UserWarning, match=r"window\(s\) .*\(best_fit\), fewer than batch_size=4096"):
        assert list(TokenDataset(url, 1 << 24, batch_size=4096, packing="best_fit")) == []
    # a mixture stopping at its first exhausted source: drop_last=False gives nothing either,
    # so the warning does not offer it
    mix = {"batch_size": BATCH, "eos_id": EOS, "stopping_strategy": "first_exhausted"}
    with pytest.warns(
        UserWarning, match=r"make 0 window\(s\) of seq_len \+ 1 = \d+ tokens \(concat\)$"
    ):
        assert list(TokenDataset([url, url], 1 << 24, **mix)) == []
    assert list(TokenDataset([url, url], 1 << 24, drop_last=False, **mix)) == []
    with pytest.raises(ValueError, match="must be finite, non-negative, not all 0"):
        TokenDataset([url, url], SEQ, weights=[1.0, float("nan")])
    # options the kernels divide by or repeat (a numba TypingError, a ZeroDivisionError, an
    # unpacking error before)
    for bad, match in (
        ({"group_shards": 0}, r"group_shards \(0\) must be an int >= 1"),
        ({"mix_block": 0}, r"mix_block \(0\) must be an int >= 1"),
        ({"chunk_tokens": -1}, r"chunk_tokens \(-1\) must be an int >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            TokenDataset([url, url], SEQ, **bad)
    with pytest.raises(ValueError, match="no outputs given"):
        TokenDataset([], SEQ)


def test_a_url_that_is_no_output_says_what_it_is(url, tmp_path):
    """A missing folder said 'no committed shards (ledger/ is empty)', and a file's path (say,
    the input instead of the output) ended in NotADirectoryError."""
    from pipeline.loader import LoaderError

    with pytest.raises(LoaderError, match=r"output .*/missing does not exist$"):
        TokenDataset(str(tmp_path / "missing"), SEQ)
    (tmp_path / "some.jsonl").write_text("{}\n")
    with pytest.raises(LoaderError, match=r"some.jsonl is a file: give the output folder"):
        TokenDataset(str(tmp_path / "some.jsonl"), SEQ)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoaderError, match=r"empty has no committed shards \(ledger/ is empty\)"):
        TokenDataset(str(tmp_path / "empty"), SEQ)


def test_an_output_whose_units_disagree_on_eos_needs_it_named(url, tmp_path):
    """An output resumed after a tokenizer_config.json moved its EOS (refused at run time now)
    held entries of two eos_ids; the loader took the first entry's without a word."""
    from pipeline.loader import LoaderError

    mixed = tmp_path / "mixed"
    shutil.copytree(url, mixed)
    path = sorted((mixed / "ledger").glob("*.json"))[-1]
    entry = json.loads(path.read_text())
    entry["tokenizer"]["eos_id"] += 1
    path.write_text(json.dumps(entry))
    with pytest.raises(LoaderError, match=r"mixes eos_ids \[\d+, \d+\] across its units"):
        TokenDataset(str(mixed), SEQ)
    eos = json.loads((mixed / "job.json").read_text())["tokenizer"]["eos_id"]
    assert TokenDataset(str(mixed), SEQ, eos_id=eos).eos_id == eos
