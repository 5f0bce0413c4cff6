"""LiB ("Less-is-Better") tokenizer plugin (`lib`): an online-learned lexicon of sub-words, words
and multi-word units, encoded by greedy longest match with LiB's two-branch comparison
(docs/algorithms.md section 2, "LiB")."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from tokenizers_impl.base import (
    TokenizerBase,
    TokenizerError,
    check_options,
    fingerprint_of,
    register,
)
from tokenizers_impl.files import read_json, write_file
from tokenizers_impl.lib.encoding import LiBEncoder
from tokenizers_impl.lib.training import LiBParams, LiBTrainer, segment

EOS = "<|endoftext|>"
FORMAT = "tokenmill-lib"
VERSION = 1
N_BYTES = 256
MAX_UNITS = 1 << 24
MAX_UNIT_CHARS = 1024
Progress = Callable[[dict[str, Any]], None]


class LiBTokenizer(TokenizerBase):
    """Ids: 0..n-1 the learned units by final rank, n..n+255 the byte-fallback units, n+256 EOS."""

    kind: ClassVar[str] = "lib"
    lossless = True

    def __init__(self, units: Sequence[str], params: LiBParams | None = None, name: str = "lib"):
        _check_units(units)
        self.units = list(units)
        self.params = params or LiBParams()
        self.name = name
        n = len(self.units)
        self.byte_base = n
        self.eos_id, self.eos_token = n + N_BYTES, EOS
        self.added_tokens = {EOS: self.eos_id}  # (a chat template's EOS is this id)
        self.vocab_size = n + N_BYTES + 1
        self._bytes = [u.encode("utf-8", "surrogatepass") for u in self.units]
        self._bytes += [bytes([b]) for b in range(N_BYTES)] + [EOS.encode("utf-8")]
        self.fingerprint = fingerprint_of(
            self.kind,
            json.dumps(self.units, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            {"version": VERSION, "byte_fallback": N_BYTES, "specials": [EOS]},
        )
        self.encoder = LiBEncoder(self.units, byte_base=n)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_lexicon(cls, units: Sequence[str], name: str = "lib", **params: Any) -> LiBTokenizer:
        """A tokenizer whose ids follow `units` (rank = position)."""
        return cls(units, LiBParams(**params), name=name)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None = None,
        progress: Progress | bool = False,
        progress_every: int = 50,
        sample_sentences: int = 200,
        doc_sentences: int | None = None,
        name: str = "lib",
        **hyperparams: Any,
    ) -> LiBTokenizer:
        """Learn a lexicon from documents (each split into lines = sentences).

        A LiB "document" (the unit of probation, re-ranking and tail marking) is one input text, or
        each run of `doc_sentences` lines of it when that is set (1 = every line is a document).

        `vocab_size` is a hard cap on the final vocabulary (units + 256 bytes + EOS). Every
        `progress_every` documents, `progress` (a callable, or True for a stderr line) gets the
        documents, sentences, lexicon size and tokens per sentence on a held-back sample (every
        20th line, up to `sample_sentences`, never trained on); without `progress` every line is
        trained on.
        """
        try:
            params = LiBParams(**hyperparams)
        except (TypeError, ValueError) as exc:  # an unknown name, a value of the wrong type
            raise TokenizerError(f"LiB training options {hyperparams}: {exc}") from None
        if doc_sentences is not None and doc_sentences < 1:
            raise TokenizerError(f"doc_sentences must be >= 1, not {doc_sentences}")
        max_units = None
        if vocab_size is not None:
            max_units = vocab_size - N_BYTES - 1
            if max_units < 1:
                raise TokenizerError(
                    f"vocab_size {vocab_size} leaves no room beyond the "
                    f"{N_BYTES} byte units and EOS"
                )
        trainer = LiBTrainer(params, max_units=max_units)
        report = _reporter(progress)
        sample: list[str] = []
        started = time.perf_counter()
        seen = 0
        for text in texts:
            sentences = []
            for line in text.splitlines(keepends=True):
                seen += 1
                if report is not None and seen % 20 == 0 and len(sample) < sample_sentences:
                    sample.append(line)
                else:
                    sentences.append(line)
            step = doc_sentences or max(1, len(sentences))
            for first in range(0, max(1, len(sentences)), step):
                trainer.train_document(sentences[first : first + step])
                if report is not None and trainer.documents % progress_every == 0:
                    report(_progress_record(trainer, sample, started))
        if report is not None and trainer.documents % progress_every != 0:
            report(_progress_record(trainer, sample, started))
        if max_units is not None:
            trainer.enforce_cap(max_units, protect_chars=False)  # bytes still cover dropped chars
        return cls(trainer.lexicon.units(), params, name=name)

    @classmethod
    def load(cls, path: str, storage_options: dict | None = None, **options: Any) -> LiBTokenizer:
        check_options(cls.kind, path, options, {"name"})
        data = read_json(path, storage_options)
        units, params = _parse_file(data, path)
        return cls(units, params, name=options.get("name") or path.rsplit("/", 1)[-1])

    def save(self, url: str, storage_options: dict | None = None) -> None:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "params": self.params.to_dict(),
            "byte_fallback": N_BYTES,
            "special_tokens": [EOS],
            "units": self.units,
        }
        write_file(
            url,
            json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            storage_options,
        )

    # -- contract -------------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        return self.encoder.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.encoder.encode_batch(texts)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        table = self._bytes
        return b"".join([table[i] for i in np.asarray(ids, dtype=np.int64).tolist()])

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def segment(self, text: str) -> list[str]:
        """The chunks (units or unknown characters) `text` is encoded into."""
        return self.encoder.segment(text)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "params": self.params.to_dict()}


def _reporter(progress: Progress | bool) -> Progress | None:
    if callable(progress):
        return progress
    if not progress:
        return None

    def log_line(record: dict[str, Any]) -> None:
        print(
            f"lib train: {record['documents']} docs, {record['sentences']} sentences, "
            f"lexicon {record['lexicon_size']}, {record['tokens_per_sentence']:.2f} tokens/"
            f"sentence on {record['sample_sentences']} held-back, {record['elapsed_s']:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    return log_line


def _progress_record(trainer: LiBTrainer, sample: list[str], started: float) -> dict[str, Any]:
    lexicon, max_len = trainer.lexicon, trainer.params.max_unit_len
    tokens = sum(len(segment(lexicon, s, max_len)) for s in sample)
    return {
        "documents": trainer.documents,
        "sentences": trainer.sentences,
        "lexicon_size": len(lexicon),
        "on_probation": len(trainer.probation),
        "tokens_per_sentence": tokens / len(sample) if sample else float("nan"),
        "sample_sentences": len(sample),
        "elapsed_s": time.perf_counter() - started,
    }


def _check_units(units: Sequence[str]) -> None:
    if len(units) > MAX_UNITS:
        raise TokenizerError(f"lexicon has {len(units)} units, over the {MAX_UNITS} limit")
    seen: set[str] = set()
    for i, unit in enumerate(units):
        if not isinstance(unit, str) or not unit:
            raise TokenizerError(f"lexicon unit {i} is {unit!r}, not a non-empty string")
        if len(unit) > MAX_UNIT_CHARS:
            raise TokenizerError(f"lexicon unit {i} has {len(unit)} chars, over {MAX_UNIT_CHARS}")
        if unit in seen:
            raise TokenizerError(f"lexicon unit {i} ({unit!r}) appears twice")
        seen.add(unit)


def _parse_file(data: Any, path: str) -> tuple[list[str], LiBParams]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TokenizerError(f"{path!r} is not a LiB tokenizer file (format != {FORMAT!r})")
    if data.get("version") != VERSION:
        raise TokenizerError(
            f"{path!r} has LiB file version {data.get('version')!r}; "
            f"this build reads version {VERSION}"
        )
    if data.get("byte_fallback") != N_BYTES or data.get("special_tokens") != [EOS]:
        raise TokenizerError(f"{path!r}: byte_fallback must be {N_BYTES} and special_tokens [EOS]")
    units = data.get("units")
    if not isinstance(units, list):
        raise TokenizerError(f"{path!r}: 'units' must be a list of strings")
    params = data.get("params")
    if not isinstance(params, dict) or set(params) - set(LiBParams().to_dict()):
        raise TokenizerError(f"{path!r}: 'params' must be an object with LiB hyperparameters")
    try:
        parsed = LiBParams(**params)
    except (TypeError, ValueError) as exc:
        raise TokenizerError(f"{path!r}: bad 'params': {exc}") from exc
    try:
        _check_units(units)
    except TokenizerError as exc:
        raise TokenizerError(f"{path!r}: {exc}") from exc
    return units, parsed


register("lib", LiBTokenizer)
