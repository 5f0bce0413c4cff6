"""`tokenmill run` flags generated from the JobConfig model: one flag per field, named after it
(`unit_bytes` -> `--unit-bytes`), typed and described by the model, so the CLI cannot drift from
the config file. A flag left out keeps the YAML file's value (or the model's default)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import click
from pydantic.fields import FieldInfo

from jobs.common import parse_pairs, parse_storage_options
from pipeline.tokenize.config import JobConfig, load_config
from pipeline.tokenize.inputs import format_names

# Fields whose flag is not the generic one.
SPECIAL = {"storage_options", "input", "format", "tokenizer"}
METAVARS = {"output": "URL", "ray_address": "ADDRESS", "source_tokenizer": "KIND:PATH"}


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; other annotations as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _option(name: str, field: FieldInfo) -> Callable[[Callable], Callable]:
    flag = "--" + name.replace("_", "-")
    kind = _base_type(field.annotation)
    help_text = field.description or ""
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if typing.get_origin(kind) is Literal:
        choice = click.Choice([str(v) for v in typing.get_args(kind)])
        return click.option(flag, name, type=choice, default=None, help=help_text)
    click_type = {int: int, float: float, str: str}.get(kind)
    if click_type is None:
        raise TypeError(f"JobConfig.{name}: no CLI flag for type {field.annotation}")
    return click.option(
        flag, name, type=click_type, default=None, metavar=METAVARS.get(name), help=help_text
    )


def job_options(func: Callable) -> Callable:
    """Decorate a command with a flag for every JobConfig field, plus --config, --storage-option
    and --tokenizer-option."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="YAML job config (flags win)",
        ),
        click.option(
            "--input",
            "input",
            multiple=True,
            metavar="GLOB",
            help=JobConfig.model_fields["input"].description,
        ),
        click.option(
            "--tokenizer", metavar="KIND:PATH", help=JobConfig.model_fields["tokenizer"].description
        ),
        click.option(
            "--tokenizer-option",
            "tokenizer_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="tokenizer plugin option (repeatable), e.g. use_tiktoken=false",
        ),
        click.option(
            "--format",
            "format",
            type=click.Choice(["auto", "chat", *format_names()]),
            default=None,
            help=JobConfig.model_fields["format"].description,
        ),
        click.option(
            "--storage-option",
            "storage_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="fsspec storage option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000",
        ),
    ]
    options += [
        _option(name, field)
        for name, field in JobConfig.model_fields.items()
        if name not in SPECIAL
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(
    config_file: str | None,
    storage_option: tuple[str, ...] = (),
    tokenizer_option: tuple[str, ...] = (),
    **flags: Any,
) -> JobConfig:
    """A validated JobConfig from the YAML file and the flags that were given (flags win)."""
    overrides = {k: v for k, v in flags.items() if v is not None and v != ()}
    if "input" in overrides:
        overrides["input"] = list(overrides["input"])
    if storage_option:  # merged into the file's, key by key (as --tokenizer-option is: one flag
        # replaced them all, an S3 endpoint and credentials with them)
        given = parse_storage_options(storage_option)
        file_options = load_config(config_file, **overrides).storage_options if config_file else {}
        overrides["storage_options"] = {**file_options, **given}
    if tokenizer_option:
        base = load_config(config_file, **overrides).tokenizer
        options = {**base.options, **parse_pairs(tokenizer_option, "--tokenizer-option")}
        overrides["tokenizer"] = {"kind": base.kind, "path": base.path, "options": options}
    return load_config(config_file, **overrides)
