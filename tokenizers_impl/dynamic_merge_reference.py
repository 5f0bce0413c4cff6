"""Old path of `tokenizers_impl.dynamic_merge.reference`, kept while bench/dynamic_merge.py
imports it; import from `tokenizers_impl.dynamic_merge` instead."""

from tokenizers_impl.dynamic_merge.reference import recount_merges

__all__ = ["recount_merges"]
