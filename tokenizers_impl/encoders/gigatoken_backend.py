"""The `gigatoken` backend (PyPI `gigatoken`, MIT): SIMD pre-tokenization and cached BPE in Rust.

Built from the tokenizer.json with its special added tokens removed (gigatoken turns special-token
text into special ids and has no switch; tokenmill keeps such text plain) and without its
post-processor; or, for a `tiktoken` kind, from the ranks and a pattern gigatoken implements.
Encodes on the calling thread (`parallel=False`: one engine actor per core) and releases the GIL.
Its pre-token caches grow with the vocabulary of the stream and are freed only with the encoder,
so the encoder is rebuilt after every `encoder_reset_mb` MB of text (default 512; characters, or
UTF-8 bytes for texts held as bytes)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.encoders.base import (
    Encoder,
    EncoderSource,
    EncoderUnavailable,
    empty_flat,
    flat_from_lists,
    package_version,
)
from tokenizers_impl.texts import as_str_list, utf8_of

DEFAULT_RESET_MB = 512
# A batch of at most this many characters is encoded to lists: building the awkward array of the
# flat call costs ~0.15 ms whatever the size, the lists ~0.1 ms for 8 Ki characters (one small
# file's document, a unit's last batch)
SMALL_BATCH_CHARS = 8192
# tokenmill's pattern names -> gigatoken's pretokenizer schemes (for .tiktoken rank files)
_SCHEMES = {
    "gpt2": "gpt2",
    "r50k_base": "gpt2",
    "p50k_base": "gpt2",
    "cl100k_base": "gpt4",
    "o200k_base": "o200k",
}


class GigatokenEncoder(Encoder):
    """`recipe` rebuilds the library's encoder: ("json", tokenizer.json text) or
    ("tiktoken", ranks file text, pretokenizer scheme). Pickles as its recipe."""

    name: ClassVar[str] = "gigatoken"
    takes_utf8: bool = True
    # its Unicode tables (17.0) are newer than `tokenizers`' and tiktoken's: characters added
    # since are letters, digits or marks to it, unassigned to them (registry.guarded)
    newer_unicode: ClassVar[bool] = True

    def __init__(self, recipe: tuple[str, ...], reset_chars: int):
        self.recipe, self._reset_chars = recipe, reset_chars
        self.version = package_version("gigatoken")
        self.resets = 0
        self._backend, self._chars = _make(recipe), 0

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_backend"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._backend, self._chars = _make(self.recipe), 0

    def _encoder(self, chars: int) -> Any:
        """The library's encoder for a batch of `chars` characters (rebuilt past reset_chars)."""
        self._chars += chars
        if self._reset_chars and self._chars > self._reset_chars:
            self._backend, self._chars = _make(self.recipe), 0  # frees the grown caches
            self.resets += 1
        return self._backend

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return empty_flat(0)
        utf8 = utf8_of(texts)
        if utf8 is None:
            texts = texts if isinstance(texts, list) else list(texts)
            chars = sum(map(len, texts))
        else:  # (its bytes stand for characters in the reset count)
            chars = int(utf8[1][-1])
        encoder = self._encoder(chars)
        if chars <= SMALL_BATCH_CHARS:  # (awkward's array costs ~0.15 ms a call)
            return flat_from_lists(encoder.encode_batch_list(as_str_list(texts), parallel=False))
        given = texts if utf8 is None else _byte_strings(*utf8)
        layout = encoder.encode_batch(given, parallel=False).layout
        offsets, content = getattr(layout, "offsets", None), getattr(layout, "content", None)
        if offsets is None or not hasattr(content, "data"):  # not the usual list-offset layout
            return flat_from_lists(encoder.encode_batch_list(as_str_list(texts), parallel=False))
        offsets = np.asarray(offsets.data, dtype=np.int64)
        flat = np.asarray(content.data, dtype=np.uint32)
        if offsets[0]:
            flat, offsets = flat[offsets[0] : offsets[-1]], offsets - offsets[0]
        return flat, offsets


def _byte_strings(data: np.ndarray, offsets: np.ndarray) -> Any:
    """The texts data[offsets[i]:offsets[i + 1]] as an awkward array of byte strings, which the
    library reads from its buffers as they are (no Python object per text)."""
    import awkward as ak

    content = ak.contents.NumpyArray(data, parameters={"__array__": "byte"})
    return ak.Array(
        ak.contents.ListOffsetArray(
            ak.index.Index64(offsets), content, parameters={"__array__": "bytestring"}
        )
    )


def build(source: EncoderSource) -> GigatokenEncoder:
    import gigatoken.gigatoken_rs  # noqa: F401  (absent library: ImportError, recorded as such)

    reset_chars = int(float(source.options.get("encoder_reset_mb", DEFAULT_RESET_MB)) * (1 << 20))
    if source.config is not None:
        return GigatokenEncoder(("json", _dumps(_plain_text_config(source.config))), reset_chars)
    if source.config_note:  # (a SentencePiece model with no equivalent tokenizer.json)
        raise EncoderUnavailable("not applicable", source.config_note)
    scheme = _SCHEMES.get(source.pattern_name or "")
    ranks = source.ranks()
    if scheme is None or ranks is None:
        raise EncoderUnavailable(
            "not applicable",
            f"no gigatoken pretokenizer for pattern {source.pattern_name!r}"
            if source.pattern_name
            else "no gigatoken pretokenizer for a split regex of its own (gigatoken's are "
            f"{', '.join(sorted(_SCHEMES))})",
        )
    text = "".join(
        f"{base64.b64encode(token).decode('ascii')} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])  # by rank: dense ids
    )
    return GigatokenEncoder(("tiktoken", text, scheme), reset_chars)


def _make(recipe: tuple[str, ...]) -> Any:
    from gigatoken.gigatoken_rs import BPETokenizer, load_hf_json

    if recipe[0] == "json":
        return load_hf_json(recipe[1])
    with tempfile.TemporaryDirectory(prefix="tokenmill-gigatoken-") as tmp:
        path = os.path.join(tmp, "ranks.tiktoken")  # the library reads ranks from a file only
        with open(path, "w", encoding="ascii") as handle:
            handle.write(recipe[1])
        return BPETokenizer.from_tiktoken(path, recipe[2], None)


def _dumps(config: dict[str, Any]) -> str:
    """The config as JSON text for the library: orjson where it is installed (a 32k vocabulary in
    10 ms, not json's 60: every worker that loads the tokenizer pays it)."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - a declared dependency
        return json.dumps(config)
    return orjson.dumps(config).decode()


def _plain_text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer.json without special added tokens (so their text is encoded as text) and
    without post-processing, padding or truncation."""
    out = dict(config)
    out["added_tokens"] = [t for t in config.get("added_tokens") or [] if not t.get("special")]
    out["post_processor"] = None
    out["padding"] = None
    out["truncation"] = None
    return out
