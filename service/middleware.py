"""Pure ASGI middleware: the body guard, the upload bound, and request metrics with access logs.

All are plain ASGI rather than Starlette's `BaseHTTPMiddleware` so that they see the body as it
streams in (before multipart parsing spools anything to disk) and add no task per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

log = logging.getLogger("imgmatch.service")


class BodyGuard:
    """Refuse a request body that is too large (413) or too slow (408), as it streams in.

    A declared Content-Length over `max_bytes` is refused before one byte is read. A chunked
    body is counted as it arrives, and a body of either kind must arrive whole within
    `read_timeout_s` of the request's headers. At the first byte over the cap, or at the
    deadline, the error is sent and the application is told the client went away, so it stops
    parsing and deletes whatever it had spooled. Any answer sent before the body was read whole
    closes the connection: the rest of the body is never read, not even to be discarded.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, read_timeout_s: float, metrics: Metrics
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, 413, "body_too_large", self._too_large())
            return
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        received = 0
        complete = not has_body(scope)
        refused = False
        started = False

        async def refuse(status: int, kind: str, detail: str) -> Message:
            nonlocal refused
            refused = True
            if not started:
                await self._refuse(send, status, kind, detail)
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if refused:
                return {"type": "http.disconnect"}
            if complete:
                # Only a disconnect is left to wait for, which takes as long as it takes.
                return await receive()
            remaining_s = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining_s, 0))
            except asyncio.TimeoutError:
                return await refuse(408, "body_timeout", self._too_slow())
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return await refuse(413, "body_too_large", self._too_large())
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # After a refusal the application's own answer (to a "disconnect") must not follow.
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                if not complete:
                    headers = [*message.get("headers", ()), CONNECTION_CLOSE]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    def _too_large(self) -> str:
        return f"request body is over the {self.max_bytes:,}-byte limit"

    def _too_slow(self) -> str:
        return f"request body did not arrive within {self.read_timeout_s:g} s; send it faster"

    async def _refuse(self, send: Send, status: int, kind: str, detail: str) -> None:
        self.metrics.error(kind)
        # The rest of the body will not be read: the connection cannot be reused.
        await send_problem(send, status, detail, [CONNECTION_CLOSE])


class UploadSlots:
    """Handle at most `max_uploads` requests with a body at once; answer more with 503.

    Each upload holds a connection and, once parsed, its spooled parts until it is answered;
    this bounds how many do so however many clients send at once. A refused request's body is
    never read, and Retry-After tells the client when to try again.
    """

    RETRY_AFTER_S = 1

    def __init__(self, app: ASGIApp, max_uploads: int, metrics: Metrics) -> None:
        self.app = app
        self.max_uploads = max_uploads
        self.metrics = metrics
        # Touched only on the event loop thread, between awaits: no lock needed.
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_uploads:
            self.metrics.error("too_many_uploads")
            detail = (
                f"{self.max_uploads} uploads are already in progress; "
                f"retry in {self.RETRY_AFTER_S} s"
            )
            headers = [(b"retry-after", str(self.RETRY_AFTER_S).encode()), CONNECTION_CLOSE]
            await send_problem(send, 503, detail, headers)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


CONNECTION_CLOSE = (b"connection", b"close")


async def send_problem(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send a complete `{"detail": ...}` answer, as every error of the service is shaped."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
