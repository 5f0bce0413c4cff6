"""Byte-level BPE plugin (`bpe`): trains and loads `tokenizers` files, encodes through tiktoken when exact."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any, ClassVar

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tokenizers_impl.base import TokenizerBase, TokenizerError, fingerprint_of, register
from tokenizers_impl.files import probe_texts, read_file, write_file

EOS = "<|endoftext|>"
# GPT-2's pre-tokenizer regex, the one `tokenizers`' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (visible character -> raw byte)."""
    visible = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = visible[:]
    n = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(visible, chars, strict=True)}


def _metaspace_bytes(token: str) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("▁", " ").encode("utf-8")


class BPETokenizer(TokenizerBase):
    kind: ClassVar[str] = "bpe"

    def __init__(self, hf: HFTokenizer, name: str = "bpe", use_tiktoken: bool = True):
        self.hf = hf
        self.hf.encode_special_tokens = True  # special-token strings in documents stay plain text
        self.name = name
        config = json.loads(hf.to_str())
        self._config = config
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self.fingerprint = fingerprint_of(self.kind, json.dumps(config, sort_keys=True))
        self.special_ids = frozenset(self._special_tokens())
        self.byte_level = _is_byte_level(config)
        self._bytes = self._byte_table()
        self.eos_id = hf.token_to_id(EOS)
        probe = list(probe_texts())
        reference = self.encode_reference(probe)  # encoded once, checked twice
        self.lossless = all(
            self.decode_bytes(ids) == t.encode("utf-8")
            for ids, t in zip(reference, probe, strict=True)
        )
        self.encoder = "tokenizers"
        self._tiktoken = self._build_tiktoken(probe, reference) if use_tiktoken else None
        if self._tiktoken is not None:
            self.encoder = "tiktoken"
        # raw bytes that are not UTF-8 go through tiktoken's byte encoder (see encode_bytes)
        self.supports_encode_bytes = self._tiktoken is not None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 32000,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (EOS,),
        name: str = "bpe",
    ) -> BPETokenizer:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf, name=name)

    @classmethod
    def load(cls, path: str, storage_options: dict | None = None, **options: Any) -> BPETokenizer:
        data = read_file(path, storage_options)
        try:
            hf = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # the library raises its own Exception type for bad files
            raise TokenizerError(f"{path!r} is not a valid tokenizer.json: {exc}") from exc
        return cls(
            hf,
            name=options.get("name") or path.rsplit("/", 1)[-1],
            use_tiktoken=options.get("use_tiktoken", True),
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        write_file(url, self.hf.to_str(pretty=False).encode("utf-8"), storage_options)

    # -- tables ---------------------------------------------------------------------------------
    def _special_tokens(self) -> list[int]:
        """Ids of the added tokens marked special."""
        return [i for i, tok in self.hf.get_added_tokens_decoder().items() if tok.special]

    def _byte_table(self) -> list[bytes]:
        table: list[bytes] = []
        u2b = _unicode_to_byte()
        specials = self.special_ids
        for i in range(self.vocab_size):
            token = self.hf.id_to_token(i)
            if token is None:
                table.append(b"")
            elif i in specials:
                table.append(token.encode("utf-8"))
            elif self.byte_level:
                table.append(bytes(u2b[c] for c in token))
            else:
                table.append(_metaspace_bytes(token))
        return table

    def _build_tiktoken(self, probe: list[str], reference: list[list[int]]):
        """A tiktoken Encoding equivalent to this tokenizer, or None when it would not be exact
        (checked against the `tokenizers` ids of the probe texts)."""
        import tiktoken

        cfg = self._config
        if not self.byte_level or cfg.get("normalizer") or cfg["model"].get("type") != "BPE":
            return None
        pre = cfg.get("pre_tokenizer") or {}
        if (
            pre.get("type") != "ByteLevel"
            or pre.get("add_prefix_space")
            or not pre.get("use_regex", True)
        ):
            return None
        ranks: dict[bytes, int] = {}
        for i, token_bytes in enumerate(self._bytes):
            if i not in self.special_ids and token_bytes and token_bytes not in ranks:
                ranks[token_bytes] = i
        if any(bytes([b]) not in ranks for b in range(256)):
            return None
        try:
            enc = tiktoken.Encoding(
                name=f"tokenmill-{self.fingerprint[:8]}",
                pat_str=GPT2_PATTERN,
                mergeable_ranks=ranks,
                special_tokens={},
            )
        except Exception:  # tiktoken rejects inconsistent rank tables
            return None
        if all(enc.encode_ordinary(t) == r for t, r in zip(probe, reference, strict=True)):
            return enc
        return None

    # -- contract -------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        if self._tiktoken is not None:
            return [
                np.array(ids, dtype=np.uint32)
                for ids in self._tiktoken.encode_ordinary_batch(list(texts), num_threads=1)
            ]
        return [
            np.array(e.ids, dtype=np.uint32)
            for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)
        ]

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._tiktoken is not None:
            lists = [self._tiktoken.encode_ordinary(t) for t in texts]
        else:
            lists = [
                e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)
            ]
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(lists), dtype=np.uint32, count=int(offsets[-1]))
        return flat, offsets

    def encode_reference(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids from the `tokenizers` library itself (the fast path is checked against these)."""
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes: valid UTF-8 is encoded as its text; other bytes (a string cut inside a
        character) need the tiktoken fast path, whose byte-level encoder runs BPE on the bytes of
        the unfinished last piece. Without it such bytes raise TokenizerError."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if self._tiktoken is None:
                raise TokenizerError(
                    "this bpe tokenizer encodes only UTF-8 without the tiktoken fast path"
                ) from None
            return self._tiktoken._encode_bytes(data)  # tiktoken's own (private) byte encoder
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)
        return self.encode_reference([text])[0]

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        table = self._bytes
        return b"".join([table[int(i)] for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "encoder": self.encoder}


def _is_byte_level(config: dict[str, Any]) -> bool:
    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    decoder = config.get("decoder") or {}
    return any(s.get("type") == "ByteLevel" for s in steps) or decoder.get("type") == "ByteLevel"


register("bpe", BPETokenizer)
