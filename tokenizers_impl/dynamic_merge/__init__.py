"""Dynamic batch-level merging (`dynamic_merge`), docs/algorithms.md section 3 and
docs/dynamic_merge.md.

Modules: `tokenizer` (the plugin class, its config file and sidecar rows), `merging` (the
incremental merge loop over a base-tokenized batch), `pretokens` (vectorised pre-token
boundaries), `reference` (the recount-per-merge oracle). This package only re-exports; importing
it registers the `dynamic_merge` kind.
"""

from tokenizers_impl.dynamic_merge.merging import BaseBatch, MergeResult, expand, merge_batch_ids
from tokenizers_impl.dynamic_merge.pretokens import WORD_PATTERN, batch_pretoken_starts
from tokenizers_impl.dynamic_merge.reference import recount_merges
from tokenizers_impl.dynamic_merge.tokenizer import (
    BOUNDARY_MODES,
    SIDECAR_SCHEMA,
    DynamicMergeTokenizer,
    vocab_from_sidecar,
)

__all__ = [
    "BOUNDARY_MODES",
    "SIDECAR_SCHEMA",
    "WORD_PATTERN",
    "BaseBatch",
    "DynamicMergeTokenizer",
    "MergeResult",
    "batch_pretoken_starts",
    "expand",
    "merge_batch_ids",
    "recount_merges",
    "vocab_from_sidecar",
]
