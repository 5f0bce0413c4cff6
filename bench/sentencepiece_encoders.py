"""SentencePiece encoders side by side, one thread, texts in memory: the sentencepiece library (the
reference) against gigatoken on the model's equivalent tokenizer.json (flat output and lists),
and the ids compared document by document. The model is a BPE trained here on --train-mb of the
bench corpus (tokenmill's settings; --dummy-prefix: Llama-2's whitespace handling), or --model.
Then, with --run-mb, `tokenmill run` on that much of the corpus with each encoder.

    .venv/bin/python -m bench.sentencepiece_encoders [--langs en,de,ru,zh,code] [--mb 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(os.environ.get("TMPDIR", "/tmp")) / "tokenmill-bench-corpus" / "corpus"


def texts_of(langs: list[str], mb: float, skip_mb: float = 0.0) -> list[str]:
    """About `mb` MB of each language's texts, after its first `skip_mb` MB."""
    out = []
    for lang in langs:
        seen = 0
        with open(CORPUS / f"{lang}.jsonl", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                seen += len(text.encode("utf-8"))
                if seen > skip_mb * 1e6:
                    out.append(text)
                if seen > (skip_mb + mb) * 1e6:
                    break
    return out


def rate(nbytes: int, fn) -> float:
    """MB/s of fn's second call (the first pays one-off costs: tokenmill's encoder gate and
    kernels, a library's caches; it printed 0.9x for what runs at gigatoken's rate)."""
    fn()
    t0 = time.perf_counter()
    fn()
    return nbytes / (time.perf_counter() - t0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,de,ru,zh,code")
    parser.add_argument("--mb", type=float, default=4.0, help="MB of each language encoded")
    parser.add_argument(
        "--train-mb", type=float, default=4.0, help="MB of each language trained on"
    )
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dummy-prefix", action="store_true")
    parser.add_argument("--model", default=None, help="a .model file instead of training one")
    parser.add_argument("--run-mb", type=float, default=0.0, help="also `tokenmill run` on this")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import sentencepiece

    from tokenizers_impl import load_tokenizer
    from tokenizers_impl.sentencepiece_impl import SentencePieceTokenizer

    langs = args.langs.split(",")
    work = Path(tempfile.mkdtemp(prefix="tokenmill-bench-spm-"))
    model = args.model
    if model is None:
        model = str(work / "bpe.model")
        t0 = time.perf_counter()
        extra = {"add_dummy_prefix": True} if args.dummy_prefix else {}
        train = texts_of(langs, args.train_mb)
        SentencePieceTokenizer.train(train, vocab_size=args.vocab, **extra).save(model)
        print(f"trained {model} ({args.vocab} pieces) in {time.perf_counter() - t0:.0f} s")
    texts = texts_of(langs, args.mb, skip_mb=args.train_mb)  # text the model was not trained on
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    fast = load_tokenizer(f"sentencepiece:{model}")
    print(f"auto picks {fast.encoder} {fast.encoder_version} {list(fast.encoder_fallbacks)}")
    library = sentencepiece.SentencePieceProcessor(model_file=model)
    rows = {
        "sentencepiece": rate(nbytes, lambda: library.encode(texts, out_type=int, num_threads=1))
    }
    if fast.encoder == "gigatoken":
        backend = fast._encoder._backend
        rows["gigatoken, lists"] = rate(
            nbytes, lambda: backend.encode_batch_list(texts, parallel=False)
        )
        rows["gigatoken, flat"] = rate(nbytes, lambda: backend.encode_batch(texts, parallel=False))
        rows["tokenmill encode_batch_flat"] = rate(nbytes, lambda: fast.encode_batch_flat(texts))
        flat, offsets = fast.encode_batch_flat(texts)
        want = library.encode(texts, out_type=int)
        same = sum(flat[offsets[i] : offsets[i + 1]].tolist() == want[i] for i in range(len(texts)))
        print(f"ids equal to the library's: {same} of {len(texts)} documents")
    print(f"{len(texts)} documents, {nbytes / 1e6:.1f} MB ({args.langs}), one thread:")
    base = rows["sentencepiece"]
    for name, value in rows.items():
        print(f"  {name:28s} {value:7.1f} MB/s  {value / base:5.1f}x")
    if args.run_mb:
        run_rows(model, langs, args.run_mb, work)
    shutil.rmtree(work, ignore_errors=True)


def run_rows(model: str, langs: list[str], mb: float, work: Path) -> None:
    """`tokenmill run` on about `mb` MB with each encoder (default local run, this machine's CPUs)."""
    data = work / "in"
    data.mkdir()
    with open(data / "part.jsonl", "w", encoding="utf-8") as handle:
        for text in texts_of(langs, mb / len(langs)):
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    for encoder in ("sentencepiece", "auto"):
        out = work / f"out-{encoder}"
        argv = [sys.executable, "-m", "jobs.cli", "run", "--input", str(data / "*.jsonl")]
        argv += ["--output", str(out), "--tokenizer", f"sentencepiece:{model}", "--no-progress"]
        argv += ["--encoder", encoder]
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
        seconds = time.perf_counter() - t0
        summary = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("{")))
        print(
            f"  tokenmill run --encoder {encoder:13s} {summary['bytes'] / 1e6:.0f} MB in "
            f"{seconds:.1f} s ({summary['bytes'] / seconds / 1e6:.1f} MB/s end to end, encoder "
            f"{summary['encoder']}, {summary['verified_documents']} documents verified)"
        )


if __name__ == "__main__":
    main()
