"""Clients that send without a key, slowly, or many at once, against a real `imgmatch serve` on
a loopback port: each is answered and let go in bounded time, holding no spooled upload."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress

import numpy as np
import pytest
from conftest import LiveServer
from service_helpers import (
    closed_by_server,
    image_part_start,
    jpeg_bytes,
    multipart_head,
    open_files_under,
    random_scene,
    read_answer,
)

pytestmark = pytest.mark.slow

DECLARED_BYTES = 19_000_000
# Past the multipart parser's 1 MiB in-memory threshold: the part is spooled to a file.
SPOOLED_BYTES = 2 * 1024 * 1024
SLOW_CLIENTS = 20


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


def test_headers_sent_slowly_get_408_and_the_connection_closes(
    start_live_server: Callable[..., LiveServer],
) -> None:
    server = start_live_server(header_timeout_s="1")
    with connections(server, SLOW_CLIENTS + 1) as socks:
        *slow, idle = socks
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One header byte from each client every 0.25 s: never idle, never done.
        started = time.monotonic()
        for _ in range(12):
            for sock in slow:
                with suppress(OSError):
                    sock.sendall(b"X")
            time.sleep(0.25)
        statuses = [read_answer(sock, timeout_s=0.5)[0] for sock in slow]
        assert statuses == [408] * SLOW_CLIENTS
        assert all(closed_by_server(sock, timeout_s=1) for sock in slow)
        # A connection that never sends a byte is closed too, without an answer.
        assert closed_by_server(idle, timeout_s=1)
    print(f"{SLOW_CLIENTS} slow-header clients closed within {time.monotonic() - started:.1f} s")
    with connections(server, 1) as (sock,):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock, timeout_s=5)[0] == 200


@pytest.mark.parametrize("stall", ["stalled", "trickling"])
def test_a_body_sent_slowly_gets_408_and_its_spool_is_deleted(
    start_live_server: Callable[..., LiveServer], stall: str
) -> None:
    server = start_live_server(body_timeout_s="2")
    with connections(server, 1) as (sock,):
        sock.sendall(multipart_head("/v1/checks", DECLARED_BYTES))
        sock.sendall(image_part_start() + bytes(SPOOLED_BYTES))
        started = time.monotonic()
        status = 0
        while status == 0 and time.monotonic() - started < 8:
            if stall == "trickling":
                sock.sendall(b"\x00")
            status = read_answer(sock, timeout_s=0.25)[0]
        assert status == 408
        assert time.monotonic() - started < 4
        assert closed_by_server(sock, timeout_s=5)
    deadline = time.monotonic() + 5
    while open_files_under(server.process.pid, server.tmpdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_files_under(server.process.pid, server.tmpdir) == []


def test_uploads_beyond_the_bound_get_503_until_a_slot_is_free(
    start_live_server: Callable[..., LiveServer], rng: np.random.Generator
) -> None:
    server = start_live_server(max_uploads="2")
    image = jpeg_bytes(random_scene(rng))
    body = image_part_start()[:-3] + image + b"\r\n--b--\r\n"
    check = multipart_head("/v1/checks", len(body)) + body
    with connections(server, 2) as stalled:
        for sock in stalled:
            sock.sendall(multipart_head("/v1/checks", DECLARED_BYTES) + image_part_start())
        time.sleep(0.5)
        with connections(server, 2) as (third, reader):
            third.sendall(check)
            status, headers, _ = read_answer(third, timeout_s=5)
            assert status == 503 and headers.get("retry-after") == "1"
            # Requests without a body are not uploads: they are served as usual.
            reader.sendall(b"GET /v1/references HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_answer(reader, timeout_s=5)[0] == 200
    # The stalled clients went away: their slots are free again.
    deadline = time.monotonic() + 10
    status = 0
    while status != 200 and time.monotonic() < deadline:
        with connections(server, 1) as (sock,):
            sock.sendall(check)
            status = read_answer(sock, timeout_s=30)[0]
        if status == 503:
            time.sleep(0.2)
    assert status == 200
