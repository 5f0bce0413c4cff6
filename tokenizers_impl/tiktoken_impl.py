"""`tiktoken` plugin kind: a `.tiktoken` ranks file (one "base64(token bytes) rank" per line, the
format OpenAI publishes), read offline, with a named or given split regex and optional special
tokens. Lossless; ids are the ranks. Encodes through the fastest backend that reproduces
tiktoken itself on the probe set (docs/encoders.md)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.base import (
    ByteTableTokenizer,
    TokenizerError,
    fingerprint_of,
    register,
)
from tokenizers_impl.encoders import (
    EncoderSource,
    EncoderUnavailable,
    build_encoder,
    probe_set,
    select_encoder,
)
from tokenizers_impl.encoders.base import encoder_options as check_encoder_options
from tokenizers_impl.encoders.patterns import NAMED_PATTERNS, pattern_name
from tokenizers_impl.errors import naming_bad_text
from tokenizers_impl.files import probe_texts, read_file, write_file
from tokenizers_impl.special_tokens import resolve_special_tokens

LOAD_OPTIONS = frozenset(
    {"name", "pattern", "special_tokens", "eos_token", "bos_token", "encoder", "encoder_reset_mb"}
)
MAX_SPECIAL_GAP = 1 << 20  # special ids lie at most this far above the largest rank
ENDOFTEXT, ENDOFPROMPT = "<|endoftext|>", "<|endofprompt|>"
FIM = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")
# The special tokens of OpenAI's public encodings, used when a file carries one of their names
# and no special_tokens option is given.
KNOWN_SPECIALS: dict[str, dict[str, int]] = {
    "gpt2": {ENDOFTEXT: 50256},  # (tiktoken's "gpt2" is r50k_base's ranks and specials)
    "r50k_base": {ENDOFTEXT: 50256},
    "p50k_base": {ENDOFTEXT: 50256},
    "cl100k_base": {
        ENDOFTEXT: 100257,
        FIM[0]: 100258,
        FIM[1]: 100259,
        FIM[2]: 100260,
        ENDOFPROMPT: 100276,
    },
    "o200k_base": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
}


def parse_ranks(data: bytes, what: str = "ranks file") -> dict[bytes, int]:
    """Mergeable ranks from the bytes of a .tiktoken file (TokenizerError when malformed)."""
    ranks: dict[bytes, int] = {}
    seen: set[int] = set()
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'base64-token rank'")
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, binascii.Error) as exc:
            raise TokenizerError(f"{what}: line {n} is malformed ({exc})") from None
        if rank < 0 or token in ranks or rank in seen or not token:
            raise TokenizerError(f"{what}: line {n}: empty or repeated token, or bad rank {rank}")
        ranks[token] = rank
        seen.add(rank)
    if not ranks:
        raise TokenizerError(f"{what} holds no ranks")
    return ranks


def dump_ranks(ranks: dict[bytes, int]) -> bytes:
    """The .tiktoken text of mergeable ranks, by rank (the canonical form: what save writes)."""
    return "".join(
        f"{base64.b64encode(token).decode('ascii')} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
    ).encode("ascii")


class TiktokenTokenizer(ByteTableTokenizer):
    """Mergeable ranks + split regex (+ special tokens), encoded like tiktoken's
    `encode_ordinary`: special-token text inside documents stays plain text."""

    kind: ClassVar[str] = "tiktoken"
    # its encoders (gigatoken, tiktoken, `tokenizers`) are Rust objects encoding through shared
    # references; tests/test_encoders.py checks two threads on one object against one thread
    thread_safe = True

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str,  # a name of NAMED_PATTERNS or a regex
        special_tokens: dict[str, int] | None = None,
        name: str = "tiktoken",
        encoder: str | None = None,
        eos_token: str | None = None,
        bos_token: str | None = None,
        encoder_options: dict[str, Any] | None = None,
    ):
        specials = _check_specials(special_tokens or {}, ranks)
        self.pattern_label = pattern if pattern in NAMED_PATTERNS else "custom"
        pattern = NAMED_PATTERNS.get(pattern, pattern)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise TokenizerError(f"tiktoken ranks lack single-byte tokens {missing[:8]}")
        self.ranks, self.pattern, self.special_tokens = ranks, pattern, specials
        self.name = name
        self.vocab_size = max([*ranks.values(), *specials.values()]) + 1
        self.fingerprint = fingerprint_of(
            self.kind, dump_ranks(ranks), {"pattern": pattern, "special_tokens": specials}
        )
        self.special_ids = frozenset(specials.values())
        self.added_tokens = dict(specials)
        self._bytes = [b""] * self.vocab_size
        for token, rank in ranks.items():
            self._bytes[rank] = token
        for text, token_id in specials.items():
            self._bytes[token_id] = text.encode("utf-8")

        def lookup(text: str) -> int | None:
            return specials.get(text, ranks.get(text.encode("utf-8")))

        resolved = resolve_special_tokens(
            lookup, specials, None, eos_token, bos_token, what=repr(name)
        )
        self.eos_token, self.eos_id = resolved.eos_token, resolved.eos_id
        self.bos_token, self.bos_id = resolved.bos_token, resolved.bos_id
        self._select(encoder or "auto", encoder_options or {})

    def _select(self, choice: str, options: dict[str, Any]) -> None:
        source = EncoderSource(
            label=f"{self.kind}:{self.name}",
            pattern=self.pattern,
            pattern_name=pattern_name(self.pattern),
            ranks_builder=lambda: self.ranks,
            special_tokens=self.special_tokens,
            options=options,
        )
        try:
            self._reference = build_encoder("tiktoken", source)
        except EncoderUnavailable as exc:
            raise TokenizerError(f"tiktoken cannot use these ranks and pattern: {exc}") from exc
        probes = probe_set(self.special_tokens)
        expected = self._reference.encode_flat(probes)
        flat, offsets = expected
        self.lossless = all(
            self.decode_bytes(flat[offsets[i] : offsets[i + 1]]) == text.encode("utf-8")
            for i, text in enumerate(probe_texts())
        )
        selection = select_encoder(
            choice, source, self._reference, probes, ("gigatoken", "tiktoken"), expected
        )
        self._encoder = selection.encoder
        self.encoder = selection.encoder.name
        self.encoder_version = selection.encoder.version
        self.encoder_fallbacks = selection.fallbacks
        self.verifiable = self.encoder != self._reference.name

    @classmethod
    def load(
        cls, path: str, storage_options: dict | None = None, **options: Any
    ) -> TiktokenTokenizer:
        """Options: pattern (a name: cl100k_base, o200k_base, r50k_base, p50k_base, gpt2; or a
        regex; default: the file's name when it is one of those), special_tokens (a mapping or
        its JSON: text -> id; default: OpenAI's for a file named like their encodings),
        eos_token, bos_token, encoder (auto|gigatoken|tiktoken), encoder_reset_mb, name."""
        unknown = sorted(set(options) - LOAD_OPTIONS)
        if unknown:
            raise TokenizerError(
                f"tiktoken tokenizer {path!r}: unknown option(s) {unknown}; "
                f"known: {sorted(LOAD_OPTIONS)}"
            )
        file_name = path.rsplit("/", 1)[-1]
        stem = file_name.removesuffix(".tiktoken")
        pattern = options.get("pattern") or (stem if stem in NAMED_PATTERNS else None)
        if not isinstance(pattern, str) or not pattern:
            raise TokenizerError(
                f"tiktoken tokenizer {path!r} needs pattern= (one of {sorted(NAMED_PATTERNS)} or "
                "a regex): a .tiktoken file does not say how to split text"
            )
        specials = options.get("special_tokens")
        if specials is None:
            specials = KNOWN_SPECIALS.get(stem, {})
        elif isinstance(specials, str):
            try:
                specials = json.loads(specials)
            except json.JSONDecodeError as exc:
                raise TokenizerError(f"special_tokens is not a JSON mapping: {exc}") from exc
        encoder_options = check_encoder_options(options)
        return cls(
            parse_ranks(read_file(path, storage_options), what=repr(path)),
            pattern,
            specials,
            name=options.get("name") or file_name,
            encoder=options.get("encoder"),
            eos_token=options.get("eos_token"),
            bos_token=options.get("bos_token"),
            encoder_options=encoder_options,
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        """Write the ranks (.tiktoken); the pattern and special tokens are load options."""
        write_file(url, dump_ranks(self.ranks), storage_options)

    # -- contract -------------------------------------------------------------------------------
    supports_encode_bytes = True

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return naming_bad_text(self._encoder.encode_batch, texts)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return naming_bad_text(self._encoder.encode_flat, texts)

    def reference_encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids from tiktoken itself, whatever the encoder."""
        return self._reference.encode_batch(texts)

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes that need not be UTF-8 (tiktoken's byte-level encoder)."""
        return self._reference.encode_bytes(data)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "pattern": self.pattern_label,
            "encoder": self.encoder,
            "encoder_version": self.encoder_version,
            "encoder_fallbacks": list(self.encoder_fallbacks),
        }


def _check_specials(specials: Any, ranks: dict[bytes, int]) -> dict[str, int]:
    if not isinstance(specials, dict):
        raise TokenizerError(f"special_tokens must map token text to id, not {specials!r}")
    ids = set(ranks.values())
    limit = max(ids) + MAX_SPECIAL_GAP
    out: dict[str, int] = {}
    for text, token_id in specials.items():
        if not isinstance(text, str) or not text or type(token_id) is not int:
            raise TokenizerError(f"special token {text!r}: {token_id!r} is not a valid id")
        if not 0 <= token_id <= limit:
            raise TokenizerError(f"special token {text!r}: {token_id!r} is not a valid id")
        if token_id in ids or token_id in out.values():
            raise TokenizerError(f"special token {text!r}: id {token_id} is already taken")
        out[text] = token_id
    return out


register("tiktoken", TiktokenTokenizer)
