"""The one exception type for user mistakes; the CLI prints it as one line and exits 2."""

import difflib
from collections.abc import Iterable


class InitbenchError(Exception):
    """Bad input from the user: an unknown name, a malformed spec, missing data, ..."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM arrived: raised wherever the process is, so that it stops like Ctrl-C does (records stay whole)."""


def raise_stop(exc: BaseException) -> None:
    """Raise the Ctrl-C or SIGTERM that `exc` was raised while handling, if any. A stop can arrive at any line, and a
    library's clean-up can fail as the stop passes through it (vmap's, when the stop lands between its entering and
    leaving a level) and replace it with an error of its own: a handler that turns errors into results (a failed run,
    a group trained one by one) calls this first, so that a stop is never taken for a result."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt | Terminated):
            raise cause
        seen.add(id(cause))
        cause = cause.__context__


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
