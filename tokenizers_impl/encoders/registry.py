"""The encoder registry and the exactness gate: `select_encoder` picks the first backend, in order
of speed, that builds for this tokenizer and reproduces the reference encoder on the probe set."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tokenizers_impl.encoders.base import Encoder, EncoderSource, EncoderUnavailable
from tokenizers_impl.encoders.probes import first_difference
from tokenizers_impl.errors import TokenizerError

log = logging.getLogger("tokenmill.encoders")

# Fastest first: what `auto` tries, in this order.
AUTO_ORDER = ("gigatoken", "tiktoken", "tokenizers")

Factory = Callable[[EncoderSource], Encoder]
_FACTORIES: dict[str, Factory] = {}
# Built-in backends and the module whose `build(source)` makes one; imported on first use, so a
# backend whose library is absent costs nothing until asked for.
_BUILTIN = {
    "tokenizers": "tokenizers_impl.encoders.tokenizers_backend",
    "tiktoken": "tokenizers_impl.encoders.tiktoken_backend",
    "gigatoken": "tokenizers_impl.encoders.gigatoken_backend",
    "sentencepiece": "tokenizers_impl.encoders.sentencepiece_backend",
}


def register_encoder(name: str, factory: Factory) -> None:
    """Register (or replace) the factory of backend `name`: `factory(source)` returns an Encoder
    or raises EncoderUnavailable."""
    _FACTORIES[name] = factory


def unregister_encoder(name: str) -> None:
    """Forget a registered factory (a built-in comes back from its module on next use)."""
    _FACTORIES.pop(name, None)


def encoder_names() -> list[str]:
    return sorted({*_BUILTIN, *_FACTORIES})


def build_encoder(name: str, source: EncoderSource) -> Encoder:
    """Build backend `name` for `source`; EncoderUnavailable when it cannot be built (a library
    that is absent or rejects the tokenizer), TokenizerError for an unknown name."""
    factory = _FACTORIES.get(name)
    if factory is None:
        if name not in _BUILTIN:
            raise TokenizerError(f"unknown encoder {name!r}; known: {', '.join(encoder_names())}")
        try:
            factory = importlib.import_module(_BUILTIN[name]).build
        except ImportError as exc:  # the backend's library is not installed
            raise EncoderUnavailable("absent", f"cannot import it ({exc})") from exc
    try:
        return factory(source)
    except EncoderUnavailable:
        raise
    except ImportError as exc:
        raise EncoderUnavailable("absent", f"cannot import it ({exc})") from exc
    except Exception as exc:  # a library refusing the tokenizer raises its own types
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise EncoderUnavailable("refused", f"{type(exc).__name__}: {first_line}") from exc


def guarded(encoder: Encoder, reference: Encoder) -> Encoder:
    """`encoder`, or, when its Unicode tables are newer than the references' (`newer_unicode`),
    the encoder with the texts it could split otherwise sent to `reference` (unassigned.Guarded)."""
    if not getattr(encoder, "newer_unicode", False) or encoder is reference:
        return encoder
    from tokenizers_impl.encoders.unassigned import Guarded

    return Guarded(encoder, reference)


@dataclass(frozen=True)
class Selection:
    """The chosen encoder and why each faster backend was passed over ("NAME: reason")."""

    encoder: Encoder
    fallbacks: tuple[str, ...] = ()


class _Gate:
    """Compares candidates with the reference on the probe texts (reference encoded once)."""

    def __init__(
        self,
        reference: Encoder,
        probes: Sequence[str],
        expected: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.reference, self.probes, self._want = reference, list(probes), expected

    @property
    def want(self) -> tuple[np.ndarray, np.ndarray]:
        if self._want is None:
            self._want = self.reference.encode_flat(self.probes)
        return self._want

    def check(self, encoder: Encoder) -> str | None:
        """None when `encoder` reproduces the reference on every probe, else the first difference."""
        try:
            got = encoder.encode_flat(self.probes)
        except Exception as exc:  # a backend that crashes on a probe is not exact
            return f"raised {type(exc).__name__} on the probe texts: {exc}"
        diff = first_difference(self.probes, got, self.want)
        return None if diff is None else f"differs from {self.reference.describe()} on {diff}"


def select_encoder(
    choice: str,
    source: EncoderSource,
    reference: Encoder,
    probes: Sequence[str],
    order: Sequence[str] = AUTO_ORDER,
    expected: tuple[np.ndarray, np.ndarray] | None = None,
) -> Selection:
    """The encoder to use: `choice` is "auto" (the first of `order` that builds and is exact) or a
    backend name (TokenizerError when it cannot be built or is not exact). The reference is exact
    by definition and is never gated.

    Every backend passed over in `auto` is logged: a warning when its library is absent, refuses
    this tokenizer or disagrees with the reference; at info level when the tokenizer is outside
    what it implements (e.g. tiktoken for a non-byte-level BPE). `expected` is the reference's
    flat encoding of `probes`, when the caller has it already."""
    gate = _Gate(reference, probes, expected)
    if choice != "auto":
        if choice == reference.name:
            return Selection(reference)
        try:
            encoder = guarded(build_encoder(choice, source), reference)
        except EncoderUnavailable as exc:
            raise TokenizerError(
                f"encoder {choice!r} is unavailable for {source.label}: {exc}"
            ) from exc
        diff = gate.check(encoder)
        if diff is not None:
            raise TokenizerError(f"encoder {encoder.describe()} is not exact: {diff}")
        return Selection(encoder)
    fallbacks: list[str] = []
    for name in order:
        if name == reference.name:
            return Selection(reference, tuple(fallbacks))
        reason, quiet = _try(name, source, gate)
        if isinstance(reason, Encoder):
            return Selection(reason, tuple(fallbacks))
        fallbacks.append(f"{name}: {reason}")
        (log.info if quiet else log.warning)(
            "encoder %s not used for %s (%s); trying the next one", name, source.label, reason
        )
    raise TokenizerError(f"no encoder in {list(order)} works for {source.label}: {fallbacks}")


def _try(name: str, source: EncoderSource, gate: _Gate) -> tuple[Encoder | str, bool]:
    """(the encoder, _) when it builds and is exact, else (reason, quiet)."""
    try:
        encoder = guarded(build_encoder(name, source), gate.reference)
    except EncoderUnavailable as exc:
        return str(exc), exc.why == "not applicable"
    diff = gate.check(encoder)
    if diff is None:
        return encoder, False
    return f"{encoder.describe()} {diff}", False
