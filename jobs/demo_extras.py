"""The short chat and export parts of `tokenmill demo`: one chat corpus tokenized with a loss mask
(one conversation shown with its trained tokens in [[ ]]), and the sample's tokens exported to
Megatron's .bin/.idx and the chats to HF Parquet, each verified against the shards."""

from __future__ import annotations

import os

import click

from jobs.common import REPO_ROOT

CHAT_GLOB = str(REPO_ROOT / "data" / "chat" / "*.jsonl")


def chat_example(output: str, tok_path: str, actors: int | None) -> str:
    """Tokenize the bundled conversations (chatml, assistant turns trained); returns the output."""
    from pipeline.tokenize.config import load_config
    from pipeline.tokenize.engine import run_job

    cfg = load_config(
        input=[CHAT_GLOB],
        output=os.path.join(output, "chat"),
        tokenizer=f"bpe:{tok_path}",
        format="chat",
        chat_template="chatml",
        actors=actors,
    )
    summary = run_job(cfg)
    rows, reasons = _chat_rows(cfg.output)
    trained = sum(sum(r["loss_mask"]) for r in rows)
    total = sum(r["n_tokens"] for r in rows)
    click.echo(
        f"chat:        {summary.docs_read} conversations -> {summary.documents} documents, "
        f"{summary.rejected} rejected ({'; '.join(reasons)}); loss_mask 1 on {trained} of "
        f"{total} tokens (assistant turns)",
        err=True,
    )
    click.echo(f"             e.g. {_marked(tok_path, rows[0])!r}", err=True)
    return cfg.output


def _chat_rows(output: str) -> tuple[list[dict], list[str]]:
    from pipeline.output import Output, iter_committed
    from pipeline.output.shards import read_ipc

    out = Output(output)
    rows: list[dict] = []
    reasons: list[str] = []
    for entry in iter_committed(out):
        rows += read_ipc(out, entry.shard).to_pylist()
        if entry.rejects:
            reasons += [r["reason"] for r in read_ipc(out, entry.rejects).to_pylist()]
    rows.sort(key=lambda r: r["doc_id"])
    return rows, reasons


def _marked(tok_path: str, row: dict) -> str:
    """The conversation's text with the tokens it trains on inside [[ ]]."""
    from tokenizers_impl.bpe import BPETokenizer

    tok = BPETokenizer.load(tok_path)
    parts: list[str] = []
    run: list[int] = []
    flag = None
    for token, mask in [*zip(row["tokens"], row["loss_mask"], strict=True), (None, None)]:
        if mask != flag and run:
            text = tok.decode(run)
            parts.append(f"[[{text}]]" if flag else text)
            run = []
        flag = mask
        if token is not None:
            run.append(token)
    return "".join(parts)


def export_examples(output: str, tokens_output: str, chat_output: str) -> None:
    """Export the sample's tokens to Megatron and the chats to HF Parquet; both verified."""
    from pipeline.export import ExportOptions, export_output

    for name, source, options in (
        ("megatron", tokens_output, ExportOptions("megatron", append_eod=True, overwrite=True)),
        ("chat-hf", chat_output, ExportOptions("hf", append_eod=True, overwrite=True)),
    ):
        dest = os.path.join(output, "export", name)
        report = export_output(source, dest, options)
        status = "verified" if report.ok else f"FAILED: {'; '.join(report.problems[:3])}"
        m = report.manifest
        click.echo(
            f"export:      {options.format:<8} {os.path.abspath(dest)} ({m.get('documents')} "
            f"documents, {m.get('tokens')} tokens; {status})",
            err=True,
        )
