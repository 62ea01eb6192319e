"""Per-request stage timings: the ``Server-Timing`` header and the per-stage Prometheus histogram."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.metrics import STAGE_LATENCY


class StageTimer:
    """Collects (stage, seconds) in order; ``header()`` renders ``name;dur=ms`` entries (W3C Server-Timing)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._created = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + max(0.0, seconds)

    def header(self) -> str:
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.stages.items()]
        parts.append(f"total;dur={(time.perf_counter() - self._created) * 1000:.2f}")
        return ", ".join(parts)

    def observe(self, endpoint: str, model: str, provider: str) -> None:
        for name, seconds in self.stages.items():
            STAGE_LATENCY.labels(endpoint, name, model, provider).observe(seconds)
