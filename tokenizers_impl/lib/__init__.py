"""LiB ("Less-is-Better") tokenizer plugin (`lib`), docs/algorithms.md section 2 and docs/lib.md.

Modules: `tokenizer` (the plugin class and its file format), `training` (the online lexicon
learner), `lexicon` (ranks + trie), `ranks` (numba treap kernels), `encoding` and `kernels` (the
frozen-lexicon encoder). This package only re-exports; its modules import each other directly.
"""

from tokenizers_impl.lib.encoding import LiBEncoder
from tokenizers_impl.lib.tokenizer import (
    EOS,
    FORMAT,
    MAX_UNIT_CHARS,
    MAX_UNITS,
    N_BYTES,
    VERSION,
    LiBTokenizer,
    Progress,
)
from tokenizers_impl.lib.training import LiBParams, LiBTrainer, segment

__all__ = [
    "EOS",
    "FORMAT",
    "MAX_UNITS",
    "MAX_UNIT_CHARS",
    "N_BYTES",
    "VERSION",
    "LiBEncoder",
    "LiBParams",
    "LiBTokenizer",
    "LiBTrainer",
    "Progress",
    "segment",
]
