"""The AutolabelError hierarchy.

Library code raises these (never bare exceptions for user mistakes) so that the CLI can print a
single line ``Error: <what is wrong>. <how to fix it>`` and exit non-zero. Every message must say
what to do next, not just what broke.
"""

from __future__ import annotations


class AutolabelError(Exception):
    """Base class: a problem the user can fix; the message says how."""

    exit_code: int = 1


class ConfigError(AutolabelError):
    """Bad or unknown configuration keys or values (file, env var or flag)."""

    exit_code = 2


class InputError(AutolabelError):
    """Bad user input on the command line (a malformed range, a missing file, …)."""

    exit_code = 2


class DatabaseError(AutolabelError):
    """The database cannot be opened, migrated or is in an unexpected state."""


class ModelError(AutolabelError):
    """The subject language model cannot be loaded or run."""


class SAEError(AutolabelError):
    """The sparse autoencoder cannot be loaded, does not fit the model, or failed to train."""


class CorpusError(AutolabelError):
    """A text source cannot be read or yields no text."""


class CollectionError(AutolabelError):
    """Example collection cannot run with the given settings."""


class LLMError(AutolabelError):
    """An LLM backend is unreachable, misconfigured, or keeps failing."""


class BudgetExceeded(AutolabelError):
    """A cost, token or time budget ran out; work stopped cleanly and can resume."""

    exit_code = 3


class NotFoundError(AutolabelError):
    """A named object (SAE, feature, run) is not in the database."""
