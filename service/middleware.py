"""Pure ASGI middleware: the request body cap, and request metrics with access logs.

Both are plain ASGI rather than Starlette's `BaseHTTPMiddleware` so that they see the body as it
streams in (before multipart parsing spools anything to disk) and add no task per request.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

log = logging.getLogger("imgmatch.service")


class BodySizeLimit:
    """Answer 413 to any request whose body is over `max_bytes`.

    A declared Content-Length over the cap is refused before one byte is read. A chunked body is
    counted as it arrives; at the first byte over the cap the 413 is sent, and the application
    is told the client went away, so it stops parsing and drops whatever it had buffered. Any
    answer sent before the body was read whole closes the connection: the rest of the body is
    never read, not even to be discarded.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        complete = not has_body(scope)
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused, complete
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # After the 413 the application's own answer (to a "disconnect") must not follow.
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                if not complete:
                    headers = [*message.get("headers", ()), CONNECTION_CLOSE]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Send) -> None:
        self.metrics.error("body_too_large")
        body = json.dumps(
            {"detail": f"request body is over the {self.max_bytes:,}-byte limit"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body will not be read: the connection cannot be reused.
                    CONNECTION_CLOSE,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


CONNECTION_CLOSE = (b"connection", b"close")


def has_body(scope: Scope) -> bool:
    """Whether the request declares a body: a positive Content-Length, or a transfer coding."""
    if any(name == b"transfer-encoding" for name, _ in scope.get("headers", ())):
        return True
    return bool(_content_length(scope))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestMetrics:
    """Count requests by route template and status, and log one line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            route = _route_template(scope)
            self.metrics.request(scope["method"], route, status)
            if status >= 500:
                self.metrics.error(f"http_{status}")
            log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope.get("path", ""),
                status,
                elapsed_ms,
                extra={
                    "method": scope["method"],
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed_ms, 2),
                },
            )


def _route_template(scope: Scope) -> str:
    # Label by template (/v1/references/{reference_id}), never by raw path: bounded cardinality.
    route: Any = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
