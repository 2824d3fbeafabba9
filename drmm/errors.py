"""The one exception type for user-facing problems: the CLI prints it as one line, exit code 2."""


class DRMMError(Exception):
    """A problem the user can fix (bad path, bad checksum, bad argument); the message says how."""
