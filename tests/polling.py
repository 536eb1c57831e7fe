"""Watching a results folder while a sweep writes into it."""

from pathlib import Path


def finished(out: Path) -> list[Path]:
    """The records complete so far. A run folder renamed into place while the folder is scanned (its hidden
    `.incoming-<pid>` name gone between listing and reading) makes the scan start again."""
    while True:
        try:
            return list(out.rglob("summary.json"))
        except FileNotFoundError:
            continue
