"""API keys: who may write references, and who may check when checks need a key.

FastAPI reads and parses a request's body before it solves the route's dependencies, so a key
declared only as a dependency is checked after the whole upload has been received and spooled.
`KeyFirstRoute` runs the same key checks on the headers alone, before the body is touched; the
dependencies stay declared as usual, which is what documents the key in the OpenAPI schema.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from service.state import ServiceState

API_KEY_HEADER = "X-API-Key"

api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="IMGMATCH_API_KEY for writes; IMGMATCH_CHECK_API_KEY, if set, for checks.",
)


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]
ApiKey = Annotated[str | None, Security(api_key_scheme)]


def _key_matches(given: str, *expected: str) -> bool:
    # Constant-time, so response timing does not reveal how much of a guess was right.
    return any(secrets.compare_digest(given.encode(), key.encode()) for key in expected)


def _missing_key() -> HTTPException:
    return HTTPException(401, f"missing {API_KEY_HEADER} header", {"WWW-Authenticate": "ApiKey"})


def require_write_key(state: State, key: ApiKey) -> None:
    configured = state.settings.api_key
    if configured is None:
        raise HTTPException(
            403,
            "reference writes are disabled: start the service with IMGMATCH_API_KEY set, then "
            f"send that key in the {API_KEY_HEADER} header",
        )
    if not key:
        raise _missing_key()
    if not _key_matches(key, configured.get_secret_value()):
        raise HTTPException(403, f"wrong {API_KEY_HEADER}")


def require_check_key(state: State, key: ApiKey) -> None:
    settings = state.settings
    if settings.check_api_key is None:
        return
    keys = [settings.check_api_key.get_secret_value()]
    if settings.api_key is not None:
        keys.append(settings.api_key.get_secret_value())
    if not key:
        raise _missing_key()
    if not _key_matches(key, *keys):
        raise HTTPException(403, f"wrong {API_KEY_HEADER}")


KeyCheck = Callable[[ServiceState, str | None], None]
# The dependencies that need nothing but the headers, so they can run before the body is read.
KEY_CHECKS: tuple[KeyCheck, ...] = (require_write_key, require_check_key)


class KeyFirstRoute(APIRoute):
    """A route that refuses a missing or wrong key before it reads the request body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [d.dependency for d in self.dependencies if d.dependency in KEY_CHECKS]
        if not checks:
            return handler

        async def key_first(request: Request) -> Response:
            key = request.headers.get(API_KEY_HEADER)
            for check in checks:
                check(get_state(request), key)
            return await handler(request)

        return key_first
