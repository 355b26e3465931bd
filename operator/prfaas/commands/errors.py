class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2, never a traceback."""
