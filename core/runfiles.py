"""Names inside run and dataset folders, and the JSON-lines records written there.

A training run (``distill train``, the toy teacher)::

    RUN/run.json                  options, progress, last metrics
    RUN/metrics.jsonl             one JSON object a line, appended while training
    RUN/checkpoints/latest.pt     the checkpoint a resume starts from (previous.pt: the one before)
    RUN/samples/                  sample grids

A pair dataset (``distill pairs``): ``manifest.jsonl`` (one row a pair) and ``dataset.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text

RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT = f"{CHECKPOINTS}/latest.pt"
PREVIOUS_CHECKPOINT = f"{CHECKPOINTS}/previous.pt"
SAMPLES = "samples"
PAIRS_MANIFEST = "manifest.jsonl"
PAIRS_METADATA = "dataset.json"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping blank and torn lines (a writer killed mid-line)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one JSON object as a line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite ``path`` (atomically) with the rows ``keep`` accepts; torn lines are dropped. No file: nothing."""
    if not Path(path).is_file():
        return
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))
