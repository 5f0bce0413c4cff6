"""Loader benchmark: tokens/s TokenDataset delivers into a training loop (0 and 2 DataLoader
workers) against the ceiling of reading the same shards straight into numpy arrays in one
process, and against litdata's StreamingDataset + TokensLoader over the same tokens; with --mix,
also a mixture of two outputs (weights, all_exhausted, best_fit packing, cu_seqlens) against the
ceiling of both outputs and litdata's CombinedStreamingDataset of the two, a row per label format
(--labels: "ids", a labels tensor; "mask", targets + target_mask); without workers, a row per
--prefetch value (chunks a thread fills ahead; 0: every fill between the batches); with
--plans, the padding and cut-document fractions plan() reports for concat and best_fit at each
seq_len.

    .venv-bench/bin/python -m bench.loader --output /tmp/tokenmill-bench-loader/out \
        [--input '/tmp/tokenmill-bench-corpus/corpus/*.jsonl' --tokenizer bpe:/path/bpe.json] \
        [--mix OUT_A OUT_B [--mix-inputs GLOB_A GLOB_B] --mix-weights 0.7 0.3] \
        [--labels ids mask] [--prefetch 0 1] [--step-us US] [--plans]

The output is tokenized by the engine first when it holds no ledger yet (then reused). litdata is
measured when it is importable (the bench environment, `make bench-env`; never the project
venv): the output's documents, each followed by EOS (exactly the stream TokenDataset packs), are
converted once into litdata's optimized format under --litdata-cache (per dtype), then read with
StreamingDataset(item_loader=TokensLoader(block_size=seq_len + 1)) through litdata's
StreamingDataLoader, unshuffled and shuffled. Nothing is downloaded.

Every figure is the best of --repeat whole epochs (worker start-up included, both sides) of one
dataset and loader made once, as a training job makes them (tokenmill: set_epoch(0, 1, ...);
litdata's loader moves to the next epoch itself), each batch touched as a training step would
(input/label split, one element read; with --labels mask, input/target split and one element
of the targets and of the target mask read). The ceiling is
every committed shard's token column materialised as the dtype the loaders deliver, measured
alternately with each TokenDataset row (same load on both). Without workers the table also gives
the ratio in CPU time of the one process, all its threads (robust to other processes on a
shared machine; a prefetch thread's work counts there, so that ratio is lower than the wall
one with prefetch). --step-us N adds a training step to every batch: N us of busy work outside
the GIL (a numba nogil loop, what a step waiting on its GPU looks like to the host); the
TokenDataset figures are then tokens per second of the time outside the steps (what the loader
costs the training loop) and its CPU time less the steps'. The mixture table's "loader alone"
is tokens per second of the time the loop waits in the loader's `next()` (iterator creation
included): the ceiling is a loop with no per-batch work, while the bench's touch of each batch
(the dict lookups, two or three torch indexings and `int()`s, 5-7 us a batch here) is the
training loop's own cost, the same for any loader; both figures are printed.
Prints a table, and writes the JSON with --json.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from pipeline.loader import TokenDataset, committed_shards

DTYPES = {"int64": torch.int64, "int32": torch.int32}
MIX_OPTIONS = {"packing": "best_fit", "seq_lens": True, "stopping_strategy": "all_exhausted"}


def ensure_output(output: str, inputs: str | None, tokenizer: str | None) -> None:
    if os.path.isdir(os.path.join(output, "ledger")) and os.listdir(os.path.join(output, "ledger")):
        return
    if not inputs or not tokenizer:
        raise SystemExit(f"{output} has no ledger: pass --input and --tokenizer to build it")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.tokenize import load_config, run_job

    run_job(load_config(input=[inputs], output=output, tokenizer=tokenizer, progress=False))


def numpy_ceiling(output: str | list[str], dtype: str) -> dict:
    """Every committed shard's tokens (of one output or several) into numpy arrays of `dtype`,
    one process, no packing."""
    outputs = [output] if isinstance(output, str) else output
    paths = [os.path.join(o, s.rel) for o in outputs for s in committed_shards(o)[0]]
    t0, c0, tokens = time.perf_counter(), time.process_time(), 0
    for path in paths:
        with pa.memory_map(path, "r") as mapped:
            reader = pa.ipc.open_file(mapped)
            for i in range(reader.num_record_batches):
                values = reader.get_batch(i).column("tokens").values.to_numpy()
                tokens += len(values.astype(dtype))
    return rates(tokens, t0, c0)


def rates(tokens: int, t0: float, c0: float) -> dict:
    """Tokens per wall-clock and per CPU second of this process since (t0, c0)."""
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu,
    }


def best(runs: int, epochs: Iterator[dict]) -> dict:
    return max(itertools.islice(epochs, runs), key=lambda r: r["tokens_per_s"])


def interleaved(
    runs: int, output: str | list[str], dtype: str, epochs: Iterator[dict]
) -> tuple[dict, dict]:
    """Best of `runs` of the ceiling and of the loader's epochs, alternated, so both see the
    same load (other processes on a shared machine move both figures together)."""
    pairs = [(numpy_ceiling(output, dtype), next(epochs)) for _ in range(runs)]
    ceiling = max((p[0] for p in pairs), key=lambda r: r["tokens_per_s"])
    result = max((p[1] for p in pairs), key=lambda r: r["tokens_per_s"])
    ceiling["tokens_per_cpu_s"] = max(p[0]["tokens_per_cpu_s"] for p in pairs)  # best of each
    result["tokens_per_cpu_s"] = max(p[1]["tokens_per_cpu_s"] for p in pairs)
    if "tokens_per_loader_s" in result:
        result["tokens_per_loader_s"] = max(p[1]["tokens_per_loader_s"] for p in pairs)
    return ceiling, result


def consume(loader, split, step=None) -> dict:
    """tokens/s over the loop; tokens per CPU second of this process (with workers that leaves
    their work out: only meaningful without). `split(batch)` -> (inputs, labels or targets,
    target mask or None): one element of each is read, as a training step touches them.
    `step()`: a training step after each batch; its time is left out of both figures."""
    t0, c0, tokens, checksum, stepped = time.perf_counter(), time.process_time(), 0, 0, 0.0
    clock = time.perf_counter
    batches, inside = iter(loader), clock() - t0  # inside: seconds the loop waits on the loader
    while True:
        s = clock()
        batch = next(batches, None)
        inside += clock() - s
        if batch is None:
            break
        inputs, labels, mask = split(batch)
        tokens += inputs.numel()
        checksum ^= int(labels[0, -1])
        if mask is not None:
            checksum ^= int(mask[0, -1])
        if step is not None:
            s = time.perf_counter()
            step()
            stepped += time.perf_counter() - s
    return {**rates(tokens, t0 + stepped, c0 + stepped), "tokens_per_loader_s": tokens / inside}


def gil_free_step(us: float):
    """A step of about `us` microseconds of busy work outside the GIL (a numba nogil loop: to
    the host, a training step that waits on its GPU spins like this, the GIL released)."""
    import numba

    @numba.njit(nogil=True)
    def spin(n: int) -> int:
        x = 0
        for i in range(n):
            x = (x + i * 7) % 1000003
        return x

    spin(1000)
    t = time.perf_counter()
    spin(10_000_000)
    per_us = 10_000_000 / ((time.perf_counter() - t) * 1e6)
    n = max(1, int(us * per_us))
    return lambda: spin(n)


def split_ids(batch: dict) -> tuple:
    return batch["input_ids"], batch["labels"], None


def split_mask(batch: dict) -> tuple:
    return batch["input_ids"], batch["targets"], batch["target_mask"]


def tokenmill_epochs(
    output: str | list[str], workers: int, seq_len: int, batch: int, **options
) -> Iterator[dict]:
    """Whole epochs 0, 1, ... through ds.dataloader(): what a training loop receives. The
    dataset and loader are made once, as a training job makes them (workers start anew each
    epoch, and that is timed)."""
    slots = options.pop("shared_slots", True)
    persistent = options.pop("persistent", False)
    step = options.pop("step", None)
    ds = TokenDataset(output, seq_len, seed=0, batch_size=batch, **options)
    loader = ds.dataloader(num_workers=workers, shared_slots=slots, persistent_workers=persistent)
    split = split_mask if ds.labels == "mask" else split_ids
    for epoch in itertools.count():
        ds.set_epoch(epoch)
        result = consume(loader, split, step)
        yield {**result, "dropped_tokens": ds.plan().dropped_tokens}


# -- litdata -----------------------------------------------------------------------------------


def _document_items(shard_path: str, eos_id: int, dtype: str):
    """litdata optimize fn: one item per document, its tokens then EOS (TokenDataset's stream)."""
    with pa.memory_map(shard_path, "r") as mapped:
        reader = pa.ipc.open_file(mapped)
        for i in range(reader.num_record_batches):
            column = reader.get_batch(i).column("tokens")
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy()
            for a, b in zip(offsets[:-1], offsets[1:], strict=True):
                doc = np.empty(b - a + 1, dtype=dtype)
                doc[:-1] = values[a:b]
                doc[-1] = eos_id
                yield torch.from_numpy(doc)


def litdata_dir(output: str, dtype: str, cache: str, chunk_tokens: int) -> str:
    """The output's tokens in litdata's optimized format (made once per ledger and dtype)."""
    import functools

    from litdata import TokensLoader, optimize

    shards, tokenizer = committed_shards(output)
    key = json.dumps([[s.rel, s.checksum] for s in shards] + [dtype, chunk_tokens])
    path = os.path.join(cache, hashlib.sha256(key.encode()).hexdigest()[:16] + f"-{dtype}")
    if os.path.exists(os.path.join(path, "index.json")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    optimize(
        fn=functools.partial(_document_items, eos_id=tokenizer["eos_id"], dtype=dtype),
        inputs=[os.path.join(output, s.rel) for s in shards],  # ledger order, one worker
        output_dir=path,
        chunk_size=chunk_tokens,
        item_loader=TokensLoader(),
        num_workers=1,
        reorder_files=False,
        verbose=False,
        start_method="fork",  # litdata sets it process-wide: spawn would slow every later worker
    )
    return path


def litdata_epochs(
    path: str | list[str],
    workers: int,
    seq_len: int,
    batch: int,
    shuffle: bool,
    persistent: bool = False,
    weights: list[float] | None = None,
) -> Iterator[dict]:
    """Whole epochs of one StreamingDataset/StreamingDataLoader (it moves to the next epoch
    itself on every iteration), made once like tokenmill's; with several paths, litdata's
    CombinedStreamingDataset of one StreamingDataset each, sampled by `weights` (it stops when
    one runs out)."""
    from litdata import (
        CombinedStreamingDataset,
        StreamingDataLoader,
        StreamingDataset,
        TokensLoader,
    )

    parts = [
        StreamingDataset(
            p,
            item_loader=TokensLoader(block_size=seq_len + 1),
            shuffle=shuffle,
            drop_last=True,
            seed=0,
        )
        for p in ([path] if isinstance(path, str) else path)
    ]
    ds = parts[0]
    if not isinstance(path, str):
        ds = CombinedStreamingDataset(parts, seed=0, weights=weights, iterate_over_all=False)
    loader = StreamingDataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=persistent,
    )
    while True:
        yield consume(loader, lambda b: (b[:, :-1], b[:, 1:], None))


def litdata_available() -> str | None:
    try:
        import litdata
    except ImportError as error:
        return f"litdata not importable ({error}): run from .venv-bench (make bench-env)"
    import inspect

    if "verbose" not in inspect.signature(litdata.optimize).parameters:  # (the project venv's
        # litdata, pulled in by the export-check extra, is older than the bench venv's)
        return f"litdata {litdata.__version__} is older than the bench's: run from .venv-bench"
    return None


# -- transport floors --------------------------------------------------------------------------


class _Batches(torch.utils.data.IterableDataset):
    """Yields zero tensors shaped like one batch (or a tiny tuple): no work at all."""

    def __init__(self, batches: int, shape: tuple[int, int] | None):
        super().__init__()
        self.batches, self.shape = batches, shape

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        for i in range(self.batches // (info.num_workers if info else 1)):
            yield (i, 0) if self.shape is None else torch.zeros(self.shape, dtype=torch.int64)


def transport_floor(workers: int, shape: tuple[int, int] | None, batches: int = 1000) -> float:
    """Batches/s a DataLoader moves when the dataset does no work: one [B, seq_len + 1] tensor
    per batch (torch's shared-memory segment per tensor), or only a small tuple (the
    per-message cost that shared slots still pay)."""
    loader = torch.utils.data.DataLoader(
        _Batches(batches, shape),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    t0, n = time.perf_counter(), 0
    for _ in loader:
        n += 1
    return n / (time.perf_counter() - t0)


def epoch_overhead(workers: int, runs: int) -> float:
    """Seconds of a whole epoch of a DataLoader whose dataset yields one tiny item: what starting
    and joining non-persistent workers costs every epoch (least of `runs`)."""
    loader = torch.utils.data.DataLoader(
        _Batches(workers, None), batch_size=None, num_workers=workers
    )
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in loader:
            pass
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/tmp/tokenmill-bench-loader/out")
    parser.add_argument("--input", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["int64", "int32"])
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["0", "2", "2p"],
        help="DataLoader workers per row; a trailing p: persistent workers (both loaders)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of N epochs of each")
    parser.add_argument("--litdata-repeat", type=int, default=2, help="best of N for litdata")
    parser.add_argument("--no-litdata", action="store_true")
    parser.add_argument("--litdata-cache", default="/tmp/tokenmill-bench-loader/litdata")
    parser.add_argument("--litdata-chunk-tokens", type=int, default=1 << 22)
    parser.add_argument("--extras", action="store_true", help="also ids, no-slot, floors")
    mix_help = "also rows of a mixture of these two outputs (best_fit, seq_lens, all_exhausted)"
    parser.add_argument("--mix", nargs=2, default=None, metavar="OUTPUT", help=mix_help)
    parser.add_argument("--mix-inputs", nargs=2, default=None, metavar="GLOB")
    parser.add_argument("--mix-weights", nargs=2, type=float, default=[0.7, 0.3])
    parser.add_argument(
        "--labels",
        nargs="+",
        choices=["ids", "mask"],
        default=["ids", "mask"],
        help="label formats of the --mix rows (a row each): labels, or targets + target_mask",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        nargs="+",
        default=[0, 1],
        help="rows without workers: TokenDataset(prefetch=...) values (chunks filled ahead)",
    )
    parser.add_argument(
        "--step-us",
        type=float,
        default=0.0,
        help="TokenDataset rows: a GIL-free busy step of this many us after every batch, left out",
    )
    parser.add_argument("--no-plain", action="store_true", help="only the --mix rows")
    parser.add_argument("--plans", action="store_true", help="padding / cut documents per packing")
    parser.add_argument("--json", default=None, help="write the results here too")
    return parser.parse_args()


def measure_row(
    args: argparse.Namespace,
    dtype: str,
    seq_len: int,
    spec: str,
    lit: str | list[str] | None,
    mix: bool = False,
    labels: str = "ids",
    prefetch: int | None = None,
) -> dict:
    """One table row: the numpy ceiling, tokenmill and (when measured) litdata at one setting;
    `mix`: the two --mix outputs (ceiling of both; TokenDataset with weights, all_exhausted,
    best_fit and cu_seqlens; litdata's CombinedStreamingDataset); `labels`: the label format
    ("mask": targets + target_mask, the batch touched as a step would, one mask element too);
    `prefetch`: TokenDataset(prefetch=) (None: its default)."""
    workers, persistent = int(spec.rstrip("p")), spec.endswith("p")
    outputs, options = (args.mix, MIX_OPTIONS) if mix else (args.output, {})
    options = {**options, "weights": args.mix_weights} if mix else options
    options = {**options, "labels": labels}
    if prefetch is not None:
        options["prefetch"] = prefetch
    if args.step_us:
        options["step"] = args.step
    epochs = tokenmill_epochs(
        outputs, workers, seq_len, args.batch, dtype=DTYPES[dtype], persistent=persistent, **options
    )
    ceiling, tm = interleaved(args.repeat, outputs, dtype, epochs)
    row = {"seq_len": seq_len, "dtype": dtype, "workers": spec, "mix": mix, "labels": labels}
    row.update(prefetch=prefetch, step_us=args.step_us)
    row.update(ceiling=ceiling["tokens_per_s"], tokenmill=tm["tokens_per_s"])
    row["tokenmill_tokens"] = tm["tokens"]
    row["tokenmill_alone"] = tm["tokens_per_loader_s"]
    if workers == 0:  # one process on both sides: CPU time is comparable too
        row["ceiling_cpu"] = ceiling["tokens_per_cpu_s"]
        row["tokenmill_cpu"] = tm["tokens_per_cpu_s"]
    for shuffle in (False, True) if lit and not mix else (True,) if lit else ():
        lit_row = best(
            args.litdata_repeat,
            litdata_epochs(
                lit, workers, seq_len, args.batch, shuffle, persistent, args.mix_weights
            ),
        )
        name = "combined" if mix else "shuffle" if shuffle else "ordered"
        row[f"litdata_{name}"] = lit_row["tokens_per_s"]
    return row


def packing_plans(args: argparse.Namespace) -> list[dict]:
    """plan() of --output per seq_len and packing: padding and cut-document fractions."""
    found = []
    for seq_len in args.seq_lens:
        for packing in ("concat", "best_fit"):
            ds = TokenDataset(args.output, seq_len, batch_size=args.batch, packing=packing)
            plan = ds.plan()
            found.append(
                {
                    "seq_len": seq_len,
                    "packing": packing,
                    "samples": plan.num_samples,
                    "padding_fraction": plan.padding_fraction,
                    "split_fraction": plan.split_fraction,
                    "dropped_tokens": plan.dropped_tokens,
                }
            )
            print(found[-1], flush=True)
    return found


def run_rows(args: argparse.Namespace, skip: str | None) -> list[dict]:
    rows = []
    for dtype in args.dtypes:
        lit_path, lit_mix = None, None
        if not args.no_plain:
            numpy_ceiling(args.output, dtype)  # warm the page cache: every contender reads it
            if not skip:
                lit_path = litdata_dir(
                    args.output, dtype, args.litdata_cache, args.litdata_chunk_tokens
                )
        if args.mix:
            numpy_ceiling(args.mix, dtype)
            if not skip:
                lit_mix = [
                    litdata_dir(o, dtype, args.litdata_cache, args.litdata_chunk_tokens)
                    for o in args.mix
                ]
        for seq_len in args.seq_lens:
            for spec in args.workers:
                # (prefetch is for a process that reads itself: one row per value without
                # workers, the default with them)
                for i, prefetch in enumerate(args.prefetch if spec == "0" else [None]):
                    if not args.no_plain:
                        lit = lit_path if i == 0 else None  # litdata: once
                        rows.append(
                            measure_row(args, dtype, seq_len, spec, lit, False, "ids", prefetch)
                        )
                        print(_line(rows[-1]), flush=True)
                    for labels in args.labels if args.mix else ():
                        lit = lit_mix if labels == args.labels[0] and i == 0 else None
                        rows.append(
                            measure_row(args, dtype, seq_len, spec, lit, True, labels, prefetch)
                        )
                        print(_line(rows[-1]), flush=True)
    return rows


def main() -> None:
    args = parse_args()
    args.step = gil_free_step(args.step_us) if args.step_us else None
    if not args.no_plain:
        ensure_output(args.output, args.input, args.tokenizer)
    for i, output in enumerate(args.mix or []):
        ensure_output(output, args.mix_inputs and args.mix_inputs[i], args.tokenizer)
    skip = "--no-litdata given" if args.no_litdata else litdata_available()
    if skip:
        print(f"litdata: not measured ({skip})")
    result = {
        "output": args.output,
        "mix": args.mix,
        "mix_weights": args.mix_weights,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "litdata": skip or "measured",
        "step_us": args.step_us,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.plans:
        result["plans"] = packing_plans(args)
    result["rows"] = rows = run_rows(args, skip)
    if args.extras:
        result["extras"] = extras(args)
    if not args.no_plain:
        print(table([r for r in rows if not r.get("mix")]))
    if args.mix:
        print(mix_table([r for r in rows if r.get("mix")]))
    if args.extras:
        for name, value in result["extras"].items():
            print(
                f"{name}: {value:.3f}"
                if name.endswith("(s)")
                else f"{name}: {value / 1e6:.1f} M tokens/s"
            )
    result["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def _prefetch(row: dict) -> str:
    return "-" if row.get("prefetch") is None else str(row["prefetch"])


def mix_table(rows: list[dict]) -> str:
    head = "| seq_len | dtype | workers | prefetch | labels | ceiling (2 outputs) "
    head += "| tokenmill mix+best_fit+seq_lens "
    head += "| vs ceiling | (CPU time) | (loader alone) "
    lines = [head + "| litdata Combined | tokenmill/litdata |"]
    lines.append("|" + "---|" * 12)
    for r in rows:
        cpu = f"{r['tokenmill_cpu'] / r['ceiling_cpu']:.2f}" if "ceiling_cpu" in r else "-"
        lit = r.get("litdata_combined")
        lit_cells = f"| {lit / 1e6:.1f} M | {r['tokenmill'] / lit:.2f} |" if lit else "| - | - |"
        lines.append(
            f"| {r['seq_len']} | {r['dtype']} | {r['workers']} | {_prefetch(r)} "
            f"| {r.get('labels', 'ids')} | {r['ceiling'] / 1e6:.0f} M "
            f"| {r['tokenmill'] / 1e6:.1f} M | {r['tokenmill'] / r['ceiling']:.2f} | {cpu} "
            f"| {r['tokenmill_alone'] / r['ceiling']:.2f} " + lit_cells
        )
    return "\n".join(lines)


def extras(args: argparse.Namespace) -> dict:
    """seq_len[0] int64: ids options, the per-tensor worker path, and the DataLoader floors."""
    seq_len, batch, out = args.seq_lens[0], args.batch, {}
    for workers in sorted({int(spec.rstrip("p")) for spec in args.workers}):
        out[f"{workers} workers, position_ids + document_ids"] = best(
            args.repeat,
            tokenmill_epochs(
                args.output, workers, seq_len, batch, position_ids=True, document_ids=True
            ),
        )["tokens_per_s"]
        if workers:
            out[f"{workers} workers, shared_slots=False"] = best(
                args.repeat,
                tokenmill_epochs(args.output, workers, seq_len, batch, shared_slots=False),
            )["tokens_per_s"]
            out[f"{workers} workers, an epoch of nothing (s)"] = epoch_overhead(
                workers, args.repeat
            )
            for name, shape in (("one int64 tensor", (batch, seq_len + 1)), ("a tuple", None)):
                rate = max(transport_floor(workers, shape) for _ in range(args.repeat))
                out[f"{workers} workers, DataLoader floor ({name} per batch)"] = (
                    rate * batch * seq_len
                )
    return out


def _line(row: dict) -> str:
    return " ".join(
        f"{k}={v / 1e6:.1f}M" if isinstance(v, float) and k != "step_us" else f"{k}={v}"
        for k, v in row.items()
    )


def table(rows: list[dict]) -> str:
    head = (
        "| seq_len | dtype | workers | prefetch | ceiling | tokenmill | vs ceiling | (CPU time) "
        "| litdata ordered | litdata shuffled | tokenmill/litdata (ordered, shuffled) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lit_o, lit_s = r.get("litdata_ordered"), r.get("litdata_shuffle")
        cpu = f"{r['tokenmill_cpu'] / r['ceiling_cpu']:.2f}" if "ceiling_cpu" in r else "-"
        lines.append(
            f"| {r['seq_len']} | {r['dtype']} | {r['workers']} | {_prefetch(r)} "
            f"| {r['ceiling'] / 1e6:.0f} M "
            f"| {r['tokenmill'] / 1e6:.1f} M | {r['tokenmill'] / r['ceiling']:.2f} | {cpu} "
            + (
                f"| {lit_o / 1e6:.1f} M | {lit_s / 1e6:.1f} M "
                f"| {r['tokenmill'] / lit_o:.2f}, {r['tokenmill'] / lit_s:.2f} |"
                if lit_o
                else "| - | - | - |"
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
