"""Benchmark of dynamic batch-level merging (issue 4): reductions per language, throughput, oracle speed.

    .venv/bin/python bench/dynamic_merge.py --corpus /tmp/tokenmill-bench-corpus/corpus \
        --json /tmp/dynamic_merge_bench.json

Documents are the bench corpus cut into consecutive chunks of `--chars` characters (2,000: the
reference setting), sampled with a fixed seed; the base is an 8k byte-level BPE trained on
data/sample. Prints markdown tables; `--json` also writes every figure. Times are CPU seconds of
this process (time.process_time): on a shared machine wall time mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import regex

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tokenizers_impl.bpe import GPT2_PATTERN, BPETokenizer  # noqa: E402
from tokenizers_impl.dynamic_merge import (  # noqa: E402
    WORD_PATTERN,
    DynamicMergeTokenizer,
    merge_batch_ids,
    recount_merges,
)

LANGS = ("code", "de", "en", "ru", "zh")
MERGES = (10, 50, 200)


def load_chunks(corpus: Path, lang: str, chars: int, n: int, seed: int) -> list[str]:
    chunks = []
    with open(corpus / f"{lang}.jsonl", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            chunks.extend(text[i : i + chars] for i in range(0, len(text) - chars // 2, chars))
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def crossing_tokens(tok: DynamicMergeTokenizer, result, texts: list[str]) -> int:
    """Merged tokens whose bytes span two pre-tokens (or words), checked independently with `regex`."""
    pattern = WORD_PATTERN if tok.boundary == "word" else GPT2_PATTERN
    crossings = 0
    for ids, text in zip(result.ids, texts, strict=True):
        starts, pos = set(), 0
        for part in regex.findall(pattern, text):
            starts.add(pos)
            pos += len(part.encode("utf-8"))
        pos = 0
        for i in ids.tolist():
            end = pos + len(tok.base.decode_bytes(result.vocab.get(i, (i,))))
            crossings += any(b in starts for b in range(pos + 1, end))
            pos = end
    return crossings


def reductions(tok: DynamicMergeTokenizer, texts: list[str], batch_docs: int) -> dict:
    """Pooled over the batches: L0, Lword, Lm at each merge count and at saturation, and timings."""
    l0 = lword = 0
    lm = {m: 0 for m in MERGES}
    lsat = merges_sat = crossings = 0
    seconds = 0.0
    for start in range(0, len(texts), batch_docs):
        batch = texts[start : start + batch_docs]
        t0 = time.process_time()
        result = tok.merge_batch(batch, max_merges=None)
        seconds += time.process_time() - t0
        steps = np.concatenate([[0], np.cumsum(result.replaced)])
        l0 += result.l0
        lword += result.lword
        for m in MERGES:
            lm[m] += result.l0 - int(steps[min(m, len(result.replaced))])
        lsat += result.lm
        merges_sat += len(result.merges)
        crossings += crossing_tokens(tok, result, batch)
    row = {"l0": l0, "lword": lword, "saturation_seconds": seconds, "crossings": crossings}
    row["merges_to_saturation_per_batch"] = merges_sat / -(-len(texts) // batch_docs)
    for key, length in [*((str(m), lm[m]) for m in MERGES), ("sat", lsat)]:
        row[f"lm_{key}"] = length
        row[f"rel_{key}"] = 100 * (l0 - length) / (l0 - lword)
        row[f"abs_{key}"] = 100 * (l0 - length) / l0
    return row


def throughput(tok: DynamicMergeTokenizer, texts: list[str], batch_docs: int, merges: int) -> dict:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    batches = [texts[i : i + batch_docs] for i in range(0, len(texts), batch_docs)]
    t0 = time.process_time()
    for batch in batches:
        tok.base.encode_batch_flat(batch)
    base_s = time.process_time() - t0
    t0 = time.process_time()
    for batch in batches:
        tok.merge_batch(batch, max_merges=merges)
    merged_s = time.process_time() - t0
    return {
        "base_mb_s": n_bytes / base_s / 1e6,
        "merged_mb_s": n_bytes / merged_s / 1e6,
        "ratio": base_s / merged_s,
    }


def oracle_speed(tok: DynamicMergeTokenizer, texts: list[str], merges: int) -> dict:
    batch = tok.base_batch(texts)
    t0 = time.process_time()
    fast = merge_batch_ids(batch, tok.base_vocab_size, merges)
    fast_s = time.process_time() - t0
    t0 = time.process_time()
    slow = recount_merges(batch, tok.base_vocab_size, merges)
    slow_s = time.process_time() - t0
    same = fast.merges == slow.merges and np.array_equal(fast.flat, slow.flat)
    return {
        "docs": len(texts),
        "base_tokens": int(batch.ids.size),
        "base_tokens_per_doc": batch.ids.size / len(texts),
        "incremental_s": fast_s,
        "recount_s": slow_s,
        "speedup": slow_s / fast_s,
        "identical": bool(same),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/tokenmill-bench-corpus/corpus"))
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--docs", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts", default="reductions,throughput,oracle", help="comma-separated parts to run"
    )
    parser.add_argument("--boundary", choices=("pretoken", "word"), default="pretoken")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    known = {"reductions", "throughput", "oracle"}
    if parts - known:
        raise SystemExit(f"unknown --parts {sorted(parts - known)}; known: {sorted(known)}")

    samples = [
        json.loads(line)["text"]
        for path in sorted((REPO / "data/sample").glob("*.jsonl"))
        for line in path.open(encoding="utf-8")
    ]
    base = BPETokenizer.train(samples, vocab_size=8000)
    tok = DynamicMergeTokenizer(base, max_merges=50, boundary=args.boundary)
    texts = {
        lang: load_chunks(args.corpus, lang, args.chars, args.docs, args.seed) for lang in LANGS
    }
    report: dict = {
        "setup": {
            **vars(args),
            "corpus": str(args.corpus),
            "json": None,
            "base": f"bpe 8k ({base.encoder})",
        }
    }

    print(
        f"# dynamic merge bench: {args.docs} docs x {args.chars} chars per language, "
        f"boundary={args.boundary}\n"
    )
    print(
        "| lang | batch | L0 | Lword | merges to sat./batch | rel% @10/50/200/sat "
        "| abs% @10/50/200/sat | sat. s | crossings |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    report["reductions"] = {}
    for lang in LANGS if "reductions" in parts else ():
        for batch_docs in (32, 1024):
            row = reductions(tok, texts[lang], batch_docs)
            report["reductions"][f"{lang}/{batch_docs}"] = row
            rel = " / ".join(f"{row[f'rel_{k}']:.1f}" for k in (*map(str, MERGES), "sat"))
            ab = " / ".join(f"{row[f'abs_{k}']:.1f}" for k in (*map(str, MERGES), "sat"))
            print(
                f"| {lang} | {batch_docs} | {row['l0']} | {row['lword']} "
                f"| {row['merges_to_saturation_per_batch']:.0f} | {rel} | {ab} "
                f"| {row['saturation_seconds']:.2f} | {row['crossings']} |",
                flush=True,
            )

    print("\n| lang | batch | base MB/s | base+50 merges MB/s | ratio |\n|---|---|---|---|---|")
    report["throughput"] = {}
    for lang in LANGS if "throughput" in parts else ():
        for batch_docs in (32, 1024):
            row = throughput(tok, texts[lang], batch_docs, 50)
            report["throughput"][f"{lang}/{batch_docs}"] = row
            print(
                f"| {lang} | {batch_docs} | {row['base_mb_s']:.2f} | {row['merged_mb_s']:.2f} "
                f"| {row['ratio']:.2f} |",
                flush=True,
            )

    if "oracle" in parts:
        row = oracle_speed(tok, texts["en"], 200)
        report["oracle_200"] = row
        print(
            f"\nen, {row['docs']} docs ({row['base_tokens_per_doc']:.0f} base tokens each), "
            f"200 merges: incremental {row['incremental_s']:.2f} s, recount oracle "
            f"{row['recount_s']:.1f} s, speedup {row['speedup']:.0f}x, identical: {row['identical']}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
