"""tokenmill's tokenizer plugins: one protocol (`base.Tokenizer`), a registry, and the built-in kinds."""

from tokenizers_impl.base import (
    EncodedBatch,
    Tokenizer,
    TokenizerBase,
    TokenizerError,
    load_tokenizer,
    register,
    registered_kinds,
)

__all__ = [
    "EncodedBatch",
    "Tokenizer",
    "TokenizerBase",
    "TokenizerError",
    "load_tokenizer",
    "register",
    "registered_kinds",
]
