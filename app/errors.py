"""Errors the service answers with: an HTTP status plus a JSON body ``{"error": code, "detail": message}``."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request the service refuses, with the status, a stable machine-readable code and a human reason."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
