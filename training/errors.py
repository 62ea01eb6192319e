"""Compatibility name: the user-facing errors live in :mod:`core.errors`."""

from core.errors import DistillError, file_errors

__all__ = ["DistillError", "file_errors"]
