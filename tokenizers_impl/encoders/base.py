"""The encoder-backend contract (`Encoder`), what a backend is built from (`EncoderSource`), and the
flat-buffer helpers every backend shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from itertools import chain
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.errors import TokenizerError


class EncoderUnavailable(Exception):
    """A backend cannot be built for this tokenizer.

    `why` is one of "absent" (the library is not installed), "not applicable" (this tokenizer is
    outside what the backend implements) or "refused" (the library rejected the tokenizer)."""

    def __init__(self, why: str, detail: str):
        super().__init__(f"{why}: {detail}")
        self.why, self.detail = why, detail


class Encoder(ABC):
    """One way to encode text into the ids of one tokenizer.

    `encode_flat` is the hot path: one uint32 buffer of every text's ids plus int64 offsets
    (len(texts) + 1; text i is flat[offsets[i]:offsets[i + 1]]). Backends whose library offers
    flat output fill it without per-document Python lists."""

    name: ClassVar[str] = ""
    version: str = ""
    takes_utf8: bool = False  # encode_flat reads a Utf8Texts' buffer as it is (no str per text)

    @abstractmethod
    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint32 ids, int64 offsets of length len(texts) + 1)."""

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One uint32 id array per text (views into one flat buffer)."""
        flat, offsets = self.encode_flat(texts)
        return split_flat(flat, offsets)

    def describe(self) -> str:
        return f"{self.name} {self.version}".strip()


@dataclass
class EncoderSource:
    """What a backend may be built from; each backend uses the fields it understands.

    - `label`: a short stable name for the tokenizer (e.g. its fingerprint prefix);
    - `hf`: a `tokenizers.Tokenizer` with tokenmill's semantics (encode_special_tokens=True);
    - `config`: its parsed tokenizer.json;
    - `pattern`: the split regex a byte-level BPE applies before merging, when it has exactly one
      (`patterns.split_pattern`), and `pattern_name`, its public name when it is a known one;
    - `ranks_builder`: returns tiktoken-style mergeable ranks (token bytes -> id), or None when the
      vocabulary has none; called at most once (`ranks()`).
    - `special_tokens`: special-token text -> id (never produced for document text);
    - `options`: the tokenizer's load options, for backend settings (e.g. `encoder_reset_mb`);
    - `model_proto`: a SentencePiece model (the `sentencepiece` backend);
    - `config_note`: why there is no `config` (told by the backends that need one).
    """

    label: str
    hf: Any = None
    config: dict[str, Any] | None = None
    pattern: str | None = None
    pattern_name: str | None = None
    ranks_builder: Callable[[], dict[bytes, int] | None] | None = None
    special_tokens: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    model_proto: bytes | None = None
    config_note: str = ""
    _ranks: dict[bytes, int] | None = field(default=None, repr=False)
    _ranks_built: bool = field(default=False, repr=False)

    def ranks(self) -> dict[bytes, int] | None:
        if not self._ranks_built:
            self._ranks = self.ranks_builder() if self.ranks_builder else None
            self._ranks_built = True
        return self._ranks


ENCODER_OPTIONS = ("encoder_reset_mb",)


def encoder_options(options: dict[str, Any]) -> dict[str, Any]:
    """The backend settings among a tokenizer's load options, checked (TokenizerError)."""
    out = {k: options[k] for k in ENCODER_OPTIONS if options.get(k) is not None}
    reset = out.get("encoder_reset_mb")
    if reset is not None and (
        isinstance(reset, bool) or not isinstance(reset, int | float) or reset < 0
    ):
        raise TokenizerError(f"encoder_reset_mb must be a number of MB >= 0, not {reset!r}")
    return out


def package_version(package: str) -> str:
    """Installed version of a distribution ("" when unknown)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def flat_from_lists(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint32 ids and int64 offsets from one id list per text."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(
        np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists)), out=offsets[1:]
    )
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.uint32, count=int(offsets[-1]))
    return flat, offsets


def split_flat(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """One array per text (views of `flat`)."""
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def empty_flat(n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.uint32), np.zeros(n_texts + 1, dtype=np.int64)
