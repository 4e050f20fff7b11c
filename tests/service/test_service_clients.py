"""Clients that send without a key, against a real `imgmatch serve` on a loopback port: each is
answered and let go in bounded time, holding no spooled upload."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from conftest import LiveServer
from service_helpers import (
    closed_by_server,
    image_part_start,
    multipart_head,
    open_files_under,
    read_answer,
)

pytestmark = pytest.mark.slow

DECLARED_BYTES = 19_000_000


@contextmanager
def connections(server: LiveServer, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            for _ in range(count)
        ]


@pytest.mark.parametrize(
    "path", ["/v1/references", "/v1/checks"], ids=["reference-write", "keyed-check"]
)
def test_a_request_without_its_key_is_refused_before_its_body_is_read(
    start_live_server: Callable[..., LiveServer], path: str
) -> None:
    server = start_live_server(check_api_key="check-key")
    with connections(server, 1) as (sock,):
        # The head announces 19 MB; the client sends 64 KB of it and then waits for an answer.
        sock.sendall(multipart_head(path, DECLARED_BYTES))
        sock.sendall(image_part_start() + bytes(64 * 1024))
        status, headers, body = read_answer(sock, timeout_s=5)
        assert status == 401, "no answer before the whole body was sent"
        assert b"X-API-Key" in body
        # Nothing of the upload was spooled, and the rest of it will not even be read.
        assert open_files_under(server.process.pid, server.tmpdir) == []
        assert headers.get("connection") == "close"
        assert closed_by_server(sock, timeout_s=5)
