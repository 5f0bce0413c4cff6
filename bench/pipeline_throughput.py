"""Pipeline throughput, side by side in one run, on the bench corpus (English + German by default):

  (a) ceiling: tiktoken from the same ranks, no I/O, better of one process on all cores and one
      process per core;  (b) `tokenmill run` end to end;  (c) datatrove's tokenization step on the
  same files and tokenizer (bench venv only);  (d) `tokenizers` encode_batch_fast measured like (a).
Prints MB/s, tokens/s, ratios b/a, b/c, b/d and peak RSS (all processes) at 1x and 4x corpus size.

  .venv/bin/python bench/pipeline_throughput.py            # needs bench/build_corpus.sh's corpus
  make bench-env                                            # the datatrove venv for (c)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.proctree import run_measured  # noqa: E402

CORPUS = Path(os.environ.get("TMPDIR", "/tmp")) / "tokenmill-bench-corpus" / "corpus"


def prepare(
    corpus: Path, langs: list[str], work: Path, part_mb: int, scales: list[int]
) -> dict[int, Path]:
    """Split the corpus into ~part_mb files; scale k = k symlinked copies under other names."""
    base = work / "x1"
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
    dirs = {1: base}
    for k in scales:
        if k == 1:
            continue
        d = work / f"x{k}"
        if not d.exists():
            d.mkdir()
            for copy in range(k):
                for f in sorted(base.glob("*.jsonl")):
                    (d / f"{f.stem}-c{copy}.jsonl").symlink_to(f)
        dirs[k] = d
    return dirs


def train_tokenizer(dirs: dict[int, Path], work: Path, vocab: int, train_mb: int) -> Path:
    path = work / f"bpe-{vocab}.json"
    if not path.exists():
        from tokenizers_impl.bpe import BPETokenizer

        def texts():
            budget = train_mb << 20
            for f in sorted(dirs[1].glob("*.jsonl"))[::2]:
                with open(f, encoding="utf-8") as handle:
                    for line in handle:
                        text = json.loads(line)["text"]
                        budget -= len(text)
                        if budget < 0:
                            return
                        yield text

        t0 = time.perf_counter()
        BPETokenizer.train(texts(), vocab_size=vocab).save(str(path))
        print(
            f"trained {vocab}-token BPE on {train_mb} MB in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return path


def _load_texts(files: list[str]) -> list[str]:
    return [json.loads(line)["text"] for f in files for line in open(f, encoding="utf-8")]


def _encode_worker(args) -> tuple[int, int, float]:
    engine, tok_path, files, threads, barrier = args
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    from tokenizers_impl import load_tokenizer

    tok = load_tokenizer(f"bpe:{tok_path}", use_tiktoken=(engine == "tiktoken"))
    assert tok.encoder == engine, tok.encoder
    texts = _load_texts(files)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    barrier.wait()
    t0 = time.perf_counter()
    if engine == "tiktoken":
        ids = tok._tiktoken.encode_ordinary_batch(texts, num_threads=threads)
    else:
        ids = [e.ids for e in tok.hf.encode_batch_fast(texts, add_special_tokens=False)]
    return nbytes, sum(len(x) for x in ids), time.perf_counter() - t0


def raw_encoder(engine: str, tok_path: Path, files: list[str], cores: int) -> dict:
    """Better of: one process using all cores, one single-threaded process per core."""
    results = {}
    ctx = mp.get_context("spawn")
    for label, procs, threads in (
        (f"1 process x {cores} threads", 1, cores),
        (f"{cores} processes x 1 thread", cores, 1),
    ):
        barrier = ctx.Manager().Barrier(procs)
        chunks = [files[i::procs] for i in range(procs)]
        with ctx.Pool(procs) as pool:
            out = pool.map(
                _encode_worker, [(engine, str(tok_path), c, threads, barrier) for c in chunks]
            )
        nbytes, tokens = sum(o[0] for o in out), sum(o[1] for o in out)
        wall = max(o[2] for o in out)
        results[label] = {
            "mb_s": nbytes / 1e6 / wall,
            "tokens_s": tokens / wall,
            "bytes": nbytes,
            "tokens": tokens,
        }
        print(f"  {engine:9s} {label:24s} {results[label]['mb_s']:7.2f} MB/s", flush=True)
    best = max(results, key=lambda k: results[k]["mb_s"])
    return {**results[best], "config": best, "all": results}


def tokenmill_run(data: Path, out: Path, tok_path: Path, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [
        str(REPO / ".venv/bin/tokenmill"),
        "run",
        "--input",
        f"{data}/*.jsonl",
        "--output",
        str(out),
        "--tokenizer",
        f"bpe:{tok_path}",
        "--no-progress",
        *extra,
    ]
    wall, peak, stdout = run_measured(cmd, env=env)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "mb_s": summary["bytes"] / 1e6 / wall,
        "tokens_s": summary["tokens"] / wall,
        "seconds": wall,
        "peak_rss_mb": peak / 2**20,
        "bytes": summary["bytes"],
        "tokens": summary["tokens"],
        "engine_seconds": summary["seconds"],
    }


def datatrove_run(data: Path, out: Path, tok_path: Path, cores: int, nbytes: int) -> dict | None:
    python = REPO / ".venv-bench/bin/python"
    if not python.exists():
        print("  datatrove: no bench venv (make bench-env); skipped", flush=True)
        return None
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}-logs", ignore_errors=True)
    cmd = [
        str(python),
        str(REPO / "bench/datatrove_tokenize.py"),
        str(data),
        str(out),
        str(tok_path),
        str(cores),
    ]
    wall, peak, _ = run_measured(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    tokens = sum(f.stat().st_size for f in Path(out).glob("*.ds")) // 2
    return {
        "mb_s": nbytes / 1e6 / wall,
        "tokens_s": tokens / wall,
        "seconds": wall,
        "peak_rss_mb": peak / 2**20,
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--langs", default="en,de")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tm-bench-throughput"))
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--train-mb", type=int, default=20)
    parser.add_argument("--part-mb", type=int, default=8)
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    dirs = prepare(args.corpus, args.langs.split(","), args.work, args.part_mb, scales)
    tok_path = train_tokenizer(dirs, args.work, args.vocab, args.train_mb)
    files = sorted(str(f) for f in dirs[1].glob("*.jsonl"))
    size_mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(
        f"corpus 1x: {len(files)} files, {size_mb:.0f} MB JSONL ({args.langs}); {args.cores} cores",
        flush=True,
    )
    res: dict = {"corpus_mb": size_mb, "cores": args.cores, "vocab": args.vocab}
    print("(a) ceiling and (d) tokenizers, no I/O:", flush=True)
    res["a"] = raw_encoder("tiktoken", tok_path, files, args.cores)
    res["d"] = raw_encoder("tokenizers", tok_path, files, args.cores)
    for k in scales:
        print(f"(b) tokenmill run, {k}x:", flush=True)
        res[f"b{k}"] = tokenmill_run(dirs[k], args.work / f"out-tm-{k}", tok_path, [])
        print(
            f"  {res[f'b{k}']['mb_s']:.2f} MB/s, {res[f'b{k}']['seconds']:.1f} s, "
            f"peak RSS {res[f'b{k}']['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        if not args.skip_datatrove:
            print(f"(c) datatrove, {k}x:", flush=True)
            res[f"c{k}"] = datatrove_run(
                dirs[k], args.work / f"out-dt-{k}", tok_path, args.cores, res[f"b{k}"]["bytes"]
            )
            if res[f"c{k}"]:
                print(
                    f"  {res[f'c{k}']['mb_s']:.2f} MB/s, {res[f'c{k}']['seconds']:.1f} s, "
                    f"peak RSS {res[f'c{k}']['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    report(res, scales)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


def report(res: dict, scales: list[int]) -> None:
    a, d, b = res["a"], res["d"], res["b1"]
    print("\n| run | MB/s | tokens/s | peak RSS MB |\n|---|---|---|---|")
    print(f"| (a) tiktoken ceiling ({a['config']}) | {a['mb_s']:.2f} | {a['tokens_s']:.0f} | - |")
    print(
        f"| (d) tokenizers encode_batch_fast ({d['config']}) | {d['mb_s']:.2f} | {d['tokens_s']:.0f} | - |"
    )
    for k in scales:
        bk, ck = res[f"b{k}"], res.get(f"c{k}")
        print(
            f"| (b) tokenmill run {k}x | {bk['mb_s']:.2f} | {bk['tokens_s']:.0f} | {bk['peak_rss_mb']:.0f} |"
        )
        if ck:
            print(
                f"| (c) datatrove {k}x | {ck['mb_s']:.2f} | {ck['tokens_s']:.0f} | {ck['peak_rss_mb']:.0f} |"
            )
    print(f"\nb/a = {b['mb_s'] / a['mb_s']:.2f}   b/d = {b['mb_s'] / d['mb_s']:.2f}", end="")
    if res.get("c1"):
        print(f"   b/c = {b['mb_s'] / res['c1']['mb_s']:.2f}", end="")
    print()
    if len(scales) > 1:
        k = max(scales)
        print(
            f"tokenmill peak RSS {k}x / 1x = {res[f'b{k}']['peak_rss_mb'] / b['peak_rss_mb']:.2f}",
            end="",
        )
        if res.get(f"c{k}") and res.get("c1"):
            print(
                f"   datatrove {k}x / 1x = {res[f'c{k}']['peak_rss_mb'] / res['c1']['peak_rss_mb']:.2f}",
                end="",
            )
        print()


if __name__ == "__main__":
    main()
