"""Malformed HTTP framing, refused by the protocol layer before the application runs, still
gets the service's JSON error body (``distill serve`` runs uvicorn with :mod:`app.protocol`)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.app_helpers import make_entry, serve

MALFORMED = {  # request -> a word of the JSON detail
    "content-length-not-a-number": (
        b"POST /transform HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        "malformed",
    ),
    "content-length-with-chunked": (
        b"POST /transform HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding",
    ),
    "bad-chunk-size": (
        b"POST /transform HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "malformed",
    ),
    "two-content-lengths": (
        b"POST /transform HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        "malformed",
    ),
    "broken-request-line": (b"HELLO THERE\r\n\r\n", "malformed"),
    "header-without-colon": (b"GET /healthz HTTP/1.1\r\nHost: t\r\nnonsense\r\n\r\n", "malformed"),
}


def raw_request(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    zoo = tmp_path_factory.mktemp("zoo")
    make_entry(zoo, "tiny", teacher=False, samples=False)
    with serve(zoo, env={"DISTILL_LEGACY_WORKERS": "0"}) as (base, _):
        yield base


@pytest.mark.parametrize(("request_bytes", "word"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_framing_gets_a_json_400_and_a_closed_connection(url, request_bytes, word):
    status, headers, body = raw_request(url, request_bytes)  # reads until the server closes
    assert (
        status == 400 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    )
    error = json.loads(body)
    assert error["error"] == "bad_request" and word in error["detail"]
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # and the service carries on
