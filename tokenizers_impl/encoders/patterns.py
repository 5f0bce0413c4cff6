"""Pre-tokenizer split regexes: the public ones by name (as tiktoken defines them) and the one a
`tokenizers` byte-level BPE applies, read from its tokenizer.json."""

from __future__ import annotations

from typing import Any

# GPT-2's pre-tokenizer regex, the one `tokenizers`' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# The split regexes of OpenAI's public encodings (tiktoken_ext/openai_public.py).
R50K_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
# The cl100k regex as Llama-3-style tokenizer.json files write it (no possessive quantifiers).
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

NAMED_PATTERNS = {
    "gpt2": R50K_PATTERN,
    "r50k_base": R50K_PATTERN,
    "p50k_base": R50K_PATTERN,
    "cl100k_base": CL100K_PATTERN,
    "o200k_base": O200K_PATTERN,
}


def pattern_name(pattern: str) -> str | None:
    """The public name of a split regex, when it is one of NAMED_PATTERNS or GPT-2's."""
    if pattern == GPT2_PATTERN:
        return "gpt2"
    if pattern == LLAMA3_PATTERN:
        return "cl100k_base"
    return next((name for name, p in NAMED_PATTERNS.items() if p == pattern), None)


def split_pattern(config: dict[str, Any]) -> str | None:
    """The one split regex a `tokenizers` byte-level BPE applies before merging, or None when its
    pipeline is not "split by one regex, then map bytes": it must be a BPE model without a
    normalizer, and its pre-tokenizer either GPT-2's `ByteLevel(use_regex=True)` or
    `Sequence[Split(Regex(R), behavior=Isolated), ByteLevel(use_regex=False)]` (Llama-3, GPT-4
    and Qwen style), neither adding a prefix space."""
    model = config.get("model") or {}
    if config.get("normalizer") or model.get("type") != "BPE":
        return None
    pre = config.get("pre_tokenizer") or {}
    steps = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    if not steps or not _plain_byte_level(steps[-1]):
        return None
    if len(steps) == 1:
        return GPT2_PATTERN if steps[0].get("use_regex", True) else None
    split = steps[0]
    regex = (split.get("pattern") or {}).get("Regex")
    if (
        len(steps) != 2
        or split.get("type") != "Split"
        or not isinstance(regex, str)
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or steps[1].get("use_regex", True)
    ):
        return None
    return regex


def _plain_byte_level(step: dict[str, Any]) -> bool:
    return step.get("type") == "ByteLevel" and not step.get("add_prefix_space")
