"""Library versions a command ran with (recorded in what it writes)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def versions(*modules: str) -> dict[str, str]:
    """Python, each importable module's ``__version__`` (in order) and this package's version."""
    import importlib

    out = {"python": platform.python_version()}
    for name in modules:
        out[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
    try:
        out["distill"] = version("stylegan2-distill")
    except PackageNotFoundError:
        out["distill"] = "unknown"
    return out
