"""The one exception type for user mistakes; the CLI prints it as one line and exits 2."""

import difflib
from collections.abc import Iterable


class InitbenchError(Exception):
    """Bad input from the user: an unknown name, a malformed spec, missing data, ..."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM arrived: raised wherever the process is, so that it stops like Ctrl-C does (records stay whole)."""


class RunBusy(InitbenchError):
    """Another process holds the run's lock: nothing was touched."""

    exit_code = 1


def unknown_name(what: str, name: str, valid: Iterable[str], suggestions: int = 2,
                 ordered: bool = False) -> InitbenchError:
    """The error for a name that is not registered: close matches first, then every valid choice (sorted, unless
    `ordered`: a short list in its own order)."""
    valid = list(valid) if ordered else sorted(valid)
    close = difflib.get_close_matches(name, valid, n=suggestions, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return InitbenchError(f"unknown {what} '{name}'; {hint}valid: {', '.join(valid)}")
