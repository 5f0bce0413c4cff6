"""Old path of `tokenizers_impl.dynamic_merge.pretokens`, kept while bench/dynamic_merge.py
imports it; import from `tokenizers_impl.dynamic_merge` instead."""

from tokenizers_impl.dynamic_merge.pretokens import WORD_PATTERN, batch_pretoken_starts

__all__ = ["WORD_PATTERN", "batch_pretoken_starts"]
