"""Transitional alias: the engine layer moved to the top-level package :mod:`engines` (issue 11).

Only for processes started before the move (a long ``distill toyfaces recipe`` whose already-imported
``training.export``/``training.evaluate`` still run ``from app.engines.measure import ...`` when they reach
those stages; their editable-install finder predates ``engines``, hence the path fallback). Nothing in the
tree imports this; delete the folder once no such process runs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

try:
    import engines
except ModuleNotFoundError:  # a process whose install finder was loaded before engines/ existed
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    import engines

for _name in ("base", "cpu", "measure", "ort", "ov", "select"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"engines.{_name}")
__path__: list[str] = []
__all__ = ["engines"]
