"""The one typed job configuration: loaded from YAML and/or CLI flags, validated before any work starts."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

import fsspec
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipeline.errors import ConfigError
from pipeline.tokenize.inputs import ReadOptions, format_names
from schemas.shards import SCHEMA_VERSION

MAX_CONFIG_BYTES = 1 << 20  # a job config is a few lines of YAML; anything bigger is refused unread
# Below this the lease heartbeat (a quarter of the expiry) would race storage latency, and a second
# driver could take a live lease.
MIN_LEASE_SECONDS = 5.0


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice (YAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)  # merge keys (`<<: *defaults`) first, as SafeLoader does
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Options every fsspec filesystem takes (its listings cache and instance cache).
COMMON_STORAGE_OPTIONS = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache"}
)


def storage_option_names(urls: list[str]) -> frozenset[str]:
    """The storage options the filesystems of these URLs accept (their constructors' keywords)."""
    names = set(COMMON_STORAGE_OPTIONS)
    protocols = {fsspec.core.split_protocol(url)[0] or "file" for url in urls}
    for protocol in protocols:
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError):
            continue  # an unknown protocol fails later, naming the URL
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            names.update(
                p.name
                for p in inspect.signature(init).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
            )
    return frozenset(names)


class TokenizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    path: str
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> TokenizerSpec:
        if isinstance(value, str):
            kind, sep, path = value.partition(":")
            if not sep or not kind or not path:
                raise ValueError(
                    f"tokenizer {value!r} must look like KIND:PATH, e.g. bpe:tokenizer.json"
                )
            return cls(kind=kind, path=path)
        return cls.model_validate(value)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.path}"


def absolute_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer spec as job.json keeps it: a local path made absolute (retokenize reads it
    back from anywhere; relative, it named whatever file of that name the current folder held)."""
    path = spec.get("path")
    local = isinstance(path, str) and path and "://" not in path and not os.path.isabs(path)
    if local and os.path.exists(path):  # (a file: not a name some plugin kind resolves itself)
        return {**spec, "path": os.path.abspath(path)}
    return spec


def local_absolute(url: str) -> str:
    """A local output path made absolute (what processes with another working folder, Ray
    actors on a cluster, must be given); URLs as they are."""
    return url if "://" in url else os.path.abspath(url)


SPECIAL_TOKEN_OPTIONS = ("eos_token", "bos_token")


def tokenizer_options(cfg: JobConfig) -> dict[str, Any]:
    """The options a job loads its tokenizer with: the spec's, plus the job's encoder choice and
    special tokens (`eos_token` / `bos_token` fields win over the spec's options)."""
    extra = {"encoder": cfg.encoder} if cfg.encoder else {}
    extra.update({k: getattr(cfg, k) for k in SPECIAL_TOKEN_OPTIONS if getattr(cfg, k)})
    return {**cfg.tokenizer.options, **extra}


def given_special_tokens(cfg: JobConfig) -> dict[str, str] | None:
    """The EOS / BOS token texts the job names itself (fields or tokenizer options), or None.
    They do not change the tokens in the shards, but they are what the loader reads from the
    ledger: hashed into the config, so that a rerun naming others is refused, not mixed in."""
    options = tokenizer_options(cfg)
    given = {k: str(options[k]) for k in SPECIAL_TOKEN_OPTIONS if options.get(k) is not None}
    return given or None


class JobConfig(BaseModel):
    """Everything that decides a tokenization job's output (plus run-time knobs that do not)."""

    model_config = ConfigDict(extra="forbid")

    input: list[str] = Field(description="input path/URL/glob (repeatable)")
    output: str = Field(description="output prefix (local folder or s3://...)")
    tokenizer: TokenizerSpec = Field(
        description="KIND:PATH, e.g. bpe:tokenizer.json, sentencepiece:m.model, lib:lex.json"
    )
    format: str = Field(
        "auto",
        description="input format (auto: by file suffix; chat: by suffix, every record a chat)",
    )
    source_tokenizer: str | None = Field(
        None,
        min_length=1,
        description="format shards: KIND:PATH of the tokenizer that wrote the input",
    )
    text_mode: Literal["line", "file"] = Field(
        "line", description="text inputs: one document per line or per file"
    )
    text_field: str = Field("text", min_length=1, description="record field holding the text")
    messages_field: str = Field(
        "messages",
        min_length=1,
        description="record field holding a chat's list of {role, content} messages",
    )
    chat_template: str | None = Field(
        None,
        min_length=1,
        description="chat records: chatml | llama3 | a jinja2 template file | a "
        "tokenizer_config.json (default: the tokenizer's own chat_template); with it, records "
        "with messages and no text are chats (format chat: every record is)",
    )
    train_on: Literal["all", "assistant", "last-assistant"] = Field(
        "assistant", description="chat tokens with loss_mask 1 (the rest get 0)"
    )
    id_field: str = Field("id", min_length=1, description="record field holding the document id")
    source_field: str = Field("source", min_length=1, description="record field naming the source")
    lang_field: str = Field("lang", min_length=1, description="record field naming the language")
    unit_bytes: int = Field(64 << 20, gt=0, description="work unit size for uncompressed files")
    pack_small_files: int = Field(
        0,
        ge=0,
        description="JSON lines and text files of at most this many bytes are packed, several "
        "to a unit of up to unit_bytes (one shard and ledger entry for many files; 0: one unit "
        "per file)",
    )
    max_doc_bytes: int = Field(32 << 20, gt=0, description="larger documents are rejected")
    max_record_bytes: int = Field(
        64 << 20, gt=0, description="larger raw records (lines) are rejected unread"
    )
    batch_docs: int = Field(256, gt=0, description="documents per tokenizer batch")
    batch_bytes: int = Field(4 << 20, gt=0, description="text bytes per tokenizer batch")
    token_offsets: bool = Field(False, description="store each token's byte end offset")
    encoder: Literal["auto", "gigatoken", "tiktoken", "tokenizers", "sentencepiece"] | None = Field(
        None,
        description="encoder backend of bpe, tiktoken and sentencepiece tokenizers (auto: the "
        "fastest one that reproduces the reference on the load-time probes); the ids are the "
        "same whichever runs",
    )
    eos_token: str | None = Field(
        None,
        min_length=1,
        description="the EOS token's text (default: the tokenizer's own, from its special tokens "
        "or a tokenizer_config.json beside it); the loader appends its id to every document",
    )
    bos_token: str | None = Field(
        None,
        min_length=1,
        description="the BOS token's text (default: the tokenizer's own, as for the EOS); the "
        "loader puts its id before every document",
    )
    verify_sample: float = Field(
        0.001,
        ge=0,
        le=1,
        description="share of documents re-encoded with the tokenizer's reference encoder while "
        "running (0 disables, 1 checks every document); a difference fails the unit",
    )
    word_stats: bool = Field(True, description="count words and continued words per document")
    # run-time knobs (do not change the shard bytes)
    actors: int | None = Field(None, gt=0, description="tokenizer actors (default: the CPUs)")
    actor_cpus: float = Field(0.5, gt=0, description="CPUs Ray reserves per actor")
    max_in_flight: int | None = Field(
        None, gt=0, description="units queued at once (default: 2 per actor)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options"
    )
    overwrite: bool = Field(False, description="discard committed output and redo everything")
    repair: bool = Field(
        False, description="verify committed units first and re-run the ones whose files are bad"
    )
    lease_seconds: float = Field(
        60.0,
        ge=MIN_LEASE_SECONDS,
        le=7 * 24 * 3600,  # (a week: a dead run's lease must expire; inf crashed at release)
        description="output lease expiry; refreshed every quarter of it",
    )
    on_input_change: Literal["redo", "refuse"] = Field(
        "redo",
        description="inputs changed or removed since their units were committed: redo (uncommit "
        "those units first, so the output equals a fresh run) or refuse (exit, naming the files)",
    )
    dashboard: bool = Field(False, description="start the Ray dashboard with a local cluster")
    local_bytes: int = Field(
        32 << 20,
        ge=0,
        description="a local job (no --actors, no Ray address) with at most this many input "
        "bytes left runs in the driver process without considering Ray; a bigger one starts in "
        "the driver too (see ray_after_seconds)",
    )
    ray_after_seconds: float | None = Field(
        None,
        ge=0,
        description="a bigger local job starts in the driver and starts Ray (the driver "
        "tokenizing meanwhile) only once the driver's rate projects more than this many seconds "
        "of work left; 0 = start Ray at once; default: from this machine's CPUs (when Ray's "
        "start-up pays for itself: about 8 s on many cores, about 25 s on 2)",
    )
    driver_threads: int = Field(
        0,
        ge=0,
        description="workers tokenizing in the driver of a local run (threads sharing a "
        "thread-safe tokenizer, else each with its own); 0 = one per CPU, at most 8 (4 with "
        "--no-driver-processes; a job under local_bytes: one, unless this asks for more)",
    )
    driver_processes: bool | None = Field(
        None,
        description="the driver's workers after the first run in helper processes of their own "
        "(spawned, each loading the tokenizer; no Ray) instead of threads, which share its GIL; "
        "default: helpers from 4 workers on (fewer threads rarely wait on the GIL), or for a "
        "job of 1 GiB or more to do",
    )
    ray_address: str | None = Field(
        None, min_length=1, description="existing Ray cluster (default: RAY_ADDRESS or local)"
    )
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's `true` is not a number (pydantic took `unit_bytes: true` for 1)."""
        annotation = cls.model_fields[info.field_name].annotation
        numeric = {int, float} & ({annotation} | set(typing.get_args(annotation)))
        if isinstance(value, bool) and numeric and bool not in typing.get_args(annotation):
            raise ValueError(f"{value!r} is not a number")
        return value

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer(cls, value: Any) -> Any:
        return TokenizerSpec.parse(value) if isinstance(value, str) else value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        known = ["auto", "chat", *format_names()]
        if value not in known:
            raise ValueError(f"unknown input format {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an output folder or URL (it is empty)")
        scheme, sep, rest = value.partition("://")
        if sep and "//" in rest.rstrip("/"):  # (s3fs writes the key as given, lists it collapsed)
            raise ValueError(
                f"{value!r} has an empty path segment ('//'): objects would be written under one "
                "key and listed under another, so no unit would ever read as committed; write "
                f"it with single slashes ({scheme}://{'/'.join(p for p in rest.split('/') if p)})"
            )
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not value:
            raise ValueError("at least one input path or glob is required")
        return value

    @field_validator("storage_options")
    @classmethod
    def _known_storage_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict:
        tokenizer = info.data.get("tokenizer")
        urls = [*info.data.get("input", []), info.data.get("output", "")]
        urls += [tokenizer.path] if tokenizer else []
        known = storage_option_names([u for u in urls if u])
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown storage option(s) {', '.join(unknown)} for these URLs "
                f"(their filesystems take: {', '.join(sorted(known))})"
            )
        return value

    def read_options(self, chat: dict[str, str] | None = None) -> ReadOptions:
        """The job's read options: every ReadOptions field comes from the field of the same name,
        except the chat template's resolved text and tokens (`chat`, see `resolve_chat`)."""
        values = {
            f.name: getattr(self, f.name) for f in fields(ReadOptions) if hasattr(self, f.name)
        }
        values.update({"chat_template": "", **(chat or {})})
        return ReadOptions(**{**values, "source_tokenizer": self.source_tokenizer or ""})

    def output_options(self, read: ReadOptions | None = None) -> dict[str, Any]:
        """The options that change shard bytes (hashed into shard names with the tokenizer
        fingerprint). A job without a chat template hashes as it did before chats existed."""
        options = asdict(read or self.read_options())
        if not options["chat_template"]:
            for name in CHAT_READ_FIELDS:
                options.pop(name)
        if not options["pack_small_files"]:  # (hashes as before packing existed)
            options.pop("pack_small_files")
        return {
            "read": options,
            "token_offsets": self.token_offsets,
            "word_stats": self.word_stats,
        }

    def config_hash(self, tokenizer_fingerprint: str, read: ReadOptions | None = None) -> str:
        specials = given_special_tokens(self)  # (a job naming none hashes as before)
        payload = json.dumps(
            {
                "tokenizer": tokenizer_fingerprint,
                "schema_version": SCHEMA_VERSION,
                **self.output_options(read),
                **({"special_tokens": specials} if specials else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


CHAT_READ_FIELDS = (
    "messages_field",
    "chat_template",
    "train_on",
    "chat_bos_token",
    "chat_eos_token",
)


def load_config(path: str | None = None, **overrides: Any) -> JobConfig:
    """A validated JobConfig from an optional YAML file plus overrides (flags win over the file)."""
    data: dict[str, Any] = {}
    if path:
        try:
            size = Path(path).stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"config file {path!r} is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit"
                )
            text = Path(path).read_text(encoding="utf-8")
            loaded = yaml.load(text, Loader=_UniqueKeySafeLoader)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path!r} does not exist") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path!r} is not UTF-8 text: {exc}") from exc
        except yaml.YAMLError as exc:  # (one line: the problem and where)
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path!r} is not valid YAML{at}: {problem}") from None
        if loaded is None:  # an empty file: every field from the flags
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping of fields")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(config)'}: {err['msg']}"
            for err in exc.errors()
        )
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid job config{where}: {problems}") from exc
