"""The tokenizer plugin contract (`TokenizerBase`), the registry of kinds, and
`load_tokenizer("KIND:PATH")`. docs/plugins.md shows how to write a plugin."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from tokenizers_impl.errors import TokenizerError, TokenmillError

__all__ = [
    "EncodedBatch",
    "Tokenizer",
    "TokenizerBase",
    "TokenizerError",
    "TokenmillError",
    "fingerprint_of",
    "load_tokenizer",
    "parse_spec",
    "register",
    "registered_kinds",
    "tokenizer_class",
]


@dataclass
class EncodedBatch:
    """What the engine writes for one batch of documents."""

    flat: np.ndarray  # uint32 ids of all documents, concatenated
    offsets: np.ndarray  # int64, len(texts) + 1: document i is flat[offsets[i]:offsets[i + 1]]
    columns: dict[str, pa.Array] = field(default_factory=dict)  # extra per-document shard columns
    # rows appended to the shard's sidecar table (schema: sidecar_schema)
    sidecar: pa.Table | None = None
    # byte length of every id for this batch, when batch-local ids exist (else token_byte_lengths())
    byte_lengths: np.ndarray | None = None


class TokenizerBase(ABC):
    """The one contract every tokenizer plugin implements.

    Abstract (a plugin must implement them):
    - `encode_batch(texts)`: one uint32 numpy array of ids per text.
    - `token_bytes(id)`: the raw bytes of a token (UTF-8 or arbitrary bytes, never a visible-unicode
      rendering such as GPT-2's "Ġ"), so that joining the bytes of an encoding gives back the text
      for lossless tokenizers.
    - classmethod `load(path, storage_options=None, **options)`: read a tokenizer file (a local path
      or an fsspec URL; use `tokenizers_impl.files` for size-limited reads).
    - `save(url, storage_options=None)`: write a file that `load` reads back.

    Attributes, set by the class or by `__init__`, read by the engine and the other plugins:
    - `kind` (class): the registry kind, e.g. "bpe".
    - `name`: a display name (usually the file name); None means the kind.
    - `vocab_size`: number of ids (every id is < vocab_size). Must be set.
    - `fingerprint`: stable hash of everything that changes the ids (`fingerprint_of`). Must be set.
    - `lossless`: decode_bytes(encode(text)) == text.encode("utf-8") for every text.
    - `eos_id`: the end-of-text id, or None; `bos_id`: the beginning-of-text id, or None.
    - `special_ids`: ids of special tokens (never produced for document text by merging or byte
      conversion).
    - `shard_columns` (class): extra per-document shard columns (name -> Arrow type) this tokenizer
      fills through `encode_for_shard`; `sidecar_schema` (class): schema of its per-shard sidecar
      table (written under <output>/sidecar/ and listed in the ledger), or None;
      `batch_local_ids` (class): True when ids mean something only with their batch's sidecar
      rows (dynamic merging's): recorded in `describe()`, and export refuses such outputs.
    - `preferred_batch_docs`: documents per engine batch this tokenizer needs (None: the job's
      batch_docs decides).
    - `added_tokens`: text -> id of the tokens a chat template's own text may spell as one id
      (added/special tokens); never applied to document text. `chat_template`: the jinja2 chat
      template that came with the tokenizer (tokenizer_config.json), or None.
    - `eos_token`/`bos_token`: the text of the EOS/BOS token, or None.
    - `thread_safe`: one object may encode from several threads at once, with the same ids as
      one thread (the driver's threads then share it: one encoder and one set of encoder caches
      instead of one per thread). False unless the plugin knows it.

    Sampled verification: `reference_encode_batch(texts)` encodes with an independent reference
    implementation when the plugin has one (`verifiable` is then True: its fast encoder differs
    from the reference); the default is `encode_batch` itself, with `verifiable = False`.

    Optional capability, texts as bytes: `takes_utf8_texts` True means `encode_batch_flat` takes
    a `tokenizers_impl.texts.Utf8Texts` (texts held as one UTF-8 buffer, as the compiled
    JSON-lines reader makes them) without decoding it into Python strings; otherwise callers
    hand it a list of str.

    Optional capability, raw bytes: `encode_bytes(data)` encodes a byte string that need not be
    valid UTF-8 (a prefix cut inside a character). A plugin that can do this overrides
    `encode_bytes` and sets `supports_encode_bytes = True`; callers check that flag first
    (`byte_token` does). Without it, only valid UTF-8 can be encoded (through `encode_batch`).
    """

    kind: ClassVar[str] = ""
    name: str | None = None
    vocab_size: int = 0
    fingerprint: str = ""
    lossless: bool = True
    eos_id: int | None = None
    bos_id: int | None = None
    verifiable: bool = False
    special_ids: Set[int] = frozenset()
    shard_columns: ClassVar[dict[str, pa.DataType]] = {}
    sidecar_schema: ClassVar[pa.Schema | None] = None
    batch_local_ids: ClassVar[bool] = False
    preferred_batch_docs: int | None = None
    supports_encode_bytes: bool = False
    takes_utf8_texts: bool = False
    added_tokens: Mapping[str, int] = MappingProxyType({})
    chat_template: str | None = None
    eos_token: str | None = None
    bos_token: str | None = None
    thread_safe: bool = False
    _byte_lengths: np.ndarray | None = None  # cache of token_byte_lengths()

    # -- the contract ---------------------------------------------------------------------------
    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One uint32 id array per text."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (b"" for tokens that spell nothing, e.g. control tokens)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str, storage_options: dict | None = None, **options: Any) -> TokenizerBase:
        """Load a tokenizer from a local path or fsspec URL (`options` come from the job)."""

    @abstractmethod
    def save(self, url: str, storage_options: dict | None = None) -> None:
        """Write this tokenizer to a local path or fsspec URL, in the format `load` reads."""

    # -- optional capability ----------------------------------------------------------------------
    def encode_bytes(self, data: bytes) -> Sequence[int]:
        """Ids of a raw byte string that need not be valid UTF-8 (see `supports_encode_bytes`).

        Raises ValueError (TokenizerError is one) when these bytes have no encoding. The default
        raises NotImplementedError: the capability is off unless a plugin provides it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot encode raw bytes")

    # -- defaults built on the contract -----------------------------------------------------------
    def reference_encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One uint32 id array per text from the reference implementation, to check `encode_batch`
        on a sample of documents. Without an independent reference (`verifiable` False) this is
        `encode_batch` itself, so comparing the two proves nothing."""
        return self.encode_batch(texts)

    def encode_for_shard(self, texts: Sequence[str], batch_index: int) -> EncodedBatch:
        """Encode one engine batch (batch_index counts batches within a work unit, from 0)."""
        flat, offsets = self.encode_batch_flat(texts)
        return EncodedBatch(flat, offsets)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts into one flat uint32 id buffer plus int64 offsets (len(texts) + 1)."""
        arrays = self.encode_batch(texts)
        if len(arrays) != len(texts):
            raise TokenizerError(
                f"tokenizer {self.kind}: encode_batch returned {len(arrays)} id arrays for "
                f"{len(texts)} texts"
            )
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        if not arrays:
            return np.zeros(0, np.uint32), offsets
        ids = np.concatenate(arrays)  # (checked before the cast: -1 or 2**32 + 5 would wrap)
        check_ids(self, ids, offsets)
        return ids.astype(np.uint32, copy=False), offsets

    def token_byte_lengths(self) -> np.ndarray:
        """Length in bytes of every token id, as an int32 array indexed by id (cached)."""
        if self._byte_lengths is None:
            self._byte_lengths = np.array(
                [len(self.token_bytes(i)) for i in range(self.vocab_size)], dtype=np.int32
            )
        return self._byte_lengths

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """Concatenated raw bytes of the tokens (exactly the input's UTF-8 for lossless tokenizers)."""
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """`decode_bytes` as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        """Metadata written into shards and run summaries."""
        return {
            "kind": self.kind,
            "name": self.kind if self.name is None else self.name,
            "fingerprint": self.fingerprint,
            "vocab_size": self.vocab_size,
            "lossless": self.lossless,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            **({"batch_local_ids": True} if self.batch_local_ids else {}),
            # (named where the plugin names them: a plugin without them records as it always has)
            **{k: v for k in ("eos_token", "bos_token") if (v := getattr(self, k)) is not None},
        }


# The name the plugin contract had when it was a Protocol; TokenizerBase is the contract now.
Tokenizer = TokenizerBase


class ByteTableTokenizer(TokenizerBase):
    """A tokenizer whose tokens' raw bytes are one table built at load time (`_bytes`, indexed by
    id): `token_bytes` and `decode_bytes` read it."""

    _bytes: list[bytes]

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        table = self._bytes
        return b"".join([table[int(i)] for i in ids])


def fingerprint_of(kind: str, payload: bytes | str, config: dict[str, Any] | None = None) -> str:
    """Stable hash of a tokenizer's kind, vocabulary/model bytes and encoding config."""
    digest = hashlib.sha256()
    digest.update(kind.encode())
    digest.update(payload.encode() if isinstance(payload, str) else payload)
    digest.update(json.dumps(config or {}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


# -- the registry ---------------------------------------------------------------------------------

_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REGISTRY: dict[str, type[TokenizerBase]] = {}

# Built-in kinds and the module whose import registers each; add a new built-in plugin here.
_BUILTIN_KINDS = {
    "bpe": "tokenizers_impl.bpe",
    "sentencepiece": "tokenizers_impl.sentencepiece_impl",
    "lib": "tokenizers_impl.lib.tokenizer",
    "dynamic_merge": "tokenizers_impl.dynamic_merge.tokenizer",
    "tiktoken": "tokenizers_impl.tiktoken_impl",
}


def register(kind: str, cls: type[TokenizerBase]) -> None:
    """Register a TokenizerBase subclass under `kind` (letters, digits, "_", "-", "."; no ":").

    `load_tokenizer("KIND:PATH")` then calls `cls.load(PATH, storage_options=..., **options)`.
    Registering the same class again is a no-op; another class under a taken kind is an error.
    """
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise TokenizerError(f"invalid tokenizer kind {kind!r}")
    if not (isinstance(cls, type) and issubclass(cls, TokenizerBase)):
        raise TokenizerError(f"tokenizer kind {kind!r}: {cls!r} is not a TokenizerBase subclass")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TokenizerError(
            f"tokenizer kind {kind!r}: {cls.__name__} does not implement {missing}"
        )
    builtin = _BUILTIN_KINDS.get(kind)
    if builtin is not None and cls.__module__ != builtin:
        raise TokenizerError(
            f"tokenizer kind {kind!r} is built in ({builtin}); register "
            f"{cls.__module__}.{cls.__qualname__} under another kind"
        )
    taken = _REGISTRY.get(kind)
    if taken is not None and taken is not cls:
        raise TokenizerError(
            f"tokenizer kind {kind!r} is already registered to "
            f"{taken.__module__}.{taken.__qualname__}"
        )
    _REGISTRY[kind] = cls


def known_kinds() -> list[str]:
    """The built-in kinds and those registered so far, without importing any plugin (for help
    texts and choices; `load_tokenizer` imports a built-in kind on first use)."""
    return sorted(set(_BUILTIN_KINDS) | set(_REGISTRY))


def registered_kinds() -> list[str]:
    """Every kind that `load_tokenizer` accepts (imports the built-in plugins)."""
    for kind in _BUILTIN_KINDS:
        _import_builtin(kind)
    return sorted(_REGISTRY)


def tokenizer_class(kind: str) -> type[TokenizerBase]:
    """The class registered under `kind` (TokenizerError when there is none): a built-in kind,
    one registered by a module imported already, by a module named in TOKENMILL_PLUGINS, or by an
    installed package's entry point of group `tokenmill.tokenizers` named `kind` (each looked
    for in that order, in whichever process loads the tokenizer: a Ray actor's too)."""
    _import_builtin(kind)
    if kind not in _REGISTRY:
        import_plugins()
    if kind not in _REGISTRY:
        _load_entry_point(kind)
    if kind not in _REGISTRY:
        hint = (
            "; a plugin's module must be imported first (tokenmill --plugin MODULE, "
            f"{PLUGINS_ENV}=MODULE, or an entry point of group {ENTRY_POINT_GROUP!r})"
        )
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; known: {', '.join(known_kinds())}{hint}"
        )
    return _REGISTRY[kind]


PLUGINS_ENV = "TOKENMILL_PLUGINS"  # modules (comma-separated) that register tokenizer kinds
ENTRY_POINT_GROUP = "tokenmill.tokenizers"  # name = kind, value = its class or its module


def import_plugins(modules: str | None = None) -> None:
    """Import the plugin modules named in `modules` (default: the TOKENMILL_PLUGINS variable,
    comma-separated): module names, or paths of `.py` files (imported under their stem, once);
    one that cannot be imported is a TokenizerError naming it."""
    names = os.environ.get(PLUGINS_ENV, "") if modules is None else modules
    for name in filter(None, (n.strip() for n in names.split(","))):
        try:
            if name.endswith(".py"):
                _import_file(name)
            else:
                importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (a SyntaxError, an error at import: one line)
            raise TokenizerError(
                f"cannot import tokenizer plugin module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _import_file(path: str) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = os.path.abspath(path)
    name = Path(path).stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == path:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _load_entry_point(kind: str) -> None:
    """Register `kind` from an installed package's entry point (group ENTRY_POINT_GROUP): a
    TokenizerBase subclass is registered under the entry point's name; a module registers its
    kinds itself when imported."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 (a SyntaxError, an error at import: one line)
            raise TokenizerError(
                f"tokenizer kind {kind!r}: cannot load its entry point {point.value!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(loaded, type) and kind not in _REGISTRY:
            register(kind, loaded)
        return


def check_ids(tokenizer: TokenizerBase, ids: np.ndarray, offsets: np.ndarray) -> None:
    """Refuse ids that are not integers in 0 .. vocab_size - 1 (naming the first one and its
    text's index in the batch)."""
    if ids.dtype.kind not in "iu":
        raise TokenizerError(f"tokenizer {tokenizer.kind}: ids of dtype {ids.dtype}, not integers")
    bad = out_of_vocabulary(ids, offsets, tokenizer.vocab_size)
    if bad is not None:
        at, text = bad
        raise TokenizerError(
            f"tokenizer {tokenizer.kind}: id {int(ids[at])} of text {text} of the batch is out "
            f"of its vocabulary (0..{tokenizer.vocab_size - 1})"
        )


def out_of_vocabulary(ids: np.ndarray, offsets: np.ndarray, vocab: int) -> tuple[int, int] | None:
    """(position, text index) of the first integer id outside 0 .. vocab - 1, or None (one min and
    one max over the ids when they are all in range)."""
    if not len(ids):
        return None
    if not ((ids.dtype.kind == "i" and ids.min() < 0) or ids.max() >= vocab):
        return None
    at = int(np.flatnonzero((ids < 0) | (ids >= vocab))[0])
    return at, int(np.searchsorted(offsets, at, side="right")) - 1


def parse_spec(spec: str) -> tuple[str, str]:
    """Split "KIND:PATH" (PATH may itself be a URL such as s3://b/k)."""
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise TokenizerError(f"tokenizer spec {spec!r} must look like KIND:PATH, e.g. bpe:tok.json")
    return kind, path


def check_options(kind: str, path: str, options: dict[str, Any], known: set[str]) -> None:
    """Refuse load options a plugin does not take (a typo would otherwise be ignored)."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise TokenizerError(
            f"{kind} tokenizer {path!r}: unknown option(s) {unknown}; known: {sorted(known)}"
        )


def load_tokenizer(spec: str, storage_options: dict | None = None, **options: Any) -> TokenizerBase:
    """Load a tokenizer from "KIND:PATH" (local path or fsspec URL); one without a fingerprint
    or a vocabulary is refused (runs, resumes and readers tell tokenizers apart by them)."""
    kind, path = parse_spec(spec)
    tokenizer = tokenizer_class(kind).load(path, storage_options=storage_options, **options)
    if not tokenizer.fingerprint or not isinstance(tokenizer.fingerprint, str):
        raise TokenizerError(
            f"tokenizer {spec} has no fingerprint: its plugin must set `fingerprint` (a digest "
            "of its model and options: tokenizers_impl.base.fingerprint_of)"
        )
    if not isinstance(tokenizer.vocab_size, int) or tokenizer.vocab_size <= 0:
        raise TokenizerError(
            f"tokenizer {spec} has vocab_size {tokenizer.vocab_size!r}: its plugin must set it "
            "to the number of ids it may return"
        )
    return tokenizer


def _import_builtin(kind: str) -> None:
    """Import the module of a built-in kind on first use (a plugin never loads the others)."""
    if kind not in _REGISTRY and kind in _BUILTIN_KINDS:
        importlib.import_module(_BUILTIN_KINDS[kind])
