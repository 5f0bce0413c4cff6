"""Encoder backends of the BPE-style plugins behind one exactness gate.

A backend (`Encoder`: `encode_flat`, `encode_batch`, `name`, `version`) is one library that
encodes text into a tokenizer's ids: `tokenizers` (the reference of `bpe`), `tiktoken` and
`gigatoken`, one module each, built on first use by the registry. `select_encoder` picks the
fastest one that builds for a tokenizer and reproduces the reference on the probe set
(`probes.probe_set`), and records why each faster one was passed over. docs/encoders.md has the
details."""

from tokenizers_impl.encoders.base import Encoder, EncoderSource, EncoderUnavailable
from tokenizers_impl.encoders.patterns import GPT2_PATTERN, NAMED_PATTERNS, split_pattern
from tokenizers_impl.encoders.probes import probe_set
from tokenizers_impl.encoders.registry import (
    AUTO_ORDER,
    Selection,
    build_encoder,
    encoder_names,
    register_encoder,
    select_encoder,
    unregister_encoder,
)

__all__ = [
    "AUTO_ORDER",
    "GPT2_PATTERN",
    "NAMED_PATTERNS",
    "Encoder",
    "EncoderSource",
    "EncoderUnavailable",
    "Selection",
    "build_encoder",
    "encoder_names",
    "probe_set",
    "register_encoder",
    "select_encoder",
    "split_pattern",
    "unregister_encoder",
]
