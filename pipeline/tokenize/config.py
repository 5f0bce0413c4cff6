"""The one typed job configuration: loaded from YAML and/or CLI flags, validated before any work starts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ConfigError
from pipeline.tokenize.inputs import ReadOptions, format_names

MAX_CONFIG_BYTES = 1 << 20  # a job config is a few lines of YAML; anything bigger is refused unread


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


class JobConfig(BaseModel):
    """Everything that decides a tokenization job's output (plus run-time knobs that do not)."""

    model_config = ConfigDict(extra="forbid")

    input: list[str]
    output: str
    tokenizer: TokenizerSpec
    format: str = "auto"  # auto (by file suffix) or an input format name
    source_tokenizer: str | None = None  # format "shards": the tokenizer that wrote the input
    text_mode: Literal["line", "file"] = "line"
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    lang_field: str = "lang"
    unit_bytes: int = Field(64 << 20, gt=0)
    max_doc_bytes: int = Field(32 << 20, gt=0)
    max_record_bytes: int = Field(64 << 20, gt=0)
    batch_docs: int = Field(256, gt=0)
    batch_bytes: int = Field(4 << 20, gt=0)
    token_offsets: bool = False
    word_stats: bool = True
    # run-time knobs (do not change the shard bytes)
    actors: int | None = Field(None, gt=0)
    actor_cpus: float = Field(0.5, gt=0)
    max_in_flight: int | None = Field(None, gt=0)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    overwrite: bool = False
    repair: bool = False
    lease_seconds: float = Field(60.0, gt=0)  # output lease expiry; refreshed every quarter of it
    ray_address: str | None = None
    progress: bool = True

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer(cls, value: Any) -> Any:
        return TokenizerSpec.parse(value) if isinstance(value, str) else value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        known = ["auto", *format_names()]
        if value not in known:
            raise ValueError(f"unknown input format {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not value:
            raise ValueError("at least one input path or glob is required")
        return value

    def read_options(self) -> ReadOptions:
        """The job's read options: every ReadOptions field comes from the field of the same name."""
        values = {f.name: getattr(self, f.name) for f in fields(ReadOptions)}
        return ReadOptions(**{**values, "source_tokenizer": self.source_tokenizer or ""})

    def output_options(self) -> dict[str, Any]:
        """The options that change shard bytes (hashed into shard names with the tokenizer fingerprint)."""
        return {
            "read": asdict(self.read_options()),
            "token_offsets": self.token_offsets,
            "word_stats": self.word_stats,
        }

    def config_hash(self, tokenizer_fingerprint: str) -> str:
        payload = json.dumps(
            {"tokenizer": tokenizer_fingerprint, **self.output_options()}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path!r} does not exist") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path!r} is not UTF-8 text: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
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
