"""Benchmark: the DuckDB analytics report vs the same metrics in plain pyarrow/numpy, one process.

    .venv/bin/python bench/analytics.py generate --out /tmp/tm-bench-analytics --tokens 60000000
    .venv/bin/python bench/analytics.py run --out /tmp/tm-bench-analytics

`generate` synthesises two committed outputs (two "tokenizers" over the same documents, so the
normalized length has a baseline) from real distributions: per language, the unigram token
frequencies and document lengths of the BPE shards of the sample corpus (out/demo/tokens, written by
`tokenmill demo`); tokenizer B is the same stream with ~15% of adjacent pairs fused into new ids
(8000 + k).
`run` times each implementation in its own subprocess and reports wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.output import Output, iter_committed  # noqa: E402
from pipeline.output.shards import ShardWriter, file_checksum, read_ipc, token_column  # noqa: E402
from schemas.layout import UnitNames  # noqa: E402
from schemas.records import LedgerEntry, WorkUnit  # noqa: E402
from schemas.shards import SCHEMA_VERSION, TOKENMILL_VERSION, shard_schema  # noqa: E402

DOCS_PER_BATCH = 256
# duckdb: the report as shipped (token counts from the per-unit counts the engine wrote);
# duckdb-unnest: the report made to unnest the shards' token lists instead (connect(unit_counts=
# False)), the same input the numpy baseline reads.
MODES = ("duckdb", "duckdb-unnest", "numpy")
CONFIG_HASH = "bench0analytics"  # the synthetic outputs' config hash (names their objects)


def measured_distributions(demo: str) -> dict[str, dict]:
    """Per language: token frequencies, document lengths, bytes/chars/words per token."""
    output = Output(demo)
    tables = [read_ipc(output, e.shard) for e in iter_committed(output)]
    table = pa.concat_tables(tables)
    out = {}
    for lang in pc.unique(table["lang"]).to_pylist():
        part = table.filter(pc.equal(table["lang"], lang))
        flat = part["tokens"].combine_chunks().values.to_numpy()
        n_tok = part["n_tokens"].to_numpy()
        out[lang] = {
            "freq": np.bincount(flat, minlength=8000) / len(flat),
            "lengths": n_tok[n_tok > 0],
            "bytes": part["n_bytes"].to_numpy().sum() / n_tok.sum(),
            "chars": part["n_chars"].to_numpy().sum() / n_tok.sum(),
            "words": part["n_words"].to_numpy().sum() / n_tok.sum(),
            "sources": pc.unique(part["source"]).to_pylist(),
        }
    return out


def write_unit(output: Output, unit: str, tok: dict, columns: list[dict], vocab: int) -> None:
    """One committed unit, as the engine writes it: shard, per-unit token counts, ledger entry."""
    from pipeline.tokenize.unigrams import UnigramCounter  # generate only: children stay lean

    meta = {f"tokenmill.tokenizer.{k}": str(v) for k, v in tok.items()}
    schema = shard_schema(vocab, metadata=meta)
    names = UnitNames.of(unit, CONFIG_HASH)
    path = Path(output.path(names.shard))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(str(path), schema)
    unigrams = UnigramCounter(vocab)  # what the engine counts at tokenization time
    docs = tokens = nbytes = 0
    for cols in columns:
        writer.write(cols)
        lists = cols["tokens"]
        unigrams.add(
            lists.values.to_numpy(zero_copy_only=False).astype(np.int64),
            lists.offsets.to_numpy(),
            cols["source"].to_pylist(),
            cols["lang"].to_pylist(),
        )
        docs += len(cols["doc_id"])
        tokens += int(pc.sum(cols["n_tokens"]).as_py())
        nbytes += int(pc.sum(cols["n_bytes"]).as_py())
    writer.close()
    Path(output.path(names.unigrams)).parent.mkdir(exist_ok=True)
    unigrams.write(output.path(names.unigrams))
    entry = LedgerEntry(
        unit_id=unit,
        unit=WorkUnit(
            url=f"synthetic://{unit}", fmt="shards", compression=None, start=0, end=-1, size=0
        ),
        config_hash=CONFIG_HASH,
        shard=names.shard,
        shard_checksum=file_checksum(output.path(names.shard)),
        unigrams=names.unigrams,
        unigrams_checksum=file_checksum(output.path(names.unigrams)),
        docs_read=docs,
        documents=docs,
        rejected=0,
        tokens=tokens,
        bytes=nbytes,
        tokenizer=tok,
        schema_version=SCHEMA_VERSION,
        tokenmill_version=TOKENMILL_VERSION,
    )
    output.write_json(names.ledger, entry.to_json())


def fuse_pairs(flat: np.ndarray, offsets: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizer B: fuse ~15% of adjacent in-document pairs into new ids 8000..39999."""
    fuse = rng.random(len(flat)) < 0.15
    fuse[offsets[1:] - 1] = False  # never across documents
    fuse[1:] &= ~fuse[:-1]  # non-overlapping
    keep = np.ones(len(flat), dtype=bool)
    keep[1:] = ~fuse[:-1]
    new = flat.astype(np.uint32)
    idx = np.flatnonzero(fuse)
    new[idx] = 8000 + (flat[idx].astype(np.uint32) * 31 + flat[idx + 1]) % 32000
    lengths = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if len(flat) else np.zeros(0)
    return new[keep], np.concatenate(([0], np.cumsum(lengths)))


def generate(out: Path, total_tokens: int, demo: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    dists = measured_distributions(demo)
    langs = sorted(dists)
    per_lang = total_tokens // 2 // len(langs)
    toks = {
        "A": {"kind": "bpe", "name": "bpe-A", "fingerprint": "bench-A", "vocab_size": 8000},
        "B": {"kind": "bpe", "name": "bpe-B-fused", "fingerprint": "bench-B", "vocab_size": 40000},
    }
    outputs = {k: Output(str(out / k)) for k in toks}
    for li, lang in enumerate(langs):
        d = dists[lang]
        cdf = np.cumsum(d["freq"])
        for unit_index in range(4):
            unit = f"{lang}-{unit_index}"
            cols = {"A": [], "B": []}
            produced = 0
            doc_no = 0
            while produced < per_lang // 4:
                lengths = rng.choice(d["lengths"], DOCS_PER_BATCH)
                offsets = np.concatenate(([0], np.cumsum(lengths)))
                flat = np.searchsorted(cdf, rng.random(int(offsets[-1]))).clip(0, 7999)
                ids = [f"{unit}-{doc_no + i}" for i in range(DOCS_PER_BATCH)]
                doc_no += DOCS_PER_BATCH
                sources = [d["sources"][i % len(d["sources"])] for i in range(DOCS_PER_BATCH)]
                n_bytes = np.round(lengths * d["bytes"]).astype(np.int64)
                n_chars = np.round(lengths * d["chars"]).astype(np.int64)
                n_words = np.maximum(1, np.round(lengths * d["words"])).astype(np.int32)
                flat_b, offsets_b = fuse_pairs(flat, offsets, rng)
                for key, (fl, off, vocab) in {
                    "A": (flat, offsets, 8000),
                    "B": (flat_b, offsets_b, 40000),
                }.items():
                    n_tok = np.diff(off).astype(np.int32)
                    cols[key].append(
                        {
                            "doc_id": pa.array(ids),
                            "source": pa.array(sources),
                            "lang": pa.array([lang] * DOCS_PER_BATCH),
                            "tokens": token_column(fl, off, vocab),
                            "n_tokens": pa.array(n_tok),
                            "n_bytes": pa.array(n_bytes),
                            "n_chars": pa.array(n_chars),
                            "n_words": pa.array(n_words),
                            "n_continued_words": pa.array(
                                np.minimum(n_words, n_tok - n_words).clip(0).astype(np.int32)
                            ),
                        }
                    )
                produced += int(offsets[-1])
            for key in toks:
                write_unit(outputs[key], unit, toks[key], cols[key], toks[key]["vocab_size"])
        print(f"{lang}: {li + 1}/{len(langs)} languages written", file=sys.stderr)
    for output in outputs.values():
        total = sum(e.tokens for e in iter_committed(output))
        print(f"{output.url}: {total} tokens")


# ---- the baseline: the same metrics with pyarrow + numpy in one process -------------------------


def numpy_report(urls: list[str], baseline: str, alpha: float = 2.5) -> dict:
    docs = defaultdict(list)  # (tokenizer, source, lang) -> list of per-batch column dicts
    counts: dict[tuple, np.ndarray] = {}
    vocab: dict[str, int] = {}
    for url in urls:
        output = Output(url)
        for entry in iter_committed(output):
            name = entry.tokenizer["name"]
            vocab[name] = v = int(entry.tokenizer["vocab_size"])
            table = read_ipc(output, entry.shard)
            for batch in table.to_batches():
                source = batch.column("source").to_numpy(zero_copy_only=False)
                lang = batch.column("lang").to_numpy(zero_copy_only=False)
                keys = np.char.add(np.char.add(source.astype(str), "\x1f"), lang.astype(str))
                uniq, gid = np.unique(keys, return_inverse=True)
                lists = batch.column("tokens")
                flat = lists.values.to_numpy()
                lengths = np.diff(lists.offsets.to_numpy())
                gid_tok = np.repeat(gid, lengths)
                for g, key in enumerate(uniq):
                    src, lg = key.split("\x1f")
                    group = (name, src, lg)
                    sel = gid == g
                    docs[group].append(
                        {
                            c: batch.column(c).to_numpy(zero_copy_only=False)[sel]
                            for c in (
                                "doc_id",
                                "n_tokens",
                                "n_bytes",
                                "n_chars",
                                "n_words",
                                "n_continued_words",
                            )
                        }
                    )
                    hist = np.bincount(flat[gid_tok == g], minlength=v)
                    counts[group] = counts[group] + hist if group in counts else hist
    result = {}
    for by in (("source", "lang"), ("lang",)):
        merged_docs, merged_counts = defaultdict(list), {}
        for (name, src, lg), parts in docs.items():
            key = (name, src, lg) if by == ("source", "lang") else (name, lg)
            merged_docs[key] += parts
            c = counts[(name, src, lg)]
            merged_counts[key] = merged_counts[key] + c if key in merged_counts else c
        cols = {
            k: {c: np.concatenate([p[c] for p in v]) for c in v[0]} for k, v in merged_docs.items()
        }
        base = {}
        for key, col in cols.items():
            if key[0] == baseline:
                base.update(zip(col["doc_id"], col["n_tokens"], strict=True))
        rows = []
        for key, col in sorted(cols.items()):
            n_tok, words = col["n_tokens"].astype(np.int64), col["n_words"].astype(np.int64)
            tokens, nbytes = int(n_tok.sum()), int(col["n_bytes"].sum())
            c = merged_counts[key]
            c = c[c > 0].astype(np.float64)
            p = c / c.sum()
            h = float(-(p * np.log(p)).sum())
            hr = float(np.log((p**alpha).sum()) / (1 - alpha))
            v = vocab[key[0]]
            matched = [(t, base[d]) for d, t in zip(col["doc_id"], n_tok, strict=True) if d in base]
            cont = col["n_continued_words"]
            rows.append(
                {
                    "group": key,
                    "documents": len(n_tok),
                    "bytes": nbytes,
                    "tokens": tokens,
                    "chars": int(col["n_chars"].sum()),
                    "words": int(words.sum()),
                    "fertility": tokens / words.sum(),
                    "continued_word_share": float(cont.sum() / words.sum()),
                    "bytes_per_token": nbytes / tokens,
                    "chars_per_token": col["n_chars"].sum() / tokens,
                    "normalized_length": (sum(t for t, _ in matched) / sum(b for _, b in matched))
                    if matched
                    else None,
                    "types": len(c),
                    "shannon_efficiency": h / math.log(v),
                    "shannon_efficiency_observed": h / math.log(len(c)),
                    "renyi_efficiency": hr / math.log(v),
                    "renyi_efficiency_observed": hr / math.log(len(c)),
                    "bits_per_byte": float(-(c * np.log2(p)).sum() / nbytes),
                    "vocab_share": len(c) / v,
                    "types_per_million": len(c) * 1e6 / tokens,
                    **dict(
                        zip(
                            ("p50_tokens", "p90_tokens", "p99_tokens"),
                            np.percentile(n_tok, [50, 90, 99]).tolist(),
                            strict=True,
                        )
                    ),
                    "max_tokens": int(n_tok.max()),
                }
            )
        result["by_source" if len(by) == 2 else "by_lang"] = rows
    return result


def duckdb_report(urls: list[str], baseline: str, unit_counts: bool = True) -> dict:
    from pipeline import analytics

    with analytics.connect(urls, baseline=baseline, unit_counts=unit_counts) as session:
        tables = analytics.report_tables(session)
    return {k: t.to_pylist() for k, t in tables.items() if k in ("by_lang", "by_source")}


def child(mode: str, urls: list[str], baseline: str) -> None:
    if mode.startswith("duckdb"):  # imports are not part of either side's timing
        from pipeline import analytics  # noqa: F401
    t0 = time.perf_counter()
    if mode == "numpy":
        report = numpy_report(urls, baseline)
    else:
        report = duckdb_report(urls, baseline, unit_counts=mode == "duckdb")
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lang_rows = sorted(
        report["by_lang"], key=lambda r: str(r.get("group") or (r["tokenizer"], r["lang"]))
    )
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": seconds,
                "peak_rss_mb": rss,
                "tokens": sum(r["tokens"] for r in report["by_lang"]),
                "check": [
                    [r["tokens"], round(r["shannon_efficiency"], 9), round(r["p99_tokens"], 6)]
                    for r in lang_rows
                ],
            }
        )
    )


def run(out: Path, repeats: int) -> None:
    urls = [str(out / "A"), str(out / "B")]
    results = defaultdict(list)
    for _ in range(repeats):
        for mode in MODES:
            proc = subprocess.run(
                [sys.executable, __file__, "child", mode, *urls],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {m: min(r, key=lambda x: x["seconds"]) for m, r in results.items()}
    for mode in MODES:
        assert best[mode]["check"] == best["numpy"]["check"], f"{mode} and numpy disagree"
    for mode, r in best.items():
        print(
            f"{mode:13s} best of {repeats}: {r['seconds']:.2f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"{r['tokens'] / 1e6:.1f}M tokens ({r['tokens'] / r['seconds'] / 1e6:.1f}M tokens/s)"
        )
    for mode in ("duckdb", "duckdb-unnest"):
        print(
            f"{mode} speed-up over numpy: {best['numpy']['seconds'] / best[mode]['seconds']:.2f}x"
        )
    print("metrics agree (tokens, Shannon efficiency, p99 per tokenizer x language)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--tokens", type=int, default=60_000_000)
    g.add_argument("--demo", default=str(REPO / "out" / "demo" / "tokens"))
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--repeats", type=int, default=2)
    c = sub.add_parser("child")
    c.add_argument("mode", choices=MODES)
    c.add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.cmd == "generate":
        generate(args.out, args.tokens, args.demo)
    elif args.cmd == "run":
        run(args.out, args.repeats)
    else:
        child(args.mode, args.urls, baseline="bpe-A")


if __name__ == "__main__":
    main()
