"""Old path of `tokenizers_impl.dynamic_merge.merging`, kept while bench/dynamic_merge.py
imports it; import from `tokenizers_impl.dynamic_merge` instead."""

from tokenizers_impl.dynamic_merge.merging import BaseBatch, MergeResult, expand, merge_batch_ids

__all__ = ["BaseBatch", "MergeResult", "expand", "merge_batch_ids"]
