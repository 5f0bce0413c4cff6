"""The `sentencepiece` backend (the library itself: the reference of a `sentencepiece` tokenizer),
and the tokenizer.json a SentencePiece BPE model encodes the same as, so that the faster backends
built from a tokenizer.json (gigatoken) can be tried on it through the exactness gate.

What the tokenizer.json spells out (docs/encoders.md has the measurements):
- the vocabulary: every piece with its id (byte pieces `<0xXX>` are byte fallback, as in the
  `tokenizers` library);
- the merges: SentencePiece's BPE joins, in a word, the adjacent pair whose joined piece has the
  highest score; a BPE with one merge per way of cutting each normal piece in two known pieces,
  ranked by the joined piece's score (then its id), joins the same pairs in the same order;
- the normaliser: spaces become U+2581, after a U+2581 prepended when the model adds a dummy
  prefix; no pre-tokeniser (SentencePiece's words do not change what BPE joins in this vocabulary:
  no piece holds U+2581 after another character);
- user-defined pieces (chat markers, say): added tokens that are not special, matched anywhere
  in the text, as SentencePiece matches them.
Models outside that are left to the library, with the reason: unigram models, a normalisation
other than identity, removed extra whitespace, whitespace as a suffix, user-defined pieces with
whitespace or with a dummy prefix, and a piece with U+2581 inside."""

from __future__ import annotations

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

SPACE = "\u2581"


class SentencePieceEncoder(Encoder):
    """The sentencepiece library's own encoder (one thread)."""

    name: ClassVar[str] = "sentencepiece"

    def __init__(self, processor: Any):
        self.processor = processor
        self.version = package_version("sentencepiece")

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return empty_flat(0)
        return flat_from_lists(self.processor.encode(list(texts), out_type=int, num_threads=1))


def build(source: EncoderSource) -> SentencePieceEncoder:
    import sentencepiece as spm

    if source.model_proto is None:
        raise EncoderUnavailable("not applicable", "not a SentencePiece model")
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(source.model_proto)
    return SentencePieceEncoder(processor)


def tokenizer_json(model_proto: bytes) -> tuple[dict[str, Any] | None, str]:
    """(the tokenizer.json config a SentencePiece BPE model encodes the same as, "") or (None,
    why it has none)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(model_proto)
    trainer, norm = model.trainer_spec, model.normalizer_spec
    kind = pb.ModelProto.SentencePiece
    problems = {
        "a unigram model": trainer.model_type != pb.TrainerSpec.BPE,
        f"normalisation {norm.name!r}": norm.name != "identity"
        or bool(norm.normalization_rule_tsv),
        "extra whitespace removed": norm.remove_extra_whitespaces,
        "whitespace not escaped": not norm.escape_whitespaces,
        "whitespace as a suffix": trainer.treat_whitespace_as_suffix,
        "user-defined pieces with whitespace": any(
            p.type == kind.USER_DEFINED and (SPACE in p.piece or any(c.isspace() for c in p.piece))
            for p in model.pieces
        ),
        # (the tokenizer.json would prefix each stretch of text between two of them)
        "user-defined pieces with a dummy prefix": norm.add_dummy_prefix
        and any(p.type == kind.USER_DEFINED for p in model.pieces),
        f"a piece with {SPACE} after another character": any(
            SPACE in p.piece.lstrip(SPACE) for p in model.pieces if p.type == kind.NORMAL
        ),
    }
    found = [what for what, bad in problems.items() if bad]
    if found:
        return None, f"no equivalent tokenizer.json ({', '.join(found)})"
    vocab = {p.piece: i for i, p in enumerate(model.pieces)}
    normal = sorted(
        ((i, p) for i, p in enumerate(model.pieces) if p.type == kind.NORMAL and len(p.piece) > 1),
        key=lambda item: (-item[1].score, item[0]),
    )
    merges = [
        [p.piece[:k], p.piece[k:]]
        for _, p in normal
        for k in range(1, len(p.piece))
        if p.piece[:k] in vocab and p.piece[k:] in vocab
    ]
    unknown = next((p.piece for p in model.pieces if p.type == kind.UNKNOWN), None)
    steps = [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]
    if norm.add_dummy_prefix:
        steps.insert(0, {"type": "Prepend", "prepend": SPACE})
    config = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [  # matched anywhere in the text, as SentencePiece matches them
            {
                "id": i,
                "content": p.piece,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
            for i, p in enumerate(model.pieces)
            if p.type == kind.USER_DEFINED
        ],
        "normalizer": {"type": "Sequence", "normalizers": steps},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unknown,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": bool(trainer.byte_fallback),
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return config, ""
