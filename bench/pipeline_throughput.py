"""Pipeline throughput, measured side by side in one run on the bench corpus (English + German by
default; bench/build_corpus.sh), with a 32k byte-level BPE trained on it. Rows (`--rows`):

  encoders  raw encoders, no I/O, 1 and 2 threads: `tokenizers` (encode_batch_fast), tiktoken,
            gigatoken with Python lists and with flat output; `--encode-mb` of the corpus, one pass
            (cold: a new stream for gigatoken's caches). The ceiling: gigatoken flat over the
            whole 1x corpus, 2 processes x 1 thread and 1 process x 2 threads (the better), cold
            (first pass) and warm (second pass), each the median of `--ceiling-repeat` runs.
  run       `tokenmill run` end to end at each `--scales` (k = k copies of the corpus under other
            names), in each of `--run-modes`: `default` (what the command does by itself: the
            driver tokenizes at once and starts Ray only when the job needs it), `actors`
            (`--actors CORES`: Ray and its actors from the start, as on a cluster) and `helpers`
            (`--driver-processes`: the driver's workers after the first in helper processes,
            its default from 4 CPUs on) and `threads` (`--no-driver-processes`: threads only, the
            default on fewer). MB/s, peak RSS
            of all processes, the rate between the first and the last unit commit; steady
            state = the marginal rate between the smallest and largest scale, against the flat
            ceiling. With `--paired-ceiling` the cold ceiling is measured again before each
            round of runs and each round's ratios are given against it, and against the
            encoder alone doing the same work (gigatoken flat streamed once over the 1x and
            the largest scale's corpus: its caches warm up on the copies as a run's encoder
            does), in wall clock and in MB per CPU second (not with actors: Ray's processes
            are not the run's children); CPU seconds move far less with the machine's other
            load than a few seconds of wall clock do.
  datatrove datatrove's DocumentTokenizer (its `tokenizers` encoder) on the same files and
            tokenizer, at `--datatrove-scales` (needs the bench venv: make bench-env).
  startup   a one-document `tokenmill run` against a bare `ray.init(); ray.shutdown()`, same venv.
  zst       the largest scale as one .jsonl.zst against the same lines in 8 .jsonl.zst files
            (`--actors CORES` both).
  llama3    a Split-regex (Llama-3 style) tokenizer.json trained here: the backend tokenmill picks,
            its ids against `tokenizers` on the sample, and a `tokenmill run` at 1x.
  stages    one `--unit-mb` unit through `process_unit` in one process (bpe on its fast encoder):
            MB/s of every stage (read, tokenize, verify, stats, write) on a first (cold) and a
            later pass; with `--baseline DIR` (a checkout of another revision, e.g. `git archive
            REV | tar -x -C DIR`) the same for that tree, alternating, in the same run.

  .venv/bin/python bench/pipeline_throughput.py                    # all rows (~15 min on 2 cores)
  .venv/bin/python bench/pipeline_throughput.py --rows encoders,run --scales 1,2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.proctree import children_cpu, run_measured  # noqa: E402

CORPUS = Path(os.environ.get("TMPDIR", "/tmp")) / "tokenmill-bench-corpus" / "corpus"
ROWS = ("stages", "encoders", "run", "datatrove", "startup", "zst", "llama3")
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


# -- corpus and tokenizers ----------------------------------------------------------------------


def prepare(
    corpus: Path, langs: list[str], work: Path, part_mb: int, scales: list[int]
) -> dict[int, Path]:
    """Split the corpus into ~part_mb files; scale k = k hard-linked copies under other names
    (not symlinks: tokenmill plans a file reached through a symlink as the file itself)."""
    base = work / "x1"
    stamp = json.dumps({"corpus": str(corpus), "langs": langs, "part_mb": part_mb})
    if (
        base.exists()
        and (work / "x1.params").exists()
        and (work / "x1.params").read_text() != stamp
    ):
        for d in work.glob("x*"):  # (made for other --langs / --part-mb: they were reused)
            shutil.rmtree(d) if d.is_dir() else d.unlink()
        for old in work.glob("bpe-*.json*"):
            old.unlink()
    if not base.exists():
        base.mkdir(parents=True)
        part, size, index = None, 0, 0
        for lang in langs:
            with open(corpus / f"{lang}.jsonl", "rb") as handle:
                for line in handle:
                    if part is None or size >= part_mb << 20:
                        if part:
                            part.close()
                        part = open(base / f"part-{index:03d}.jsonl", "wb")  # noqa: SIM115
                        index, size = index + 1, 0
                    part.write(line)
                    size += len(line)
        part.close()
        (work / "x1.params").write_text(stamp)
    dirs = {1: base}
    for k in scales:
        if k == 1:
            continue
        d = work / f"x{k}"
        if d.exists() and any(f.is_symlink() for f in d.iterdir()):
            shutil.rmtree(d)  # made by an earlier version of this script
        if not d.exists():
            d.mkdir()
            for copy in range(k):
                for f in sorted(base.glob("*.jsonl")):
                    os.link(f, d / f"{f.stem}-c{copy}.jsonl")
        dirs[k] = d
    return dirs


def _train_texts(files: list[Path], train_mb: int):
    budget = train_mb << 20
    for f in files[::2]:
        with open(f, encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                budget -= len(text)
                if budget < 0:
                    return
                yield text


def train_tokenizer(files: list[Path], work: Path, vocab: int, train_mb: int, style: str) -> Path:
    """A byte-level BPE trained on the corpus: GPT-2 style, or Llama-3 style (a Split regex, then
    ByteLevel without its own regex) for style "split"."""
    path = work / f"bpe-{style}-{vocab}.json"
    stamp, params = path.with_suffix(".json.params"), json.dumps({"train_mb": train_mb})
    if path.exists() and (not stamp.exists() or stamp.read_text() == params):
        return path
    t0 = time.perf_counter()
    if style == "gpt2":
        from tokenizers_impl.bpe import BPETokenizer

        BPETokenizer.train(_train_texts(files, train_mb), vocab_size=vocab).save(str(path))
    else:
        from tokenizers_impl.bpe import train_byte_level
        from tokenizers_impl.encoders.patterns import LLAMA3_PATTERN

        specials = ["<|begin_of_text|>", "<|end_of_text|>"]
        texts = _train_texts(files, train_mb)
        train_byte_level(texts, vocab, specials, split_pattern=LLAMA3_PATTERN).save(str(path))
    stamp.write_text(params)
    print(f"trained {style} {vocab}-token BPE in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def sample_texts(files: list[str], mb: float) -> list[str]:
    """About `mb` MB of the corpus (UTF-8), every k-th document so that every file contributes."""
    texts = []
    for f in files:
        with open(f, encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle]
    if mb <= 0:
        return texts
    total = sum(len(t.encode("utf-8")) for t in texts)
    step = max(1, round(total / (mb * 1e6)))
    return texts[::step]


# -- raw encoders ---------------------------------------------------------------------------------


def _encode_worker(args: tuple) -> dict:
    """One process: load the tokenizer, wait for the others, encode `texts` `passes` times."""
    kind, tok_path, files, mb, share, threads, passes, barrier = args
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    from tokenizers_impl import load_tokenizer

    backend = "gigatoken" if kind.startswith("gigatoken") else kind
    tok = load_tokenizer(f"bpe:{tok_path}", encoder=backend)
    texts = sample_texts(files, mb)
    texts = texts[share[0] :: share[1]]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    encode = _encode_function(kind, tok, threads)
    batches = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    barrier.wait()
    seconds, cpu, tokens = [], [], 0
    for _ in range(passes):
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = sum(encode(b) for b in batches)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"bytes": nbytes, "tokens": tokens, "seconds": seconds, "cpu": cpu,
            "encoder": tok.encoder}  # fmt: skip


def _encode_function(kind: str, tok, threads: int):
    """A function encoding one batch the way the row names it; returns the number of tokens."""
    encoder = tok._encoder
    if kind == "tokenizers":
        hf = encoder.hf
        return lambda b: sum(len(e.ids) for e in hf.encode_batch_fast(b, add_special_tokens=False))
    if kind == "tiktoken":
        enc = encoder.encoding
        return lambda b: sum(map(len, enc.encode_ordinary_batch(b, num_threads=threads)))
    backend = encoder._backend  # gigatoken's own encoder, as the engine's backend holds it
    if kind == "gigatoken-lists":
        return lambda b: sum(map(len, backend.encode_batch_list(b, parallel=threads > 1)))
    import numpy as np

    def flat(b):  # what GigatokenEncoder.encode_flat reads: the layout's flat buffers
        layout = backend.encode_batch(b, parallel=threads > 1).layout
        return len(np.asarray(layout.content.data, dtype=np.uint32))

    return flat


def raw_encoder(kind: str, tok_path: Path, files: list[str], mb: float, procs: int, threads: int,
                passes: int = 1) -> dict:  # fmt: skip
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(procs) as pool:
        barrier = manager.Barrier(procs)
        args = [(kind, str(tok_path), files, mb, (i, procs), threads, passes, barrier)
                for i in range(procs)]  # fmt: skip
        out = pool.map(_encode_worker, args)
    nbytes, tokens = sum(o["bytes"] for o in out), sum(o["tokens"] for o in out)
    walls = [max(o["seconds"][p] for o in out) for p in range(passes)]
    return {
        "config": f"{procs} process{'es' if procs > 1 else ''} x {threads} thread"
        f"{'s' if threads > 1 else ''}",
        "encoder": out[0]["encoder"],
        "bytes": nbytes,
        "tokens": tokens,
        "mb_s": [nbytes / 1e6 / w for w in walls],
        # MB per CPU second (all processes' CPU): what a core gives, whatever else runs beside
        "mb_cpu_s": [nbytes / 1e6 / sum(o["cpu"][p] for o in out) for p in range(passes)],
    }


def encoder_rows(tok_path: Path, files: list[str], args) -> dict:
    res: dict = {}
    for kind in ("tokenizers", "tiktoken", "gigatoken-lists", "gigatoken-flat"):
        for threads in (1, 2):
            r = raw_encoder(kind, tok_path, files, args.encode_mb, 1, threads)
            res[f"{kind}/{threads}"] = r
            print(f"  {kind:16s} {threads} thread(s) {r['mb_s'][0]:8.2f} MB/s", flush=True)
    ceiling = {}
    for procs, threads in ((args.cores, 1), (1, args.cores)):
        reps = [raw_encoder("gigatoken-flat", tok_path, files, 0, procs, threads, passes=2)
                for _ in range(args.ceiling_repeat)]  # fmt: skip
        r = {**reps[0], "mb_s": [statistics.median(x["mb_s"][p] for x in reps) for p in (0, 1)],
             "runs": [x["mb_s"] for x in reps]}  # fmt: skip
        ceiling[r["config"]] = r
        print(f"  ceiling {r['config']}: cold {r['mb_s'][0]:.1f}, warm {r['mb_s'][1]:.1f} MB/s "
              f"(medians of {[[round(v) for v in x] for x in r['runs']]})")  # fmt: skip
    best = max(ceiling.values(), key=lambda r: r["mb_s"][0])
    warm = max(r["mb_s"][1] for r in ceiling.values())  # (the better warm: of either layout)
    res["ceiling"] = {**best, "mb_s": [best["mb_s"][0], warm], "all": ceiling}
    return res


# -- one unit, per stage --------------------------------------------------------------------------

STAGES = ("read_s", "tokenize_s", "verify_s", "stats_s", "write_s", "total_s")


def stage_worker(tree: str, unit_path: str, tok_path: str, passes: int, cpu: bool) -> None:
    """Runs in its own process: `process_unit` of the tree at `tree` over one file, `passes`
    times; prints the stage seconds of every pass (CPU seconds of this thread with `cpu`)."""
    sys.path.insert(0, tree)
    if cpu:
        time.perf_counter = time.thread_time  # the stage clocks of unit.py read this
    from pipeline.output.storage import Output
    from pipeline.tokenize.inputs import ReadOptions, plan_units
    from pipeline.tokenize.unit import UnitTask, process_unit
    from tokenizers_impl import load_tokenizer

    tok = load_tokenizer(f"bpe:{tok_path}")
    opts = ReadOptions(unit_bytes=1 << 40)
    task = UnitTask(opts, "0" * 16, False, True, {}, None, 0.001)
    out, result = Path(unit_path).with_suffix(f".out{os.getpid()}"), []
    for _ in range(passes):
        shutil.rmtree(out, ignore_errors=True)
        entries = [process_unit(u, tok, task, Output(str(out))).entry
                   for u in plan_units([unit_path], opts)]  # fmt: skip
        result.append({k: sum(e.timings.get(k, 0) for e in entries) for k in STAGES})
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"encoder": tok.encoder, "passes": result, "checksums":
                      [e.shard_checksum for e in entries]}))  # fmt: skip


def stage_rows(files: list[str], work: Path, tok_path: Path, args) -> dict:
    unit = work / f"unit-{args.unit_mb}mb.jsonl"
    if not unit.exists():
        with open(unit, "wb") as sink:
            left = int(args.unit_mb * 1e6)
            for f in files:
                for line in open(f, "rb"):  # noqa: SIM115
                    if left <= 0:
                        break
                    sink.write(line)
                    left -= len(line)
    trees = {"this tree": str(REPO), **({"baseline": str(args.baseline)} if args.baseline else {})}
    res: dict = {name: [] for name in trees}
    for _ in range(args.stage_repeat):
        for name, tree in trees.items():
            cmd = [sys.executable, __file__, "--stage-worker", tree, str(unit), str(tok_path),
                   str(args.stage_passes), "1" if args.stage_cpu else "0"]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res[name].append(json.loads(out.strip().splitlines()[-1]))
    mb = unit.stat().st_size / 1e6
    for name, runs in res.items():
        for which, p in (("cold", 0), ("warm", -1)):
            rates = {k: [mb / r["passes"][p][k] if r["passes"][p][k] else float("inf") for r in runs]
                     for k in STAGES}  # fmt: skip
            print(f"  {name:9s} {which}: " + ", ".join(
                f"{k[:-2]} {min(v):.0f}-{max(v):.0f}" for k, v in rates.items()) + " MB/s")  # fmt: skip
    sums = {name: {r["checksums"][0] for r in runs} for name, runs in res.items()}
    print(f"  shard checksums: {sums}", flush=True)
    return {"unit_mb": mb, "cpu": args.stage_cpu, "runs": res}


# -- whole runs -----------------------------------------------------------------------------------


def tokenmill_run(inputs: str, out: Path, tok_path: Path, extra: list[str] = ()) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(REPO / ".venv/bin/tokenmill"), "run", "--input", inputs, "--output", str(out),
           "--tokenizer", f"bpe:{tok_path}", "--no-progress", *extra]  # fmt: skip
    cpu = children_cpu()
    wall, peak, stdout = run_measured(cmd, env={**os.environ, **RAY_ENV})
    cpu = children_cpu() - cpu
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "window_mb_s": commit_window_rate(out),
        "actors": summary.get("actors"),
        "notes": summary.get("notes"),
        "mb_s": summary["bytes"] / 1e6 / wall,
        "seconds": wall,
        "cpu_s": cpu,  # (the run's processes that it waited for: not Ray's, with actors)
        "peak_rss_mb": peak / 2**20,
        "bytes": summary["bytes"],
        "tokens": summary["tokens"],
        "encoder": summary.get("encoder"),
        "verified_documents": summary.get("verified_documents"),
        "stage_seconds": summary.get("stage_seconds"),
    }


def commit_window_rate(out: Path) -> float | None:
    """MB/s of input between the run's first and last unit commits (ledger file times): the
    rate once work flows, whatever the start-up and shutdown cost (None under 3 units)."""
    entries = sorted(((p.stat().st_mtime, json.loads(p.read_text())["bytes"])
                      for p in (out / "ledger").glob("*.json")), key=lambda e: e[0])  # fmt: skip
    if len(entries) < 3 or entries[-1][0] <= entries[0][0]:
        return None
    later = sum(text_bytes for _, text_bytes in entries[1:])  # (text, as every other rate here;
    # the units' JSON lines were ~4% more)
    return later / 1e6 / (entries[-1][0] - entries[0][0])


def datatrove_run(data: Path, out: Path, tok_path: Path, cores: int, nbytes: int) -> dict | None:
    python = REPO / ".venv-bench/bin/python"
    if not python.exists():
        print("  datatrove: no bench venv (make bench-env); skipped", flush=True)
        return None
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}-logs", ignore_errors=True)
    cmd = [str(python), str(REPO / "bench/datatrove_tokenize.py"), str(data), str(out),
           str(tok_path), str(cores)]  # fmt: skip
    wall, peak, _ = run_measured(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    tokens = sum(f.stat().st_size for f in Path(out).glob("*.ds")) // 2
    return {"mb_s": nbytes / 1e6 / wall, "seconds": wall, "peak_rss_mb": peak / 2**20,
            "tokens": tokens}  # fmt: skip


def marginal(a: dict, b: dict) -> float:
    """MB/s of the extra bytes of run b over run a (start-up and fixed costs cancel)."""
    return (b["bytes"] - a["bytes"]) / 1e6 / (b["seconds"] - a["seconds"])


def startup_rows(tok_path: Path, work: Path, files: list[str], repeat: int) -> dict:
    one = work / "one-doc"
    one.mkdir(exist_ok=True)
    with open(files[0], encoding="utf-8") as handle:
        (one / "doc.jsonl").write_text(handle.readline(), encoding="utf-8")
    ray_cmd = [
        str(REPO / ".venv/bin/python"),
        "-c",
        "import ray; ray.init(address='local'); ray.shutdown()",
    ]
    tm, ray = [], []
    for _ in range(repeat):
        tm.append(tokenmill_run(f"{one}/doc.jsonl", work / "out-one", tok_path)["seconds"])
        ray.append(run_measured(ray_cmd, env={**os.environ, **RAY_ENV})[0])
        print(f"  one-document run {tm[-1]:.1f} s, ray.init+shutdown {ray[-1]:.1f} s", flush=True)
    return {"tokenmill_s": tm, "ray_s": ray}


def zst_rows(dirs: dict[int, Path], work: Path, tok_path: Path, k: int, cores: int) -> dict:
    """The scale-k corpus as one .jsonl.zst and as 8 .jsonl.zst files of the same lines, each
    run on `cores` actors from the start (the one file is cut into ranges for all of them)."""
    import zstandard

    big, split = work / f"zst-big-{k}", work / f"zst-split-{k}"
    if not (big / "all.jsonl.zst").exists():
        for d in (big, split):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        data = b"".join(f.read_bytes() for f in sorted(dirs[k].glob("*.jsonl")))
        cctx = zstandard.ZstdCompressor(level=3)
        (big / "all.jsonl.zst").write_bytes(cctx.compress(data))
        cut, start = len(data) // 8, 0
        for i in range(8):
            end = len(data) if i == 7 else data.index(b"\n", start + cut) + 1
            (split / f"part-{i}.jsonl.zst").write_bytes(cctx.compress(data[start:end]))
            start = end
        del data
    res = {}
    for name, d in (("one file", big), ("8 files", split)):
        size = sum(f.stat().st_size for f in d.glob("*.zst")) / 1e6
        out = work / f"out-zst-{name[0]}"
        r = tokenmill_run(f"{d}/*.jsonl.zst", out, tok_path, ["--actors", str(cores)])
        res[name] = {**r, "compressed_mb": size}
        print(f"  {name}: {size:.0f} MB zstd, {r['mb_s']:.2f} MB/s, {r['seconds']:.1f} s")
    return res


def llama3_rows(files: list[str], work: Path, dirs: dict[int, Path], args) -> dict:
    """A Split-regex tokenizer.json: which backend tokenmill picks, exactness on the sample, and
    a `tokenmill run` at 1x with a larger verification sample."""
    import numpy as np

    from tokenizers_impl import load_tokenizer

    path = train_tokenizer([Path(f) for f in files], work, args.vocab, args.train_mb, "split")
    tok = load_tokenizer(f"bpe:{path}")
    texts = sample_texts(files, min(args.encode_mb, 8))
    flat, offsets = tok.encode_batch_flat(texts)
    reference = tok.reference_encode_batch(texts)
    same = all(
        np.array_equal(flat[offsets[i] : offsets[i + 1]], r) for i, r in enumerate(reference)
    )
    res = {
        "encoder": tok.encoder,
        "fallbacks": list(tok.encoder_fallbacks),
        "sample_docs": len(texts),
        "identical_to_tokenizers": same,
    }
    print(f"  Split-regex tokenizer: encoder {tok.encoder}, ids identical on {len(texts)} documents:"
          f" {same}", flush=True)  # fmt: skip
    for kind in ("tokenizers", "gigatoken-flat"):
        r = raw_encoder(kind, path, files, args.encode_mb, 1, 1)
        res[kind] = r
        print(f"  {kind:16s} 1 thread {r['mb_s'][0]:8.2f} MB/s", flush=True)
    run = tokenmill_run(
        f"{dirs[1]}/*.jsonl", work / "out-llama3", path, ["--verify-sample", "0.01"]
    )
    res["run"] = run
    print(f"  tokenmill run 1x: {run['mb_s']:.2f} MB/s, encoder {run['encoder']}, "
          f"{run['verified_documents']} documents verified", flush=True)  # fmt: skip
    return res


def run_rows(dirs: dict[int, Path], work: Path, tok_path: Path, args, res: dict) -> None:
    """Each scale `--run-repeat` times in each of `--run-modes` (default: what `tokenmill run`
    does by itself; actors: `--actors N`, Ray and N actors from the start), interleaved;
    res[f"run{k}"] / res[f"runA{k}"] is the median-time run and res[f"runs{k}"] /
    res[f"runsA{k}"] all of them."""
    modes = {
        "default": ("", []),
        "actors": ("A", ["--actors", str(args.cores)]),
        "helpers": ("H", ["--driver-processes"]),
        "threads": ("T", ["--no-driver-processes"]),
    }
    files = _files(dirs[1])
    for _ in range(args.run_repeat):
        if args.paired_ceiling:  # (this machine's speed drifts by a third over minutes)
            measured = raw_encoder("gigatoken-flat", tok_path, files, 0, args.cores, 1)
            ceiling = measured["mb_s"][0]
            res.setdefault("paired_ceilings", []).append(ceiling)
            hi = max(args.scales)  # the same stream as the runs' largest scale, streamed once
            big = raw_encoder("gigatoken-flat", tok_path, _files(dirs[hi]), 0, args.cores, 1)
            res.setdefault("paired_same_work", []).append((measured, big))
            print(f"  ceiling (cold, {args.cores} processes) before this round: {ceiling:.1f} MB/s",
                  flush=True)  # fmt: skip
        for k in args.scales:
            for mode in args.run_modes.split(","):
                tag, extra = modes[mode]
                r = tokenmill_run(f"{dirs[k]}/*.jsonl", work / f"out-tm-{k}", tok_path, extra)
                res.setdefault(f"runs{tag}{k}", []).append(r)
                window = f"{r['window_mb_s']:.0f}" if r["window_mb_s"] else "-"
                print(f"  tokenmill run {k}x ({mode}): {r['mb_s']:.2f} MB/s, {r['seconds']:.1f} "
                      f"s, {window} MB/s between first and last commit, {r['actors']} actors, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB, stages {r['stage_seconds']}",
                      flush=True)  # fmt: skip
    for k in args.scales:
        for tag in ("", "A", "H", "T"):
            if f"runs{tag}{k}" in res:
                runs = sorted(res[f"runs{tag}{k}"], key=lambda r: r["seconds"])
                res[f"run{tag}{k}"] = runs[(len(runs) - 1) // 2]


def _files(folder: Path) -> list[str]:
    return sorted(str(f) for f in folder.glob("*.jsonl"))


def datatrove_rows(dirs: dict[int, Path], work: Path, tok_path: Path, args, res: dict) -> None:
    for k in args.datatrove_scales:
        nbytes = res[f"run{k}"]["bytes"] if f"run{k}" in res else k * res["corpus_bytes"]
        r = datatrove_run(dirs[k], work / f"out-dt-{k}", tok_path, args.cores, nbytes)
        if r:
            res[f"datatrove{k}"] = r
            print(f"  datatrove {k}x: {r['mb_s']:.2f} MB/s, {r['seconds']:.1f} s, peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--langs", default="en,de")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tm-bench-throughput"))
    parser.add_argument("--rows", default=",".join(ROWS), help=f"any of {','.join(ROWS)}")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--train-mb", type=int, default=20)
    parser.add_argument("--part-mb", type=int, default=8)
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--run-repeat", type=int, default=2, help="tokenmill runs per scale")
    parser.add_argument(
        "--run-modes", default="default,actors", help="default, actors, helpers, threads"
    )
    parser.add_argument("--datatrove-scales", default="1")
    parser.add_argument("--encode-mb", type=float, default=16, help="sample for encoder rows")
    parser.add_argument("--ceiling-repeat", type=int, default=3, help="ceiling: median of N")
    parser.add_argument("--startup-repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--unit-mb", type=float, default=64, help="stages: the unit's size")
    parser.add_argument("--baseline", type=Path, help="stages: a checkout to compare with")
    parser.add_argument("--stage-repeat", type=int, default=3)
    parser.add_argument("--stage-passes", type=int, default=2)
    parser.add_argument("--stage-cpu", action="store_true", help="stages: CPU seconds, not wall")
    parser.add_argument(
        "--paired-ceiling",
        action="store_true",
        help="run: measure the cold ceiling again before each round of runs, and give each "
        "round's ratios against it",
    )
    parser.add_argument("--json", type=Path)
    if sys.argv[1:2] == ["--stage-worker"]:
        tree, unit, tok, passes, cpu = sys.argv[2:7]
        stage_worker(tree, unit, tok, int(passes), cpu == "1")
        return
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS) - {"none"})
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; known: {', '.join(ROWS)}")
    args.scales = [int(s) for s in args.scales.split(",")]
    args.datatrove_scales = [int(s) for s in args.datatrove_scales.split(",") if s]
    scales = sorted({1, *args.scales, *args.datatrove_scales})
    dirs = prepare(args.corpus, args.langs.split(","), args.work, args.part_mb, scales)
    files = sorted(str(f) for f in dirs[1].glob("*.jsonl"))
    tok_path = train_tokenizer(
        [Path(f) for f in files], args.work, args.vocab, args.train_mb, "gpt2"
    )
    size = sum(os.path.getsize(f) for f in files)
    print(f"corpus 1x: {len(files)} files, {size / 1e6:.0f} MB JSONL ({args.langs}); "
          f"{args.cores} cores; rows {rows}", flush=True)  # fmt: skip
    res: dict = {"corpus_bytes": size, "cores": args.cores, "vocab": args.vocab, "rows": rows}
    res["machine"] = _machine()
    steps = {
        "stages": lambda: res.update(stages=stage_rows(files, args.work, tok_path, args)),
        "encoders": lambda: res.update(encoders=encoder_rows(tok_path, files, args)),
        "run": lambda: run_rows(dirs, args.work, tok_path, args, res),
        "datatrove": lambda: datatrove_rows(dirs, args.work, tok_path, args, res),
        "startup": lambda: res.update(
            startup=startup_rows(tok_path, args.work, files, args.startup_repeat)
        ),
        "zst": lambda: res.update(
            zst=zst_rows(dirs, args.work, tok_path, max(args.scales), args.cores)
        ),
        "llama3": lambda: res.update(llama3=llama3_rows(files, args.work, dirs, args)),
    }
    for row in ROWS:
        if row in rows:
            print(f"[{row}]", flush=True)
            t0 = time.perf_counter()
            try:
                steps[row]()
            except Exception as exc:  # noqa: BLE001 - one row's failure keeps the others'
                res.setdefault("failed_rows", {})[row] = repr(exc)
                print(f"  row {row} FAILED: {exc!r}", flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    report(res, args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


def _machine() -> str:
    try:
        load = os.getloadavg()[0]
        model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in model.splitlines()
                     if ln.startswith("Model name")), "?")  # fmt: skip
        return f"{name}, {os.cpu_count()} CPUs, load average {load:.1f} at start"
    except OSError:
        return "?"


def report(res: dict, args) -> None:
    """The README table (markdown) and the verdict per target."""
    print("\n| row | MB/s | notes |\n| --- | ---: | --- |")
    enc = res.get("encoders", {})
    for key, r in enc.items():
        if key != "ceiling":
            kind, threads = key.split("/")
            print(f"| {kind}, {threads} thread{'s' if threads != '1' else ''} | "
                  f"{r['mb_s'][0]:.2f} | {r['encoder']}, {r['bytes'] / 1e6:.0f} MB sample |")  # fmt: skip
    ceiling = enc.get("ceiling")
    if ceiling:
        cold, warm = ceiling["mb_s"]
        print(f"| ceiling: gigatoken flat, {ceiling['config']}, whole 1x | {cold:.2f} | "
              f"second pass (warm caches) {warm:.2f} |")  # fmt: skip
    for k in args.scales:
        flags = ("", ""), ("A", f" --actors {args.cores}"), ("H", " --driver-processes")
        for tag, flag in (*flags, ("T", " --no-driver-processes")):
            for r in res.get(f"runs{tag}{k}", []):
                window = f", {r['window_mb_s']:.0f} MB/s first to last commit" if r[
                    "window_mb_s"] else ""  # fmt: skip
                print(f"| `tokenmill run{flag}` {k}x | {r['mb_s']:.2f} | {r['seconds']:.1f} s, "
                      f"{r['actors']} actors{window}, peak RSS {r['peak_rss_mb']:.0f} MB |")  # fmt: skip
    for k in args.datatrove_scales:
        if f"datatrove{k}" in res:
            r = res[f"datatrove{k}"]
            print(f"| datatrove {k}x | {r['mb_s']:.2f} | {r['seconds']:.1f} s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB |")  # fmt: skip
    for name, r in res.get("zst", {}).items():
        print(f"| `.jsonl.zst`, {name} ({r['compressed_mb']:.0f} MB zstd) | {r['mb_s']:.2f} | "
              f"{r['seconds']:.1f} s |")  # fmt: skip
    if "llama3" in res:
        r = res["llama3"]
        print(f"| Split-regex tokenizer, `tokenmill run` 1x | {r['run']['mb_s']:.2f} | encoder "
              f"{r['run']['encoder']}, ids identical to tokenizers on {r['sample_docs']} documents:"
              f" {r['identical_to_tokenizers']}; raw gigatoken flat {r['gigatoken-flat']['mb_s'][0]:.1f}"
              f", tokenizers {r['tokenizers']['mb_s'][0]:.2f} |")  # fmt: skip
    verdicts(res, args)


def paired_verdict(res: dict, tag: str, lo: int, hi: int) -> None:
    """Each round's marginal rate and first-to-last-commit rate against the ceiling measured
    just before that round (`--paired-ceiling`): the ratio without the drift between a ceiling
    measured minutes earlier and the runs."""
    ceilings, small, big = res.get("paired_ceilings"), res[f"runs{tag}{lo}"], res[f"runs{tag}{hi}"]
    if not ceilings or len(ceilings) != len(small) or len(small) != len(big):
        return
    steady = [marginal(a, b) / c for a, b, c in zip(small, big, ceilings, strict=True)]
    window = [(b["window_mb_s"] or 0) / c for b, c in zip(big, ceilings, strict=True)]
    print(f"  paired with each round's ceiling ({', '.join(f'{c:.0f}' for c in ceilings)} MB/s): "
          f"steady state {statistics.median(steady):.2f} of cold (rounds: "
          f"{', '.join(f'{r:.2f}' for r in steady)}), first to last commit "
          f"{statistics.median(window):.2f} ({', '.join(f'{r:.2f}' for r in window)})")  # fmt: skip


def cpu_verdict(res: dict, tag: str, lo: int, hi: int) -> None:
    """The steady state against the encoder alone doing the same work: gigatoken flat streamed
    once over the 1x corpus and over the largest scale's (its caches warm up on the copies as a
    run's encoder does), 2 processes, before each round; its marginal rate and its marginal MB
    per CPU second, against the runs' (CPU: the run and the helper processes it waited for).
    Wall-clock rates of a few seconds move with the machine's other load; CPU seconds much less."""
    same, small, big = res.get("paired_same_work"), res[f"runs{tag}{lo}"], res[f"runs{tag}{hi}"]
    if not same or lo != 1 or len(same) != len(small) or len(small) != len(big):
        return

    def cpu_s(r: dict) -> float:
        return r["bytes"] / 1e6 / r["mb_cpu_s"][0]

    def wall_s(r: dict) -> float:
        return r["bytes"] / 1e6 / r["mb_s"][0]

    mb = [(b["bytes"] - a["bytes"]) / 1e6 for a, b in same]
    enc_wall = [m / (wall_s(b) - wall_s(a)) for m, (a, b) in zip(mb, same, strict=True)]
    enc_cpu = [m / (cpu_s(b) - cpu_s(a)) for m, (a, b) in zip(mb, same, strict=True)]
    steady = [marginal(a, b) for a, b in zip(small, big, strict=True)]
    wall = [s / e for s, e in zip(steady, enc_wall, strict=True)]
    line = (f"  against the encoder alone on the same {lo}x -> {hi}x streams (marginal "
            f"{', '.join(f'{e:.0f}' for e in enc_wall)} MB/s): {statistics.median(wall):.2f} "
            f"(rounds: {', '.join(f'{w:.2f}' for w in wall)})")  # fmt: skip
    if tag != "A" and all(r.get("cpu_s") is not None for r in small + big):  # (actors: Ray's
        runs = [(b["bytes"] - a["bytes"]) / 1e6 / (b["cpu_s"] - a["cpu_s"])  # processes are not
                for a, b in zip(small, big, strict=True)]  # the run's children)  # fmt: skip
        ratio = [r / e for r, e in zip(runs, enc_cpu, strict=True)]
        line += (f"; per CPU second {statistics.median(runs):.0f} against "
                 f"{statistics.median(enc_cpu):.0f} MB: {statistics.median(ratio):.2f} (rounds: "
                 f"{', '.join(f'{r:.2f}' for r in ratio)})")  # fmt: skip
    print(line)


def verdicts(res: dict, args) -> None:
    lo, hi = min(args.scales), max(args.scales)
    print()
    m = None
    for tag, mode in (
        ("A", f"--actors {args.cores}"),
        ("", "default"),
        ("H", "--driver-processes"),
        ("T", "--no-driver-processes"),
    ):
        if f"run{tag}{lo}" not in res or f"run{tag}{hi}" not in res or hi <= lo:
            continue
        a, b = res[f"run{tag}{lo}"], res[f"run{tag}{hi}"]
        mm = marginal(a, b)
        if m is None:  # datatrove is compared with the first mode's steady state (actors')
            m, m_mode = mm, mode
        pairs = [marginal(x, y) for x in res[f"runs{tag}{lo}"] for y in res[f"runs{tag}{hi}"]]
        windows = [r["window_mb_s"] for r in res[f"runs{tag}{hi}"] if r["window_mb_s"]]
        window = statistics.median(windows) if windows else None
        print(f"{mode}: steady state (marginal rate {lo}x -> {hi}x): {mm:.2f} MB/s (medians; "
              f"{min(pairs):.1f}-{max(pairs):.1f} over all pairs of runs); first to last commit "
              f"at {hi}x: {window or 0:.1f} MB/s (median)")  # fmt: skip
        if min(pairs) <= 0:
            print(
                f"  (a {hi}x run took no longer than a {lo}x one: noise; rerun on a quiet machine)"
            )
        if "encoders" in res:
            cold, warm = res["encoders"]["ceiling"]["mb_s"]
            print(f"  vs flat ceiling: {mm / cold:.2f} of cold ({min(pairs) / cold:.2f}-"
                  f"{max(pairs) / cold:.2f}), {mm / warm:.2f} of warm; first to last commit "
                  f"{(window or 0) / cold:.2f} of cold (target >= 0.8)")  # fmt: skip
        paired_verdict(res, tag, lo, hi)
        cpu_verdict(res, tag, lo, hi)
        peak = {k: [r["peak_rss_mb"] for r in res[f"runs{tag}{k}"]] for k in (lo, hi)}
        rss = max(peak[hi]) / max(peak[lo])
        print(f"  peak RSS {hi}x / {lo}x = {rss:.2f} (highest of each; {peak}) (target within 10%)")
    if m is not None:
        dlo, dhi = res.get(f"datatrove{lo}"), res.get(f"datatrove{hi}")
        if dlo and dhi and hi > lo:
            dm = (dhi["mb_s"] * dhi["seconds"] - dlo["mb_s"] * dlo["seconds"]) / (
                dhi["seconds"] - dlo["seconds"]
            )
            print(f"datatrove marginal {dm:.2f} MB/s: tokenmill ({m_mode}) / datatrove = "
                  f"{m / dm:.1f}")  # fmt: skip
    for k in args.datatrove_scales:
        if f"datatrove{k}" in res and f"run{k}" in res:
            ratio = res[f"run{k}"]["mb_s"] / res[f"datatrove{k}"]["mb_s"]
            print(f"tokenmill / datatrove at {k}x, end to end: {ratio:.1f} (target >= 10)")
    if "startup" in res:
        tm, ray = (statistics.median(res["startup"][k]) for k in ("tokenmill_s", "ray_s"))
        print(f"start-up: one-document run {tm:.1f} s / ray.init+shutdown {ray:.1f} s = "
              f"{tm / ray:.2f} (target <= 0.5)")  # fmt: skip
    if "zst" in res:
        z = res["zst"]
        ratio = z["one file"]["mb_s"] / z["8 files"]["mb_s"]
        print(f"one big .jsonl.zst / 8 files = {ratio:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
