"""Byte-token conversion: byte offsets of tokens, cover encodings, and exact next-byte probabilities.

docs/algorithms.md section 4 ("Byte-token conversion", Phan et al. 2024); docs/byte_token.md for
users. Works for any `TokenizerBase` plugin and any token-level model following `TokenModel`.

Conventions
- A token model is a callable `model(contexts) -> np.ndarray` of next-token log-probabilities with
  shape [len(contexts), vocab_size + 1]; the last column is end-of-text. A context is the list of
  token ids of the document so far (no BOS: the empty list is the start of a document).
- Next-byte distributions are dicts with the 256 int keys 0..255 plus the key `EOT` ("<eot>").
- Byte strings that are not valid UTF-8 (a prefix cut inside a character) are encoded only by
  tokenizers with the `encode_bytes` capability (`supports_encode_bytes`; `bpe` has it on its
  tiktoken fast path); for any other tokenizer such a byte string has no encoding, so no split
  point and no canonical encoding ends there (see docs/byte_token.md).

Modules: `alignment` (byte offsets), `codec` (token trie, canonical encoding, covers), `models`
(token-model wrappers), `distributions` (the lemma, baselines, ensembles, generation), `reference`
(a longest-prefix tokenizer over raw bytes). This package only re-exports.
"""

from tokenizers_impl.byte_token.alignment import (
    byte_span_to_tokens,
    token_end_offsets,
    tokens_to_byte_span,
)
from tokenizers_impl.byte_token.codec import (
    NO_BYTE,
    PROBES,
    ByteCodec,
    TokenTrie,
    VocabScan,
    codec,
    cover_encodings,
    is_canonical,
)
from tokenizers_impl.byte_token.distributions import (
    EOT,
    ByteState,
    ZeroProbabilityPrefix,
    byte_prob,
    ensemble_next_byte_distribution,
    generate_bytes,
    log_byte_prob,
    naive_next_byte_distribution,
    next_byte_distribution,
    token_healing_distribution,
)
from tokenizers_impl.byte_token.models import CachedModel, CanonicalModel, TokenModel
from tokenizers_impl.byte_token.reference import LongestPrefixTokenizer

__all__ = [
    "EOT",
    "NO_BYTE",
    "PROBES",
    "ByteCodec",
    "ByteState",
    "CachedModel",
    "CanonicalModel",
    "LongestPrefixTokenizer",
    "TokenModel",
    "TokenTrie",
    "VocabScan",
    "ZeroProbabilityPrefix",
    "byte_prob",
    "byte_span_to_tokens",
    "codec",
    "cover_encodings",
    "ensemble_next_byte_distribution",
    "generate_bytes",
    "is_canonical",
    "log_byte_prob",
    "naive_next_byte_distribution",
    "next_byte_distribution",
    "token_end_offsets",
    "token_healing_distribution",
    "tokens_to_byte_span",
]
