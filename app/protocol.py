"""uvicorn's h11 HTTP protocol, answering a request it cannot parse with the service's JSON error body.

Malformed framing (``Content-Length: abc``, Content-Length beside ``Transfer-Encoding: chunked``, a broken
request line or header) is refused by the protocol layer before the application sees anything: no route,
middleware or metric runs. uvicorn's own answer is a plain-text 400; this subclass keeps its behaviour
(400, connection closed, a warning in the log) and only replaces the body with ``{"error": "bad_request",
"detail": ...}``, so every 4xx the service sends is JSON. ``distill serve`` passes it to uvicorn as ``http``.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DETAIL = (
    "the request's HTTP framing is malformed (request line, headers, Content-Length or chunked encoding); "
    "nothing was processed; send a well-formed HTTP/1.1 request"
)


class JSONErrorH11Protocol(H11Protocol):
    """H11Protocol whose 400 for an unparseable request carries the service's JSON error body."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": DETAIL}).encode("ascii")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
