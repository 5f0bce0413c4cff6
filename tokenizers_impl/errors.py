"""The root of tokenmill's domain errors (a leaf module: it imports nothing from the project).

`pipeline` builds on the tokenizer plugins, never the other way round, so the common base class
lives here and `pipeline.errors` re-exports it.
"""

from __future__ import annotations


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
