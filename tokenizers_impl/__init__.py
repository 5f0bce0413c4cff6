"""tokenmill's tokenizer plugins: one contract (`TokenizerBase`), a registry of kinds, the built-in
kinds (`bpe`, `tiktoken`, `sentencepiece`, `lib`, `dynamic_merge`), the encoder backends of
`bpe` and `tiktoken` behind one exactness gate (`encoders`, docs/encoders.md) and byte-token
conversion (`byte_token`).

`TokenizerBase` is the one contract: a plugin subclasses it, implements `encode_batch`,
`token_bytes`, `load` and `save`, sets `kind`, `name`, `vocab_size` and `fingerprint`, and
registers its class. docs/plugins.md has the details (attributes, optional capabilities)::

    import numpy as np

    from tokenizers_impl import TokenizerBase, register
    from tokenizers_impl.base import fingerprint_of
    from tokenizers_impl.files import read_file, write_file

    class ByteTokenizer(TokenizerBase):  # one token per UTF-8 byte
        kind = "mybytes"

        def __init__(self, name: str = "mybytes"):
            self.name, self.vocab_size = name, 256
            self.fingerprint = fingerprint_of(self.kind, b"v1")

        def encode_batch(self, texts):
            return [np.frombuffer(t.encode(), np.uint8).astype(np.uint32) for t in texts]

        def token_bytes(self, token_id):
            return bytes([token_id])

        @classmethod
        def load(cls, path, storage_options=None, **options):
            return cls(read_file(path, storage_options).decode().strip() or cls.kind)

        def save(self, url, storage_options=None):
            write_file(url, self.name.encode(), storage_options)

    register("mybytes", ByteTokenizer)  # then: tokenmill run --tokenizer mybytes:PATH ...

This package sits below `pipeline` and never imports it. `Tokenizer` is an alias of
`TokenizerBase`, the name the contract had before it was a base class.
"""

from tokenizers_impl.base import (
    EncodedBatch,
    Tokenizer,
    TokenizerBase,
    known_kinds,
    load_tokenizer,
    register,
    registered_kinds,
)
from tokenizers_impl.errors import TokenizerError, TokenmillError

__all__ = [
    "EncodedBatch",
    "Tokenizer",
    "TokenizerBase",
    "TokenizerError",
    "TokenmillError",
    "known_kinds",
    "load_tokenizer",
    "register",
    "registered_kinds",
]
