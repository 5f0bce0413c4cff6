"""`tokenmill demo`: the main job on the bundled sample corpus with local defaults."""

from __future__ import annotations

import json
import os

import click

from jobs.common import SAMPLE_GLOB, reports_user_errors

DEMO_VOCAB = 8000


def run_demo(output: str, actors: int | None, sample_glob: str = SAMPLE_GLOB) -> dict:
    """Train a BPE on the sample (once), tokenize it, verify, report; returns summary and verify."""
    from jobs.demo_extras import chat_example, export_examples
    from pipeline.analytics import build_report, summary_table, write_report
    from pipeline.output.verify import verify_output
    from pipeline.tokenize.config import load_config
    from pipeline.tokenize.engine import run_job
    from tokenizers_impl.bpe import BPETokenizer

    tok_path = os.path.join(output, "tokenizer", f"bpe-{DEMO_VOCAB}.json")
    if not os.path.exists(tok_path):
        from jobs.corpus_text import iter_texts

        click.echo(f"training a byte-level BPE ({DEMO_VOCAB} tokens) on {sample_glob}", err=True)
        cfg = load_config(input=[sample_glob], output=output, tokenizer=f"bpe:{tok_path}")
        specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # EOS, and chatml's turns
        BPETokenizer.train(iter_texts(cfg), DEMO_VOCAB, special_tokens=specials).save(tok_path)
    cfg = load_config(
        input=[sample_glob],
        output=os.path.join(output, "tokens"),
        tokenizer=f"bpe:{tok_path}",
        actors=actors,
    )
    summary = run_job(cfg)
    report = verify_output(cfg.output)
    report_dir = os.path.join(output, "report")
    write_report(build_report([cfg.output]), report_dir)
    where = os.path.abspath(cfg.output)
    click.echo(f"\nshards:      {where}/shards", err=True)
    click.echo(f"ledger:      {where}/ledger", err=True)
    click.echo(f"run summary: {where}/{summary.summary_path}", err=True)
    click.echo(f"report:      {os.path.abspath(report_dir)}/report.html (and report.md)", err=True)
    click.echo(
        f"verify:      {'OK' if report.ok else 'FAILED'} ({report.units} units, "
        f"{report.documents} documents, {report.tokens} tokens, {report.rejected} rejected)",
        err=True,
    )
    chat_output = chat_example(output, tok_path, actors)
    export_examples(output, cfg.output, chat_output)
    click.echo("\n" + summary_table(cfg.output), err=True)
    shards = {"shards": f"{cfg.output}/shards", "documents": report.documents}
    click.echo(json.dumps({**shards, "tokens": report.tokens, "ok": report.ok}))
    return {"summary": summary, "verify": report}


@click.command("demo")
@click.option("--output", default="out/demo", show_default=True, metavar="DIR")
@click.option("--actors", type=int, default=None)
@reports_user_errors
def demo_cmd(output: str, actors: int | None) -> None:
    """Train a byte-level BPE on the bundled sample corpus, tokenize it, verify, and summarise."""
    run_demo(output, actors=actors)
