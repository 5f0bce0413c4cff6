"""`tokenmill demo`: the main job on the bundled sample corpus with local defaults."""

from __future__ import annotations

import json
import os

import click

from pipeline.analytics import summary_table
from pipeline.analytics_report import build_report, write_report
from pipeline.config import load_config
from pipeline.engine import run_job
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
    cfg = load_config(
        input=[sample_glob],
        output=os.path.join(output, "tokens"),
        tokenizer=f"bpe:{tok_path}",
        actors=actors,
    )
    summary = run_job(cfg)
    report = verify_output(cfg.output)
    report_dir = os.path.join(output, "report")
    analytics = build_report([cfg.output])
    write_report(analytics, report_dir)
    table = summary_table(cfg.output)
    click.echo(f"\nshards:      {os.path.abspath(cfg.output)}/shards", err=True)
    click.echo(f"ledger:      {os.path.abspath(cfg.output)}/ledger", err=True)
    click.echo(f"run summary: {os.path.abspath(cfg.output)}/{summary['summary_path']}", err=True)
    click.echo(f"report:      {os.path.abspath(report_dir)}/report.html (and report.md)", err=True)
    click.echo(
        f"verify:      {'OK' if report['ok'] else 'FAILED'} ({report['units']} units, "
        f"{report['documents']} documents, {report['tokens']} tokens, {report['rejected']} rejected)",
        err=True,
    )
    click.echo("\n" + table, err=True)
    result = {"summary": summary, "verify": report}
    click.echo(
        json.dumps(
            {
                "shards": f"{cfg.output}/shards",
                "documents": report["documents"],
                "tokens": report["tokens"],
                "ok": report["ok"],
            }
        )
    )
    return result
