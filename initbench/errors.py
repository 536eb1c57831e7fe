"""The one exception type for user mistakes; the CLI prints it as one line and exits 2."""


class InitbenchError(Exception):
    """Bad input from the user: an unknown name, a malformed spec, missing data, ..."""
