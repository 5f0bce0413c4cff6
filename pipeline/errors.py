"""Every domain error of tokenmill, on one base class.

`TokenmillError` means "the user can act on this": a bad config, input, output, tokenizer file or
request. The CLI prints such an error as one line and exits 2; anything else is a bug and raises
with its traceback. Each class keeps the standard base it had (ValueError, OSError, RuntimeError),
so code that caught those still does."""

from __future__ import annotations

from tokenizers_impl.errors import TokenizerError, TokenmillError


class ConfigError(TokenmillError, ValueError):
    """A bad job configuration; the message names the field."""


class InputError(TokenmillError, ValueError):
    """The inputs cannot be planned: a glob matches nothing, a path is missing, a format is unknown."""


class StorageError(TokenmillError, OSError):
    """A storage operation failed for good (after retries, or at once for a permanent error)."""


class LedgerError(TokenmillError, RuntimeError):
    """The output's ledger or manifest disagrees with the job (e.g. written with another config)."""


class LeaseError(TokenmillError, RuntimeError):
    """Another run holds the output's lease (or this run lost it)."""


class LeaseLost(LeaseError):
    """This run's lease was taken over (it expired, or another driver took it): the run stops
    committing at once; what it committed is kept, the rest is for whoever holds the lease."""

    exit_code = 3


class InputsChanged(InputError):
    """Inputs changed or disappeared since their units were committed, and the job was asked to
    refuse rather than redo them; the message names the files."""


class UnitFailed(TokenmillError, RuntimeError):
    """A work unit raised (after the storage retries); names the unit and the cause. Committed
    units are kept: the run is incomplete (exit 3) and a rerun resumes."""

    exit_code = 3


def unit_failed(unit: object, cause: BaseException) -> UnitFailed:
    """UnitFailed naming the unit (url, its bytes or Parquet row group) and the cause; committed
    units are kept."""
    if isinstance(cause, UnitFailed):  # (it names its unit already)
        return cause
    url, start, end = (getattr(unit, k, "?") for k in ("url", "start", "end"))
    if getattr(unit, "fmt", "") == "parquet":
        where = (
            f"{url} row group {start}"
            if end == start + 1
            else f"{url} row groups {start}-{end - 1}"
        )
    else:
        where = f"{url} bytes {start}..{end}"
    return UnitFailed(
        f"unit {getattr(unit, 'unit_id', '?')} ({where}) failed: {type(cause).__name__}: "
        f"{cause}. Committed units are kept; rerun the same command to resume"
    )


def local_unit_error(unit: object, exc: BaseException) -> BaseException:
    """What a run in this process raises for a unit that raised `exc`: an OSError that is not
    already a tokenmill error (an input removed or made unreadable while the run read it, or the
    helper process running the unit killed) as UnitFailed naming the unit, as a Ray actor's
    failure is; anything else as it is."""
    if isinstance(exc, OSError) and not isinstance(exc, TokenmillError):
        return unit_failed(unit, exc)
    return exc


class InputReadFailed(UnitFailed):
    """Reading an input from its storage failed (after the storage retries): not damage in the
    file, so nothing of the unit is committed (no reject stands for the rest of the file) and a
    rerun reads it again (exit 3)."""


class VerificationFailed(TokenmillError, RuntimeError):
    """A fast encoder's ids differ from the tokenizer's reference on a sampled document: the unit
    is not committed (it names the document, the first differing token and the encoder)."""

    exit_code = 3


class RunIncomplete(TokenmillError, RuntimeError):
    """A run ended without every planned unit committed (exit 3); a rerun resumes."""

    exit_code = 3


class RunInterrupted(TokenmillError, RuntimeError):
    """A run was stopped by a signal (SIGINT/SIGTERM) (exit 3); a rerun resumes."""

    exit_code = 3


class LoaderError(TokenmillError, RuntimeError):
    """The loader cannot serve what was asked (no committed shards, a resume state that does not
    match the dataset, a bad option)."""


class AnalyticsError(TokenmillError, ValueError):
    """A report cannot be built from what was given (no outputs, an unknown baseline, bad SQL)."""


class ExportError(TokenmillError, RuntimeError):
    """An export cannot be made as asked: nothing committed to export, a destination that holds
    something else, an option the output or format cannot honour (e.g. --append-eod without an EOS
    id, ids that do not fit the chosen dtype)."""


__all__ = [
    "AnalyticsError",
    "ConfigError",
    "ExportError",
    "InputError",
    "InputsChanged",
    "LeaseError",
    "LeaseLost",
    "LedgerError",
    "LoaderError",
    "RunIncomplete",
    "RunInterrupted",
    "StorageError",
    "TokenizerError",
    "TokenmillError",
    "UnitFailed",
    "VerificationFailed",
]
