"""Single-thread encode throughput of every encoder backend of a `bpe` tokenizer (a measuring
script, not a test; docs/encoders.md has the table it printed):

    python -m tokenizers_impl.encoders.timing data/sample/*.jsonl

Trains a byte-level BPE (`--vocab`, `--style gpt2|split`) on the files' "text" fields unless
`--tokenizer PATH` names a tokenizer.json, then encodes the texts in batches of `--batch`
documents with each backend: `cold` is the first pass over the texts after loading (the gate's
probes are all a backend has seen), `warm` the best of `--repeat` further passes (a backend with
pre-token caches, gigatoken, has seen every word by then). MB/s counts UTF-8 bytes."""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # single thread: set before the libraries load
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

from tokenizers_impl.errors import TokenizerError  # noqa: E402


def _texts(paths: Sequence[str]) -> list[str]:
    out: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            out += [json.loads(line)["text"] for line in handle if line.strip()]
    return out


def _tokenizer(args: argparse.Namespace, texts: list[str]):
    from tokenizers import Tokenizer as HFTokenizer

    from tokenizers_impl.bpe import BPETokenizer, train_byte_level
    from tokenizers_impl.encoders.patterns import LLAMA3_PATTERN

    if args.tokenizer:
        with open(args.tokenizer, encoding="utf-8") as handle:
            return HFTokenizer.from_str(handle.read())
    if args.style == "split":  # a Llama-3-style pre-tokenizer
        return train_byte_level(texts, args.vocab, split_pattern=LLAMA3_PATTERN)
    return BPETokenizer.train(texts, vocab_size=args.vocab).hf


def _mb_s(
    encode: Callable[[list[str]], object], texts: list[str], batch: int, nbytes: int
) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        encode(texts[start : start + batch])
    return nbytes / (time.perf_counter() - t0) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    from tokenizers_impl.bpe import BPETokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--tokenizer", help="a tokenizer.json (default: train one)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--style", choices=("gpt2", "split"), default="gpt2")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    texts = _texts(args.files)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    hf = _tokenizer(args, texts)
    print(f"{len(texts)} texts, {nbytes / 1e6:.2f} MB, vocab {hf.get_vocab_size()}, {args.style}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus (single thread)")
    print(f"{'backend':<24}{'version':<10}{'cold MB/s':>10}{'warm MB/s':>10}")
    for backend in ("tokenizers", "tiktoken", "gigatoken"):
        try:
            tok = BPETokenizer(hf, encoder=backend)
        except TokenizerError as exc:
            print(f"{backend:<24}unavailable: {exc}")
            continue
        ways = {f"{backend} (flat)": tok.encode_batch_flat}
        if backend == "gigatoken":  # a fresh encoder, so that its first pass is cold too
            inner = BPETokenizer(hf, encoder=backend)._encoder._backend
            ways["gigatoken (lists)"] = lambda b, inner=inner: inner.encode_batch_list(
                b, parallel=False
            )
        for label, encode in ways.items():
            cold = _mb_s(encode, texts, args.batch, nbytes)
            warm = max(_mb_s(encode, texts, args.batch, nbytes) for _ in range(args.repeat))
            print(f"{label:<24}{tok.encoder_version:<10}{cold:>10.1f}{warm:>10.1f}")


if __name__ == "__main__":
    main()
