"""The root of tokenmill's domain errors (a leaf module: it imports nothing from the project).

`pipeline` builds on the tokenizer plugins, never the other way round, so the common base class
lives here and `pipeline.errors` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TokenmillError(Exception):
    """Base of every tokenmill domain error: a bad input, file, config or request that the caller
    can report to the user (as opposed to a bug). Catch this to handle all of them at once.

    Subclasses keep a second, standard base where one fits (`ValueError`, `OSError`, ...), so code
    written against the standard exception keeps working.

    `exit_code` is what the command line exits with: 2 for a user error (the default), 3 for a
    run that stopped before its output was complete (rerun to resume).
    """

    exit_code: int = 2


class TokenizerError(TokenmillError, ValueError):
    """A tokenizer file or spec is missing, malformed or untrusted-looking, or a plugin breaks the
    plugin contract (registration)."""


def naming_bad_text(encode: Any, texts: Sequence[str]) -> Any:
    """encode(texts); an encoder's TypeError or UnicodeEncodeError becomes the TokenizerError
    naming the text it could not take (a lone surrogate), or is re-raised as it was."""
    try:
        return encode(texts)
    except (TypeError, UnicodeEncodeError) as exc:
        bad = unencodable(texts)
        if bad is None:
            raise  # (not a text it could name: the encoder's own error, as it was)
        raise bad from exc


def unencodable(texts: Sequence[str]) -> TokenizerError | None:
    """The error for a batch an encoder refused: a text with a lone surrogate (not UTF-8; the
    encoders say "expected str or bytes, got str") named by its index and character."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as bad:
            return TokenizerError(
                f"text {i} has a lone surrogate at character {bad.start} (not encodable as UTF-8)"
            )
        except AttributeError:
            return TokenizerError(f"text {i} is {type(text).__name__}, not str")
    return None
