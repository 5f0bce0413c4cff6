"""The report's PNG charts (matplotlib, Agg): bytes per token, document length histograms and
vocabulary use, from the report tables."""

from __future__ import annotations

import io

import pyarrow as pa

CHART_TITLES = {
    "bytes_per_token.png": "Bytes per token by language and tokenizer",
    "length_histogram.png": "Document length histograms (tokens)",
    "vocab_use.png": "Vocabulary use",
}


def _grouped_bars(ax, table: pa.Table, value: str, ylabel: str) -> None:
    rows = table.select(["tokenizer", "lang", value]).to_pylist()
    langs = sorted({str(r["lang"]) for r in rows})
    names = sorted({r["tokenizer"] for r in rows})
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = {str(r["lang"]): r[value] for r in rows if r["tokenizer"] == name}
        xs = [j + i * width for j in range(len(langs))]
        ax.bar(xs, [values.get(lang) or 0 for lang in langs], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(langs))], langs)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def render_charts(tables: dict[str, pa.Table]) -> dict[str, bytes]:
    """PNG bytes of the three report charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        return buf.getvalue()

    by_lang = tables["by_lang"]
    charts = {}
    fig, ax = plt.subplots(figsize=(8, 4))
    _grouped_bars(ax, by_lang, "bytes_per_token", "UTF-8 bytes per token")
    ax.set_title(CHART_TITLES["bytes_per_token.png"])
    charts["bytes_per_token.png"] = png(fig)

    hist = tables["length_histogram"].to_pylist()
    names = sorted({r["tokenizer"] for r in hist})
    fig, axes = plt.subplots(
        1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.5), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names, strict=False):
        for lang in sorted({str(r["lang"]) for r in hist if r["tokenizer"] == name}):
            pts = sorted(
                (r["bin"], r["documents"])
                for r in hist
                if r["tokenizer"] == name and str(r["lang"]) == lang
            )
            ax.step(
                [2.0 ** max(b, 0) for b, _ in pts], [n for _, n in pts], where="post", label=lang
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (tokens, log2 bins)")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("documents")
    charts["length_histogram.png"] = png(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _grouped_bars(left, by_lang, "vocab_share", "share of vocabulary seen")
    _grouped_bars(right, by_lang, "types_per_million", "token types per 1M tokens")
    fig.suptitle(CHART_TITLES["vocab_use.png"])
    charts["vocab_use.png"] = png(fig)
    return charts
