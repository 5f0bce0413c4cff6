"""Benchmark: LiB against byte-level BPE per language on the bench corpus, side by side.

Each language: LiB trains on the first --train-mb of documents, BPE (tokenizers_impl.bpe) trains on
the same text with LiB's final vocabulary size, and both encode the next --eval-mb (held out).
Speeds are per core: CPU seconds of this one process (the machine may be shared).

    .venv/bin/python bench/lib_vs_bpe.py --train-mb 2 --eval-mb 1
    .venv/bin/python bench/lib_vs_bpe.py --reference-scale   # LiB only, English, 35 M chars

--reference-scale trains LiB alone on the reference's amount of English (the first 35 M characters
of en.jsonl, sentences = lines, default parameters) and prints the figures quoted in issue 3 next to
the reference's.

--reference-dir DIR runs the authors' 2023 code (github.com/ray306/LiB: model.py + structures.py,
fetched by the user into DIR, never part of this project) side by side with LiB on the same English
lines cut into the same documents (--doc-sentences, default 200 as in its demo.ipynb; --lines to
take fewer than the 35 M characters; --shuffle-lines to sample sentences at random as the demo
does), each document read once in the same order, both with their default parameters. Both final
lexicons encode the same held-out text with LiB's encoder (bytes per token), and the reference's own
(greedy) segmentation is timed on part of it. Skipped with a message when DIR has no model.py.

    .venv/bin/python bench/lib_vs_bpe.py --reference-dir /tmp/lib-reference --lines 100000
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenizers_impl.bpe import BPETokenizer  # noqa: E402
from tokenizers_impl.lib import LiBTokenizer  # noqa: E402

CORPUS = Path("/tmp/tokenmill-bench-corpus/corpus")
LANGS = ("en", "de", "ru", "zh", "code")
# The authors' 2023 Python code, default parameters, English sample (quoted in issue 3).
REFERENCE = {
    "sentences": 786_000,
    "chars": 35e6,
    "train_s": 127.0,
    "s_per_1k_sentences": 0.16,
    "units": 16_500,
    "with_space": 0.64,
    "encode_mb_s": 1.2,
    "bytes_per_token": 7.5,
}


def read_split(path: Path, train_bytes: int, eval_bytes: int) -> tuple[list[str], list[str]]:
    train: list[str] = []
    held: list[str] = []
    size = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            if size < train_bytes:
                train.append(text)
            elif size < train_bytes + eval_bytes:
                held.append(text)
            else:
                break
            size += len(text.encode("utf-8"))
    return train, held


def cpu_timed(fn):
    started = time.process_time()
    result = fn()
    return result, time.process_time() - started


def vocabulary_figures(token_bytes: list[bytes]) -> dict[str, float]:
    """Share of tokens holding a space, and holding a space between two non-space bytes."""
    real = [t for t in token_bytes if t]
    with_space = sum(1 for t in real if b" " in t)
    multiword = sum(1 for t in real if b" " in t.strip())
    return {"with_space": with_space / len(real), "multiword": multiword / len(real)}


def usage_figures(tok, texts: list[str], encoded) -> dict[str, float]:
    n_tokens = sum(len(ids) for ids in encoded)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    counts = Counter()
    for ids in encoded:
        counts.update(ids.tolist())
    entropy = -sum(c / n_tokens * math.log(c / n_tokens) for c in counts.values())
    return {
        "tokens": n_tokens,
        "tokens_per_word": n_tokens / max(1, n_words),
        "bytes_per_token": n_bytes / max(1, n_tokens),
        "types_used": len(counts),
        "shannon_eff": entropy / math.log(tok.vocab_size),
    }


def encode_speed(tok, texts: list[str]) -> tuple[list, float, float]:
    """Encode the held-out texts; MB/s per core over all of them and over their second half only
    (the second half is timed after the first, so any warm-up is excluded from it)."""
    half = len(texts) // 2
    first, first_s = cpu_timed(lambda: tok.encode_batch(texts[:half]))
    second, second_s = cpu_timed(lambda: tok.encode_batch(texts[half:]))
    sizes = [sum(len(t.encode("utf-8")) for t in part) for part in (texts[:half], texts[half:])]
    return first + second, sum(sizes) / 1e6 / (first_s + second_s), sizes[1] / 1e6 / second_s


def bench_language(lang: str, args) -> dict[str, dict]:
    train, held = read_split(
        CORPUS / f"{lang}.jsonl", int(args.train_mb * 1e6), int(args.eval_mb * 1e6)
    )
    sentences = sum(len(t.splitlines()) for t in train)
    train_chars = sum(len(t) for t in train)
    held_bytes = sum(len(t.encode("utf-8")) for t in held)
    random.Random(0).shuffle(held)  # both halves from all sources
    lib, lib_train_s = cpu_timed(
        lambda: LiBTokenizer.train(
            train,
            vocab_size=args.vocab_cap,
            progress=args.progress,
            progress_every=max(1, len(train) // 5),
            **lib_hyper(args),
        )
    )
    bpe, bpe_train_s = cpu_timed(lambda: BPETokenizer.train(train, vocab_size=lib.vocab_size))
    rows: dict[str, dict] = {}
    for name, tok, train_s in (("lib", lib, lib_train_s), ("bpe", bpe, bpe_train_s)):
        encoded, mb_s, second_half_mb_s = encode_speed(tok, held)
        row = {
            "vocab": tok.vocab_size,
            "train_s": train_s,
            "s_per_1k_sent": train_s / max(1, sentences) * 1000,
            "encode_mb_s": mb_s,
            "encode_2nd_half_mb_s": second_half_mb_s,
        }
        row.update(vocabulary_figures([tok.token_bytes(i) for i in range(tok.vocab_size)]))
        row.update(usage_figures(tok, held, encoded))
        lossless = all(
            tok.decode_bytes(ids) == t.encode("utf-8") for ids, t in zip(encoded, held, strict=True)
        )
        row["lossless"] = lossless
        rows[name] = row
    rows["data"] = {
        "train_docs": len(train),
        "train_sentences": sentences,
        "train_mchars": train_chars / 1e6,
        "eval_docs": len(held),
        "eval_mb": held_bytes / 1e6,
    }
    return rows


def reference_scale(args) -> dict:
    """LiB on as much English as the reference trained on; its lexicon, speed and compression."""
    train, held, chars, held_chars = [], [], 0, 0
    with (CORPUS / "en.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            if chars < REFERENCE["chars"]:
                train.append(text)
                chars += len(text)
            elif held_chars < args.eval_mb * 1e6:
                held.append(text)
                held_chars += len(text)
            else:
                break
    sentences = sum(len(t.splitlines()) for t in train)
    lib, train_s = cpu_timed(
        lambda: LiBTokenizer.train(
            train,
            vocab_size=args.vocab_cap,
            progress=args.progress,
            progress_every=max(1, len(train) // 10),
            doc_sentences=args.doc_sentences,
            **lib_hyper(args),
        )
    )
    encoded, mb_s, second_half_mb_s = encode_speed(lib, held)
    row = {
        "train_sentences": sentences,
        "train_mchars": chars / 1e6,
        "train_s": train_s,
        "s_per_1k_sent": train_s / sentences * 1000,
        "units": len(lib.units),
        "encode_mb_s": mb_s,
        "encode_2nd_half_mb_s": second_half_mb_s,
    }
    row.update(vocabulary_figures([u.encode("utf-8") for u in lib.units]))
    row.update(usage_figures(lib, held, encoded))
    ref = REFERENCE
    print(
        f"LiB on en, {sentences} lines / {chars / 1e6:.1f} M chars, doc_sentences={args.doc_sentences}"
    )
    print(f"{'':18s}{'LiB':>12s}{'reference':>12s}")
    for name, value, ref_value, fmt in (
        ("train_s", train_s, ref["train_s"], "{:.1f}"),
        ("s_per_1k_sent", row["s_per_1k_sent"], ref["s_per_1k_sentences"], "{:.3f}"),
        ("units", row["units"], ref["units"], "{:.0f}"),
        ("with_space", row["with_space"], ref["with_space"], "{:.1%}"),
        ("multiword", row["multiword"], None, "{:.1%}"),
        ("bytes_per_token", row["bytes_per_token"], ref["bytes_per_token"], "{:.2f}"),
        ("encode_mb_s", mb_s, ref["encode_mb_s"], "{:.2f}"),
    ):
        ref_cell = "-" if ref_value is None else fmt.format(ref_value)
        print(f"{name:18s}{fmt.format(value):>12s}{ref_cell:>12s}")
    return row


def lib_hyper(args) -> dict:
    """The LiB hyperparameters given on the command line (the rest keep their defaults)."""
    hyper: dict = {}
    if args.admit_after is not None:
        hyper["admit_after"] = args.admit_after
    if args.new_on_probation is not None:
        hyper["new_on_probation"] = args.new_on_probation == "true"
    return hyper


def bench_lines(n_lines: int | None, held_chars: float) -> tuple[list[str], list[str]]:
    """English lines (kept with their endings) from the start of en.jsonl: up to `n_lines` or the
    reference's 35 M characters; then held-out lines worth `held_chars` characters."""
    train: list[str] = []
    held: list[str] = []
    chars = held_size = 0
    with (CORPUS / "en.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            for sentence in json.loads(line)["text"].splitlines(keepends=True):
                full = len(train) >= n_lines if n_lines else chars >= REFERENCE["chars"]
                if not full:
                    train.append(sentence)
                    chars += len(sentence)
                elif held_size < held_chars:
                    held.append(sentence)
                    held_size += len(sentence)
                else:
                    return train, held
    return train, held


def load_reference(directory: Path | None):
    """The authors' model module from `directory`, or None (with the reason printed)."""
    if directory is None or not (directory / "model.py").is_file():
        print(f"reference: skipped (no model.py in {directory})")
        return None
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("model")
    except Exception as exc:  # its own imports (numba, numpy) may be missing
        print(f"reference: skipped (importing {directory / 'model.py'} failed: {exc!r})")
        return None
    finally:
        sys.path.remove(str(directory))


def train_reference(model, documents: list[list[str]], seed: int, progress_every: int):
    """The reference's own loop body (model.run without its periodic evaluation): init with the
    characters of the first document, then model.reading(memory, document) per document."""
    random.seed(seed)  # the reference draws from the global `random`
    memory = model.TrieList()
    model.init(memory, documents[0])
    started = time.perf_counter()
    for i, document in enumerate(documents, 1):
        model.reading(memory, document)
        if progress_every and i % progress_every == 0:
            print(
                f"reference: {i} docs, lexicon {len(memory)}, {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return list(memory.par_list), memory


def reference_compare(args) -> dict:
    """LiB and the authors' code on the same documents, side by side."""
    model = load_reference(args.reference_dir)
    lines, held = bench_lines(args.lines, args.eval_mb * 1e6)
    if args.shuffle_lines:
        random.Random(args.seed).shuffle(lines)
    size = args.doc_sentences or 200
    documents = [lines[i : i + size] for i in range(0, len(lines), size)]
    chars = sum(map(len, lines))
    every = max(1, len(documents) // 10) if args.progress else 0
    hyper = {"seed": args.seed, **lib_hyper(args)}
    lib, lib_s = cpu_timed(
        lambda: LiBTokenizer.train(
            ["".join(d) for d in documents],  # one text per document, no held-back sample
            vocab_size=args.vocab_cap,
            progress=args.progress,
            progress_every=every or 1,
            sample_sentences=0,
            **hyper,
        )
    )
    columns = {"lib": (lib.units, lib_s, None)}
    if model is not None:
        (units, memory), ref_s = cpu_timed(lambda: train_reference(model, documents, 0, every))
        columns["reference"] = (units, ref_s, memory)
    held_bytes = sum(len(t.encode("utf-8")) for t in held)
    rows: dict[str, dict] = {}
    for name, (units, train_s, memory) in columns.items():
        tok = lib if name == "lib" else LiBTokenizer.from_lexicon(units)
        encoded, mb_s, _ = encode_speed(tok, held)
        row = {
            "units": len(units),
            "train_s": train_s,
            "s_per_1k_sent": train_s / len(lines) * 1000,
            "us_per_char": train_s / chars * 1e6,
            "encode_mb_s": mb_s,  # with LiB's encoder, for both lexicons
        }
        row.update(vocabulary_figures([u.encode("utf-8", "surrogatepass") for u in units]))
        row.update(usage_figures(tok, held, encoded))
        if memory is not None:  # the reference's own segmentation (greedy longest match)
            part = held[: max(1, len(held) // 4)]
            chunks, own_s = cpu_timed(
                lambda m=memory, p=part: model.show_reading(m, p, return_chunks=True)
            )
            part_bytes = sum(len(t.encode("utf-8")) for t in part)
            row["own_encode_mb_s"] = part_bytes / 1e6 / own_s
            row["own_bytes_per_token"] = part_bytes / len(chunks)
        rows[name] = row
    print(
        f"\n== en: {len(lines)} lines / {chars / 1e6:.2f} M chars in {len(documents)} documents "
        f"of {size} lines{' (shuffled lines)' if args.shuffle_lines else ''}; held out "
        f"{len(held)} lines / {held_bytes / 1e6:.2f} MB; LiB params {lib.params.to_dict()}"
    )
    names = list(rows)
    print(f"{'':20s}" + "".join(f"{n:>12s}" for n in names))
    for field, fmt in (
        ("units", "{:.0f}"),
        ("with_space", "{:.1%}"),
        ("multiword", "{:.1%}"),
        ("train_s", "{:.1f}"),
        ("s_per_1k_sent", "{:.3f}"),
        ("us_per_char", "{:.2f}"),
        ("bytes_per_token", "{:.2f}"),
        ("tokens_per_word", "{:.3f}"),
        ("types_used", "{:.0f}"),
        ("encode_mb_s", "{:.2f}"),
        ("own_bytes_per_token", "{:.2f}"),
        ("own_encode_mb_s", "{:.2f}"),
    ):
        cells = [fmt.format(rows[n][field]) if field in rows[n] else "-" for n in names]
        print(f"{field:20s}" + "".join(f"{c:>12s}" for c in cells))
    return rows


FIELDS = [
    ("vocab", "{:.0f}"),
    ("train_s", "{:.1f}"),
    ("s_per_1k_sent", "{:.3f}"),
    ("with_space", "{:.1%}"),
    ("multiword", "{:.1%}"),
    ("tokens_per_word", "{:.3f}"),
    ("bytes_per_token", "{:.2f}"),
    ("types_used", "{:.0f}"),
    ("shannon_eff", "{:.3f}"),
    ("encode_mb_s", "{:.2f}"),
    ("encode_2nd_half_mb_s", "{:.2f}"),
    ("lossless", "{}"),
]


def print_language(lang: str, rows: dict[str, dict]) -> None:
    data = rows["data"]
    print(
        f"\n== {lang}: train {data['train_docs']} docs / {data['train_sentences']} lines / "
        f"{data['train_mchars']:.2f} M chars; encode {data['eval_docs']} held-out docs / "
        f"{data['eval_mb']:.2f} MB"
    )
    print(f"{'':18s}{'LiB':>12s}{'BPE':>12s}")
    for field, fmt in FIELDS:
        cells = [fmt.format(rows[n][field]) if field in rows[n] else "-" for n in ("lib", "bpe")]
        print(f"{field:18s}{cells[0]:>12s}{cells[1]:>12s}")
    ratios = [rows["lib"][f] / rows["bpe"][f] for f in ("encode_mb_s", "encode_2nd_half_mb_s")]
    print(f"{'lib/bpe encode':18s}{ratios[0]:>11.2f}x{ratios[1]:>11.2f}x (all / 2nd half)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-mb", type=float, default=2.0, help="training text per language")
    parser.add_argument("--eval-mb", type=float, default=1.0, help="held-out text to encode")
    parser.add_argument("--langs", default=",".join(LANGS))
    parser.add_argument("--vocab-cap", type=int, default=None, help="LiB hard vocabulary cap")
    parser.add_argument("--progress", action="store_true", help="LiB training progress lines")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    parser.add_argument(
        "--reference-scale",
        action="store_true",
        help="LiB only, on the reference's 35 M characters of English (see the module doc)",
    )
    parser.add_argument(
        "--doc-sentences",
        type=int,
        default=None,
        help="LiB document = N lines (with --reference-scale; --reference-dir: default 200)",
    )
    parser.add_argument(
        "--admit-after",
        type=int,
        default=None,
        help="LiB admit_after (proposals within a document before a unit is added; default 1)",
    )
    parser.add_argument(
        "--new-on-probation",
        choices=("true", "false"),
        default=None,
        help="LiB new_on_probation (default true; false = the authors' 2023 code)",
    )
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=None,
        help="directory holding the authors' model.py + structures.py: run it side by side",
    )
    parser.add_argument("--lines", type=int, default=None, help="--reference-dir: English lines")
    parser.add_argument("--shuffle-lines", action="store_true", help="--reference-dir: as its demo")
    parser.add_argument("--seed", type=int, default=0, help="--reference-dir: seed of both")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"bench corpus not found at {CORPUS}")
    if args.reference_dir is not None:
        rows = reference_compare(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    if args.reference_scale:
        row = reference_scale(args)
        if args.json:
            args.json.write_text(json.dumps(row, indent=1))
        return
    results = {}
    for lang in args.langs.split(","):
        results[lang] = bench_language(lang, args)
        print_language(lang, results[lang])
    ref = REFERENCE
    print(
        f"\nreference (authors' 2023 code, en, {ref['sentences']} sentences / "
        f"{ref['chars'] / 1e6:.0f} M chars): {ref['train_s']:.0f} s = "
        f"{ref['s_per_1k_sentences']} s per 1k sentences, {ref['units']} units, "
        f"{ref['with_space']:.0%} with a space, encode {ref['encode_mb_s']} MB/s, "
        f"{ref['bytes_per_token']} bytes/token"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
