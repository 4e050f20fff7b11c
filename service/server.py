"""`imgmatch serve`: uvicorn over the app, with a deadline for a request's headers.

A request's body is bounded inside the app (`service.middleware.BodyGuard`), but the app sees a
request only once its headers are complete, and uvicorn waits for them as long as the client
keeps sending: a byte now and then keeps a connection open for ever. The protocol here gives
the request line and headers `header_timeout_s` from the moment the connection is ready for a
request (opened, or done with the previous answer); a client still sending them then gets 408
and the connection closes. An idle keep-alive connection is closed earlier by uvicorn's own
keep-alive timeout, without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import ServiceSettings


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers come too slowly."""

    header_timeout_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_request_state()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _follow_request_state(self) -> None:
        """Run the deadline while the connection waits for a request's headers, only then."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._expire)
        elif not waiting:
            self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial_request, _ = self.conn.trailing_data
        if partial_request and self.conn.our_state is h11.IDLE:
            self.transport.write(_request_timeout(self.header_timeout_s))
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def _request_timeout(timeout_s: float) -> bytes:
    """A complete 408 answer, written directly: h11 answers only requests it has parsed."""
    body = json.dumps({"detail": f"request headers did not arrive within {timeout_s:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def protocol_for(settings: ServiceSettings) -> type[HeaderDeadlineProtocol]:
    """The protocol class with this service's header deadline (uvicorn takes a class)."""
    return type(
        "ServiceProtocol",
        (HeaderDeadlineProtocol,),
        {"header_timeout_s": settings.header_timeout_s},
    )


def serve(app: FastAPI, settings: ServiceSettings, host: str, port: int) -> None:
    """Serve `app` on host:port until interrupted."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol_for(settings),
        log_config=None,
        access_log=False,
    )
