"""`tokenmill demo`: the main job on the bundled sample corpus with local defaults."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import click

from pipeline.config import load_config
from pipeline.engine import run_job
from pipeline.ledger import committed_entries
from pipeline.shards import read_ipc
from pipeline.storage import Output
from pipeline.verify import verify_output
from tokenizers_impl.bpe import BPETokenizer

DEMO_VOCAB = 8000


def run_demo(output: str, actors: int | None, sample_glob: str) -> dict:
    tok_path = os.path.join(output, "tokenizer", f"bpe-{DEMO_VOCAB}.json")
    if not os.path.exists(tok_path):
        from jobs.corpus_text import iter_texts

        click.echo(f"training a byte-level BPE ({DEMO_VOCAB} tokens) on {sample_glob}", err=True)
        cfg = load_config(input=[sample_glob], output=output, tokenizer=f"bpe:{tok_path}")
        BPETokenizer.train(iter_texts(cfg), vocab_size=DEMO_VOCAB).save(tok_path)
    cfg = load_config(input=[sample_glob], output=os.path.join(output, "tokens"),
                      tokenizer=f"bpe:{tok_path}", actors=actors)
    summary = run_job(cfg)
    report = verify_output(cfg.output)
    table = _language_table(cfg.output)
    click.echo(f"\nshards:      {os.path.abspath(cfg.output)}/shards", err=True)
    click.echo(f"ledger:      {os.path.abspath(cfg.output)}/ledger", err=True)
    click.echo(f"run summary: {os.path.abspath(cfg.output)}/{summary['summary_path']}", err=True)
    click.echo(f"verify:      {'OK' if report['ok'] else 'FAILED'} ({report['units']} units, "
               f"{report['documents']} documents, {report['tokens']} tokens, {report['rejected']} rejected)",
               err=True)
    click.echo("\n" + table, err=True)
    result = {"summary": summary, "verify": report}
    click.echo(json.dumps({"shards": f"{cfg.output}/shards", "documents": report["documents"],
                           "tokens": report["tokens"], "ok": report["ok"]}))
    return result


def _language_table(url: str) -> str:
    output = Output(url)
    agg: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for entry in committed_entries(output):
        table = read_ipc(output, entry["shard"]).select(["lang", "n_tokens", "n_bytes", "n_words"])
        for lang, n_tok, n_b, n_w in zip(*(table[c].to_pylist() for c in table.column_names), strict=True):
            row = agg[lang or "?"]
            row[0] += 1
            row[1] += n_tok
            row[2] += n_b
            row[3] += n_w
    lines = [f"{'lang':<6}{'docs':>7}{'tokens':>10}{'bytes/token':>13}{'tokens/word':>13}"]
    for lang in sorted(agg):
        docs, toks, nbytes, words = agg[lang]
        lines.append(f"{lang:<6}{docs:>7}{toks:>10}{nbytes / max(toks, 1):>13.2f}{toks / max(words, 1):>13.2f}")
    return "\n".join(lines)


__all__ = ["run_demo"]
