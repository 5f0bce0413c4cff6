"""The types that cross the input seam (a leaf: it imports only schemas): how records are found
(`ReadOptions`), what a unit is (`WorkUnit`, defined with the on-disk records since the ledger
stores it), and what a reader yields (`DocBatch` of accepted documents plus `Reject`s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.records import Reject, WorkUnit

__all__ = ["DocBatch", "InputFile", "ReadOptions", "Reject", "WorkUnit"]


@dataclass(frozen=True)
class ReadOptions:
    """How records are found in input files (part of the job config; all fields hash into the
    config hash, so changing one gives new shard names)."""

    format: str = "auto"  # auto, chat (auto, every record a conversation), or a format name
    text_mode: str = "line"  # for text inputs: one document per "line" or per "file"
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    lang_field: str = "lang"
    unit_bytes: int = 64 << 20
    pack_small_files: int = 0  # whole JSONL/text files up to this size share units (0: never)
    max_doc_bytes: int = 32 << 20  # UTF-8 bytes of one document's text
    max_record_bytes: int = 64 << 20  # raw bytes of one input line/record (JSON escapes included)
    batch_docs: int = 256
    batch_bytes: int = 4 << 20
    source_tokenizer: str = ""  # format "shards": KIND:PATH of the tokenizer that wrote the input
    # chat records: a list of {role, content} messages, rendered with a jinja2 chat template (its
    # source text; "" = no template, so a record with messages and no text is rejected)
    messages_field: str = "messages"
    chat_template: str = ""
    train_on: str = "assistant"  # which tokens get loss_mask 1: all | assistant | last-assistant
    chat_bos_token: str = ""  # the tokenizer's BOS/EOS text, given to the template as bos_token
    chat_eos_token: str = ""  # and eos_token


@dataclass(frozen=True)
class InputFile:
    """One input file found by planning: where it is, and what identifies its current version."""

    fs: Any  # the fsspec filesystem
    path: str  # the path on that filesystem, as found (its name tells the format)
    url: str  # the canonical URL recorded in units (a local file's real path)
    size: int
    etag: str
    compression: str | None
    version: str = ""  # which version of the file this is (WorkUnit.version of its units)


@dataclass
class DocBatch:
    """A bounded batch of one unit's records: accepted documents (parallel lists) and rejects."""

    doc_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    langs: list[str | None] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    byte_lengths: list[int] = field(default_factory=list)  # UTF-8 bytes of each text
    input_offsets: list[int | None] = field(default_factory=list)  # each record's byte offset
    nbytes: int = 0
    blank: int = 0  # blank lines skipped (not records)
    # jobs with a chat template: per document, its chat segments (None for a plain text document)
    segments: list[list[tuple[str, bool, bool]] | None] | None = None
    # a pack's batches: per document, the index of its file among the pack's members
    input_files: list[int] | None = None

    @property
    def records(self) -> int:
        return len(self.texts) + len(self.rejects)
