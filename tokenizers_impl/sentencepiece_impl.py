"""SentencePiece plugin (`sentencepiece`): trains and loads `.model` files (BPE or unigram)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from itertools import chain
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
from tokenizers_impl.files import probe_texts, read_file, write_file
from tokenizers_impl.special_tokens import resolve_special_tokens


class SentencePieceTokenizer(ByteTableTokenizer):
    kind: ClassVar[str] = "sentencepiece"

    def __init__(
        self,
        model_proto: bytes,
        name: str = "sentencepiece",
        eos_token: str | None = None,
        bos_token: str | None = None,
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
        texts = list(probe_texts())
        self.lossless = all(
            self.decode_bytes(ids) == t.encode("utf-8")
            for ids, t in zip(self.sp.encode(texts, out_type=int), texts, strict=True)
        )

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
        """Options: name, eos_token, bos_token (pieces; default: the model's own eos/bos)."""
        check_options(cls.kind, path, options, {"name", "eos_token", "bos_token"})
        return cls(
            read_file(path, storage_options),
            name=options.get("name") or path.rsplit("/", 1)[-1],
            eos_token=options.get("eos_token"),
            bos_token=options.get("bos_token"),
        )

    def save(self, url: str, storage_options: dict | None = None) -> None:
        write_file(url, self.proto, storage_options)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [
            np.array(ids, dtype=np.uint32)
            for ids in self.sp.encode(list(texts), out_type=int, num_threads=1)
        ]

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        lists = self.sp.encode(list(texts), out_type=int, num_threads=1)
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(lists), dtype=np.uint32, count=int(offsets[-1]))
        return flat, offsets

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "encoder": "sentencepiece",  # the library encodes: no other backend is exact for it
            "encoder_version": str(getattr(spm, "__version__", "")),
        }


def _split_long(texts: Iterable[str], limit: int = 1 << 15) -> Iterable[str]:
    """SentencePiece trains on 'sentences': feed lines, cutting very long ones."""
    for text in texts:
        for line in text.split("\n"):
            for start in range(0, len(line), limit):
                yield line[start : start + limit]


register("sentencepiece", SentencePieceTokenizer)
