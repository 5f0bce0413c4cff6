"""SentencePiece plugin (`sentencepiece`): trains and loads `.model` files (BPE or unigram).

The library is the reference encoder; a BPE model with an equivalent tokenizer.json
(encoders/sentencepiece_backend.py) is encoded by gigatoken when it reproduces the library on the
load-time probes (`encoder=auto`, the default), as for `bpe` tokenizers."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import sentencepiece as spm

from tokenizers_impl.base import (
    ByteTableTokenizer,
    TokenizerError,
    check_options,
    fingerprint_of,
    register,
)
from tokenizers_impl.encoders import EncoderSource, build_encoder, probe_set, select_encoder
from tokenizers_impl.encoders.base import encoder_options as check_encoder_options
from tokenizers_impl.encoders.sentencepiece_backend import tokenizer_json
from tokenizers_impl.files import probe_texts, read_file, write_file
from tokenizers_impl.special_tokens import resolve_special_tokens

AUTO_ORDER = ("gigatoken", "sentencepiece")  # what `auto` tries (the library: the reference)
LOAD_OPTIONS = {"name", "eos_token", "bos_token", "encoder", "encoder_reset_mb"}


class SentencePieceTokenizer(ByteTableTokenizer):
    kind: ClassVar[str] = "sentencepiece"

    def __init__(
        self,
        model_proto: bytes,
        name: str = "sentencepiece",
        eos_token: str | None = None,
        bos_token: str | None = None,
        encoder: str | None = None,
        encoder_options: dict[str, Any] | None = None,
    ):
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception as exc:  # the library raises RuntimeError/OSError on malformed protos
            raise TokenizerError(f"not a valid SentencePiece model: {exc}") from exc
        self.name = name
        self.vocab_size = self.sp.get_piece_size()
        self.fingerprint = fingerprint_of(self.kind, model_proto)
        self._bytes = [self._piece_bytes(i) for i in range(self.vocab_size)]
        self._resolve_special_tokens(eos_token, bos_token)
        self.added_tokens = self._added_pieces()
        self._select(encoder or "auto", encoder_options or {})

    def _select(self, choice: str, options: dict[str, Any]) -> None:
        """Check losslessness and choose the encoder (both on the probe texts)."""
        config, note = tokenizer_json(self.proto)
        source = EncoderSource(
            label=f"{self.kind}:{self.name}",
            config=config,
            config_note=note,
            model_proto=self.proto,
            options=options,
        )
        self._reference = build_encoder("sentencepiece", source)
        probes = probe_set(self.added_tokens)
        expected = self._reference.encode_flat(probes)
        flat, offsets = expected
        self.lossless = all(
            self.decode_bytes(flat[offsets[i] : offsets[i + 1]]) == text.encode("utf-8")
            for i, text in enumerate(probe_texts())
        )
        selection = select_encoder(choice, source, self._reference, probes, AUTO_ORDER, expected)
        self._encoder = selection.encoder
        self.encoder = selection.encoder.name
        self.encoder_version = selection.encoder.version
        self.encoder_fallbacks = selection.fallbacks
        self.verifiable = self.encoder != self._reference.name

    def _resolve_special_tokens(self, eos_token: str | None, bos_token: str | None) -> None:
        """EOS/BOS: the pieces named by the options, else the model's own eos/bos ids."""

        def lookup(piece: str) -> int | None:
            i = self.sp.piece_to_id(piece)
            return i if 0 <= i < self.vocab_size and self.sp.id_to_piece(i) == piece else None

        own = {}
        for role, i in (("eos", self.sp.eos_id()), ("bos", self.sp.bos_id())):
            if 0 <= i < self.vocab_size:
                own[role] = self.sp.id_to_piece(i)
        resolved = resolve_special_tokens(
            lookup,
            {},
            {f"{role}_token": piece for role, piece in own.items()},
            eos_token,
            bos_token,
            what=repr(self.name),
        )
        self.eos_token, self.eos_id = resolved.eos_token, resolved.eos_id
        self.bos_token, self.bos_id = resolved.bos_token, resolved.bos_id

    def _added_pieces(self) -> dict[str, int]:
        """Control (`<s>`, `</s>`) and user-defined pieces: the ones a chat template's own text may
        name as one id (the Python API tells control pieces apart but not user-defined ones)."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        model = pb.ModelProto()
        model.ParseFromString(self.proto)
        kinds = (pb.ModelProto.SentencePiece.CONTROL, pb.ModelProto.SentencePiece.USER_DEFINED)
        return {p.piece: i for i, p in enumerate(model.pieces) if p.type in kinds}

    def _piece_bytes(self, i: int) -> bytes:
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])
        if self.sp.is_control(i) or self.sp.is_unknown(i):
            return b""
        return piece.replace("▁", " ").encode("utf-8")

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 32000,
        model_type: str = "bpe",
        name: str = "sentencepiece",
        num_threads: int = 2,
        **options: Any,
    ) -> SentencePieceTokenizer:
        """Train a lossless model: identity normalisation, byte fallback, whitespace kept as is."""
        if model_type not in ("bpe", "unigram"):
            raise TokenizerError(f"model_type must be bpe or unigram, not {model_type!r}")
        buffer = io.BytesIO()
        params = dict(
            vocab_size=vocab_size,
            model_type=model_type,
            normalization_rule_name="identity",
            byte_fallback=True,
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            character_coverage=0.9995,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            hard_vocab_limit=False,
            train_extremely_large_corpus=False,
            minloglevel=2,
            unk_id=0,
            bos_id=-1,
            eos_id=1,
            pad_id=-1,
        )
        params.update(options)
        spm.SentencePieceTrainer.train(
            sentence_iterator=_split_long(texts), model_writer=buffer, **params
        )
        return cls(buffer.getvalue(), name=name)

    @classmethod
    def load(
        cls, path: str, storage_options: dict | None = None, **options: Any
    ) -> SentencePieceTokenizer:
        """Options: name, eos_token, bos_token (pieces; default: the model's own eos/bos),
        encoder (auto|gigatoken|sentencepiece|tokenizers), encoder_reset_mb (gigatoken: rebuild
        after this many MB of text; 0: never)."""
        check_options(cls.kind, path, options, LOAD_OPTIONS)
        return cls(
            read_file(path, storage_options),
            name=options.get("name") or path.rsplit("/", 1)[-1],
            eos_token=options.get("eos_token"),
            bos_token=options.get("bos_token"),
            encoder=options.get("encoder"),
            encoder_options=check_encoder_options(options),
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        write_file(url, self.proto, storage_options)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encoder.encode_batch(texts)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._encoder.encode_flat(texts)

    def reference_encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids from the sentencepiece library itself, whatever the encoder."""
        return self._reference.encode_batch(texts)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "encoder": self.encoder,
            "encoder_version": self.encoder_version,
            "encoder_fallbacks": list(self.encoder_fallbacks),
        }


def _split_long(texts: Iterable[str], limit: int = 1 << 15) -> Iterable[str]:
    """SentencePiece trains on 'sentences': feed lines, cutting very long ones."""
    for text in texts:
        for line in text.split("\n"):
            for start in range(0, len(line), limit):
                yield line[start : start + limit]


register("sentencepiece", SentencePieceTokenizer)
