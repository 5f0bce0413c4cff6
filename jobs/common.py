"""What every command shares: the error policy, KEY=VALUE option parsing, the storage-option flag,
and printing a run summary."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.errors import ConfigError, TokenmillError
from schemas.records import RunSummary

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GLOB = str(REPO_ROOT / "data" / "sample" / "*.jsonl")

# Exit codes: 0 done, 1 a failure (verify found problems, a bug), 2 a user error, 3 a run that
# stopped before its output was complete (interrupted, a unit failed, the lease was lost).
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    click.echo(f"tokenmill: error: {message}", err=True)
    sys.exit(code)


def reports_user_errors(func: F) -> F:
    """A command whose domain errors (TokenmillError) print as one line and exit with the error's
    code (2, or 3 for an incomplete run); Ctrl-C and SIGTERM end it quietly with one line and exit
    3; anything else is a bug and raises with its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TokenmillError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; committed units are kept: rerun the same command to resume", 3)

    return wrapper  # type: ignore[return-value]


def stop_quietly_on_sigterm() -> None:
    """SIGTERM ends a long command like Ctrl-C: cleanly, with one line, exit 3; both are held
    back while the command imports and loads what it needs or starts Ray (pipeline/interrupts.py:
    a Ctrl-C inside an extension module's import was seen to be swallowed, the run going on with
    another encoder, or to end in a Rust panic)."""
    from pipeline.interrupts import interrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def parse_pairs(pairs: tuple[str, ...] | list[str], flag: str) -> dict[str, Any]:
    """`KEY=VALUE` pairs as a dict; a value is JSON when it parses (1, true, [1, 2], {"a": 1}),
    else the string itself."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r} must look like KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def parse_storage_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return parse_pairs(pairs, "--storage-option")


def storage_option_flag(func: F) -> F:
    return click.option(
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="fsspec storage option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000",
    )(func)


def print_run_summary(summary: RunSummary) -> None:
    click.echo(
        f"committed {summary.units_committed}/{summary.units_planned} units "
        f"({summary.units_skipped} resumed): {summary.documents} documents, "
        f"{summary.tokens} tokens, {summary.rejected} rejected; this run "
        f"{summary.mb_per_s} MB/s, {summary.tokens_per_s:.0f} tokens/s with "
        f"{summary.actors} actors, encoder {summary.encoder} {summary.encoder_version}".rstrip(),
        err=True,
    )
    for fallback in summary.encoder_fallbacks:
        click.echo(f"encoder passed over: {fallback}", err=True)
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"shards: {summary.output}/shards  ledger: {summary.output}/ledger  "
        f"summary: {summary.output}/{summary.summary_path}",
        err=True,
    )
    data = {k: v for k, v in summary.to_json().items() if k != "run_nonce"}
    click.echo(json.dumps(data, sort_keys=True))


def use_plugins(modules: tuple[str, ...]) -> None:
    """`tokenmill --plugin MODULE ...`: the modules (names, or `.py` files) imported now (an
    import error is one line, exit 2) and added to TOKENMILL_PLUGINS (files as absolute paths), so that the run's helper processes and the workers of
    a local Ray cluster, which inherit this environment, import them too."""
    import os

    from tokenizers_impl.base import PLUGINS_ENV, import_plugins

    given = [os.path.abspath(m) if m.endswith(".py") else m for m in modules]
    names = [*filter(None, os.environ.get(PLUGINS_ENV, "").split(",")), *given]
    os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys(n.strip() for n in names))
    try:
        import_plugins(",".join(given))
    except TokenmillError as exc:
        fail(str(exc), exc.exit_code)
