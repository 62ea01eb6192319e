"""Compatibility name: atomic writes live in :mod:`core.atomic`."""

from core.atomic import (
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]
