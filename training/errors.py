"""User-facing errors: raised for bad input, printed by the CLI as one clear line (no traceback)."""


class DistillError(Exception):
    """An error the user can fix: the message names the file or option at fault and the fix."""
