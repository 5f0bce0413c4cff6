"""Byte-level BPE plugin (`bpe`): trains and loads `tokenizers` files; encodes through the fastest
backend that reproduces `tokenizers` exactly (docs/encoders.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from tokenizers_impl.base import (
    ByteTableTokenizer,
    TokenizerError,
    fingerprint_of,
    register,
)
from tokenizers_impl.encoders import (
    AUTO_ORDER,
    Encoder,
    EncoderSource,
    build_encoder,
    probe_set,
    select_encoder,
    split_pattern,
)
from tokenizers_impl.encoders.base import encoder_options as check_encoder_options
from tokenizers_impl.encoders.patterns import GPT2_PATTERN, LLAMA3_PATTERN, pattern_name
from tokenizers_impl.encoders.tiktoken_backend import mergeable_ranks
from tokenizers_impl.errors import naming_bad_text
from tokenizers_impl.files import probe_texts, read_file, write_file
from tokenizers_impl.special_tokens import (
    EOS_FALLBACK,
    chat_template_of,
    read_tokenizer_config,
    resolve_special_tokens,
)

__all__ = ["EOS", "GPT2_PATTERN", "BPETokenizer"]

EOS = EOS_FALLBACK
LOAD_OPTIONS = frozenset(
    {
        "name",
        "encoder",
        "use_tiktoken",
        "eos_token",
        "bos_token",
        "tokenizer_config",
        "encoder_reset_mb",
    }
)


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


def train_byte_level(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (EOS,),
    min_frequency: int = 0,
    split_pattern: str | None = None,
) -> HFTokenizer:
    """A byte-level BPE `tokenizers` model trained on `texts`: GPT-2 style (ByteLevel with its
    own regex), or with `split_pattern` the Llama-3 / GPT-4 style (Split(regex, isolated), then
    ByteLevel without a regex)."""
    hf = HFTokenizer(models.BPE())
    if split_pattern is None:
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return hf


class BPETokenizer(ByteTableTokenizer):
    """A `tokenizers` BPE (tokenizer.json). Special-token text inside documents is plain text.

    `encoder` ("auto" or a backend name, see docs/encoders.md) chooses the encoder backend;
    `use_tiktoken` is the older switch (False: `tokenizers` only; True: tiktoken when exact).
    `eos_token`/`bos_token` name the EOS/BOS tokens; `tokenizer_config` is the parsed
    tokenizer_config.json that may name them."""

    kind: ClassVar[str] = "bpe"
    # its encoders (gigatoken, tiktoken, `tokenizers`) are Rust objects encoding through shared
    # references; tests/test_encoders.py checks two threads on one object against one thread
    thread_safe = True

    def __init__(
        self,
        hf: HFTokenizer,
        name: str = "bpe",
        use_tiktoken: bool | None = None,
        encoder: str | None = None,
        eos_token: str | None = None,
        bos_token: str | None = None,
        tokenizer_config: dict[str, Any] | None = None,
        encoder_options: dict[str, Any] | None = None,
    ):
        self.hf = hf
        self.hf.encode_special_tokens = True  # special-token strings in documents stay plain text
        self.name = name
        config = json.loads(hf.to_str())
        self._config = config
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self.fingerprint = fingerprint_of(self.kind, json.dumps(config, sort_keys=True))
        added = hf.get_added_tokens_decoder()
        specials = {tok.content: i for i, tok in added.items() if tok.special}
        self.special_ids = frozenset(specials.values())
        self.added_tokens = {tok.content: i for i, tok in added.items()}
        self.chat_template = chat_template_of(tokenizer_config)
        self.byte_level = _is_byte_level(config)
        self._bytes = self._byte_table()
        resolved = resolve_special_tokens(
            hf.token_to_id, specials, tokenizer_config, eos_token, bos_token, what=repr(name)
        )
        self.eos_token, self.eos_id = resolved.eos_token, resolved.eos_id
        self.bos_token, self.bos_id = resolved.bos_token, resolved.bos_id
        self._select(
            _encoder_choice(encoder, use_tiktoken),
            [tok.content for tok in added.values()],
            encoder_options or {},
            [tok.content for tok in added.values() if not tok.special],
        )

    def _select(
        self,
        choice: tuple[str, tuple[str, ...]],
        added: list[str],
        options: dict[str, Any],
        plain: list[str],
    ) -> None:
        """Check losslessness and choose the encoder (both on the probe texts)."""
        pattern = split_pattern(self._config)
        self._source = EncoderSource(
            label=f"{self.kind}:{self.name}",
            hf=self.hf,
            config=self._config,
            pattern=pattern,
            pattern_name=pattern_name(pattern) if pattern else None,
            ranks_builder=self.mergeable_ranks,
            options=options,
        )
        self._reference = build_encoder("tokenizers", self._source)
        self._probes = probe_set(added, plain)
        self._expected = self._reference.encode_flat(self._probes)  # encoded once, used thrice
        flat, offsets = self._expected
        self.lossless = all(
            self.decode_bytes(flat[offsets[i] : offsets[i + 1]]) == text.encode("utf-8")
            for i, text in enumerate(probe_texts())
        )
        selection = select_encoder(
            choice[0], self._source, self._reference, self._probes, choice[1], self._expected
        )
        self._encoder: Encoder = selection.encoder
        self.encoder = selection.encoder.name
        self.encoder_version = selection.encoder.version
        self.encoder_fallbacks = selection.fallbacks
        self.verifiable = self.encoder != self._reference.name
        self._bytes_encoder: Any = None
        self._bytes_encoder_known = False

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 32000,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (EOS,),
        name: str = "bpe",
        split_pattern: str | None = None,
    ) -> BPETokenizer:
        """GPT-2 style, or with `split_pattern` ("llama3", or a regex) Llama-3 / GPT-4 style
        (Split(regex) then ByteLevel without its regex: the fast encoders take both)."""
        if isinstance(special_tokens, str) or not all(isinstance(t, str) for t in special_tokens):
            raise TokenizerError(
                f"special_tokens {special_tokens!r}: a list of token texts, e.g. "
                '["<|endoftext|>"] (a string is not split into tokens)'
            )
        pattern = {"llama3": LLAMA3_PATTERN}.get(split_pattern or "", split_pattern)
        hf = train_byte_level(texts, vocab_size, special_tokens, min_frequency, pattern)
        return cls(hf, name=name)

    @classmethod
    def load(cls, path: str, storage_options: dict | None = None, **options: Any) -> BPETokenizer:
        """Options: name, encoder (auto|gigatoken|tiktoken|tokenizers), use_tiktoken, eos_token,
        bos_token, tokenizer_config (a path, or false to ignore the one beside `path`),
        encoder_reset_mb (gigatoken: rebuild after this many MB of text; 0: never)."""
        unknown = sorted(set(options) - LOAD_OPTIONS)
        if unknown:
            raise TokenizerError(
                f"bpe tokenizer {path!r}: unknown option(s) {unknown}; known: {sorted(LOAD_OPTIONS)}"
            )
        data = read_file(path, storage_options)
        try:
            hf = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # the library raises its own Exception type for bad files
            raise TokenizerError(f"{path!r} is not a valid tokenizer.json: {exc}") from exc
        encoder_options = check_encoder_options(options)
        return cls(
            hf,
            name=options.get("name") or path.rsplit("/", 1)[-1],
            use_tiktoken=options.get("use_tiktoken"),
            encoder=options.get("encoder"),
            eos_token=options.get("eos_token"),
            bos_token=options.get("bos_token"),
            tokenizer_config=read_tokenizer_config(
                path, storage_options, options.get("tokenizer_config")
            ),
            encoder_options=encoder_options,
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        write_file(url, self.hf.to_str(pretty=False).encode("utf-8"), storage_options)

    # -- tables ---------------------------------------------------------------------------------
    def _byte_table(self) -> list[bytes]:
        table: list[bytes] = []
        u2b = _unicode_to_byte()
        # added tokens, special or not, are matched in the raw text: their bytes are their text
        # (a non-special one read through the byte map raised KeyError on its space)
        added = set(self.added_tokens.values())
        for i in range(self.vocab_size):
            token = self.hf.id_to_token(i)
            if token is None:
                table.append(b"")
            elif i in added:
                table.append(token.encode("utf-8"))
            elif self.byte_level:
                table.append(bytes(u2b[c] for c in token))
            else:
                table.append(_metaspace_bytes(token))
        return table

    def mergeable_ranks(self) -> dict[bytes, int] | None:
        """tiktoken-style mergeable ranks (token bytes -> id) of a byte-level vocabulary, or None
        (not byte-level, or some byte has no token)."""
        return mergeable_ranks(self._bytes, self.special_ids) if self.byte_level else None

    def _byte_level_encoder(self) -> Any:
        """The tiktoken backend when it is exact (it encodes bytes that are not UTF-8), else None;
        never with the `tokenizers` encoder (use_tiktoken=False keeps to the library)."""
        if not self._bytes_encoder_known:
            found = self._encoder if self.encoder == "tiktoken" else None
            if found is None and self.encoder != self._reference.name:
                try:
                    found = select_encoder(
                        "tiktoken",
                        self._source,
                        self._reference,
                        self._probes,
                        (),
                        self._expected,
                    ).encoder
                except TokenizerError:
                    found = None
            self._bytes_encoder, self._bytes_encoder_known = found, True
        return self._bytes_encoder

    @property
    def takes_utf8_texts(self) -> bool:  # type: ignore[override]
        return self._encoder.takes_utf8

    @property
    def supports_encode_bytes(self) -> bool:  # type: ignore[override]
        return self._byte_level_encoder() is not None

    @property
    def _tiktoken(self) -> Any:
        """The tiktoken Encoding when the tiktoken backend is exact (kept for older callers)."""
        found = self._byte_level_encoder()
        return None if found is None else found.encoding

    # -- contract -------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return naming_bad_text(self._encoder.encode_batch, texts)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return naming_bad_text(self._encoder.encode_flat, texts)

    def reference_encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids from the `tokenizers` library itself, whatever the encoder."""
        return self._reference.encode_batch(texts)

    def encode_reference(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids from the `tokenizers` library itself, as lists (the encoders are checked on these)."""
        return self._reference.encode_lists(texts)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes: valid UTF-8 is encoded as its text; other bytes (a string cut inside a
        character) need the tiktoken backend, whose byte-level encoder runs BPE on the bytes of
        the unfinished last piece. Without it such bytes raise TokenizerError."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            found = self._byte_level_encoder()
            if found is None:
                raise TokenizerError(
                    "this bpe tokenizer encodes only UTF-8 without the tiktoken encoder"
                ) from None
            return found.encode_bytes(data)
        return self._encoder.encode_batch([text])[0].tolist()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "encoder": self.encoder,
            "encoder_version": self.encoder_version,
            "encoder_fallbacks": list(self.encoder_fallbacks),
        }


def _encoder_choice(encoder: Any, use_tiktoken: Any) -> tuple[str, tuple[str, ...]]:
    """(choice, auto order) from the `encoder` and legacy `use_tiktoken` options."""
    if isinstance(use_tiktoken, str):
        use_tiktoken = {"true": True, "false": False}.get(use_tiktoken.lower(), use_tiktoken)
    if use_tiktoken is not None and not isinstance(use_tiktoken, bool):
        raise TokenizerError(f"use_tiktoken must be true or false, not {use_tiktoken!r}")
    if encoder is not None and not isinstance(encoder, str):
        raise TokenizerError(f"encoder must be a backend name or auto, not {encoder!r}")
    choice = encoder or "auto"
    if use_tiktoken is False:
        if choice not in ("auto", "tokenizers"):
            raise TokenizerError(f"use_tiktoken=false contradicts encoder={choice!r}")
        return "tokenizers", AUTO_ORDER
    if use_tiktoken and choice not in ("auto", "tiktoken"):
        raise TokenizerError(f"use_tiktoken=true contradicts encoder={choice!r}")
    if use_tiktoken and choice == "auto":
        return "auto", ("tiktoken", "tokenizers")  # the old switch: tiktoken when exact
    return choice, AUTO_ORDER


def _is_byte_level(config: dict[str, Any]) -> bool:
    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    decoder = config.get("decoder") or {}
    return any(s.get("type") == "ByteLevel" for s in steps) or decoder.get("type") == "ByteLevel"


register("bpe", BPETokenizer)
