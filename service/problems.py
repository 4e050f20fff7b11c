"""Error answers: every one is a `Problem`, `{"detail": "<what went wrong and what to do>"}`.

FastAPI's own answers differ from that in three ways, each mended here: a validation error
lists its errors (`detail` is an array), an HTTP error may carry any JSON as `detail`, and a
405 names the methods of only the first route whose path matched, though several routes may
share a path (`GET` and `DELETE /v1/references/{reference_id}`). The OpenAPI document says the
same: every error response of every operation is a JSON `Problem`, whatever the route's own
media type (an HTML page's errors are JSON too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.metrics import Metrics
from service.schemas import Problem

PROBLEM_REF = "#/components/schemas/Problem"
# FastAPI's schemas of its list-shaped validation errors, which this service never sends.
UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")


def add_problem_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Answer HTTP and validation errors as `Problem`s, and 405 with every allowed method."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.error("invalid_request")
        return JSONResponse({"detail": _describe(exc.errors())}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route whose path template matches this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


def _describe(errors: Any) -> str:
    """One line per invalid field, e.g. `query.offset: Input should be ...`."""
    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = error.get("msg", "invalid")
        lines.append(f"{where}: {message}" if where else str(message))
    return "; ".join(lines) or "invalid request"


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document show every error response as a JSON `Problem`."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in ("4", "5"):
                        response["content"] = {
                            "application/json": {"schema": {"$ref": PROBLEM_REF}}
                        }
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in UNUSED_SCHEMAS:
            schemas.pop(name, None)
        schemas.setdefault("Problem", Problem.model_json_schema(ref_template=PROBLEM_REF))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
