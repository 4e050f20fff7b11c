"""The FastAPI application (contract C5): a thin HTTP shell over the imgmatch library.

Routes parse, call one `ServiceState` method, and format. The CPU-bound ones are plain `def`, so
FastAPI runs them in its thread pool and the event loop stays free for /healthz and uploads.
"""

from __future__ import annotations

import json
import logging
import sys
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from fastapi_offline import FastAPIOffline

from imgmatch.catalog import Reference
from imgmatch.errors import CatalogError, InvalidImageError, ReferenceNotFoundError
from service.auth import API_KEY_HEADER, KeyFirstRoute, State, require_check_key, require_write_key
from service.metrics import Metrics
from service.middleware import BodyGuard, RequestMetrics, UploadSlots
from service.problems import add_problem_handlers, document_problems
from service.schemas import (
    CheckResponse,
    CheckResultOut,
    Health,
    Problem,
    Readiness,
    ReferenceOut,
    ReferencePage,
)
from service.settings import ServiceSettings
from service.state import (
    CatalogUnavailableError,
    DuplicateReferenceError,
    NewUpload,
    NoImageError,
    ServiceState,
)

HERE = Path(__file__).parent
# Leading bytes of the formats the decoder accepts: a part that neither declares an image type
# nor starts like one is refused as a whole (415) instead of being reported as a bad image.
IMAGE_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)
MAX_LABEL_CHARS = 200
# Ids and offsets are 64-bit signed integers in the catalog's database: a larger one in a
# request is refused as invalid (422) instead of overflowing there.
MAX_INT64 = 2**63 - 1

ReferenceId = Annotated[int, PathParam(ge=1, le=MAX_INT64)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT64, description="References to skip.")]

templates = Jinja2Templates(directory=HERE / "templates")


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Too many files in one request, or a body that is not valid multipart data.",
        401: f"No {API_KEY_HEADER} header.",
        403: f"Wrong {API_KEY_HEADER}, or writes are disabled (IMGMATCH_API_KEY unset).",
        404: "No such reference, or no image for it.",
        408: "The body did not arrive within IMGMATCH_BODY_TIMEOUT_S.",
        409: "The same image is already a reference.",
        413: "Request body over IMGMATCH_MAX_BODY_BYTES.",
        415: "A part is not an image.",
        422: "Invalid fields, or an image that cannot be used as a reference.",
        503: "The catalog is still loading, failed to load or is damaged (the detail says "
        "why), or (for uploads) IMGMATCH_MAX_UPLOADS requests with a body are already in "
        "progress: retry later.",
    }
    return {code: {"model": Problem, "description": descriptions[code]} for code in codes}


# ----------------------------------------------------------------------- helpers


def _image_parts_encoding() -> dict[str, Any]:
    """Document that `image` parts are images: a part that neither declares an image type nor
    starts like one is refused (415)."""
    encoding = {"image": {"contentType": "image/*"}}
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": encoding}}}}


def _label(upload: UploadFile, position: int) -> str:
    """A printable label for an upload; the client's name is shown, never opened."""
    name = Path(upload.filename or "").name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:MAX_LABEL_CHARS]
    return name or f"upload-{position + 1}"


def _refuse_non_images(state: ServiceState, uploads: Sequence[UploadFile]) -> None:
    refused = []
    for position, upload in enumerate(uploads):
        head = upload.file.read(16)
        upload.file.seek(0)
        declared = (upload.content_type or "").lower()
        looks_like_image = head.startswith(IMAGE_SIGNATURES) or (
            head[:4] == b"RIFF" and head[8:12] == b"WEBP"
        )
        if not declared.startswith("image/") and not looks_like_image:
            refused.append(f"{_label(upload, position)} ({declared or 'no type'})")
    if refused:
        state.metrics.error("unsupported_media_type")
        raise HTTPException(415, f"not an image: {', '.join(refused)}")


# ----------------------------------------------------------------------- the app


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The service over `settings.catalog_dir()`; the catalog opens in the background."""
    settings = settings or ServiceSettings()
    metrics = Metrics()
    service = ServiceState(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.wait_loaded(timeout=60)
        service.close()

    # /docs and /redoc with Swagger UI's and ReDoc's scripts served from the installed
    # fastapi-offline package, not from a CDN: brand-protection machines often have no internet.
    app = FastAPIOffline(
        title="imgmatch",
        summary="Finds listing photos that copy protected jewelry designs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = service
    # Key checks run on the headers, before a route reads its body.
    app.router.route_class = KeyFirstRoute
    # Added last = outermost: metrics see every answer, including the body guard's 408 and 413,
    # and the body guard refuses an oversized body before it takes an upload slot.
    app.add_middleware(UploadSlots, max_uploads=settings.max_uploads, metrics=metrics)
    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.body_timeout_s,
        metrics=metrics,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    add_problem_handlers(app, metrics)
    _add_error_handlers(app, metrics)
    _add_api_routes(app)
    _add_pages(app)
    document_problems(app)
    return app


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def handler(status: int, kind: str) -> Any:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            metrics.error(kind)
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handle

    app.add_exception_handler(CatalogUnavailableError, handler(503, "catalog_unavailable"))
    app.add_exception_handler(ReferenceNotFoundError, handler(404, "reference_not_found"))
    app.add_exception_handler(NoImageError, handler(404, "no_reference_image"))
    app.add_exception_handler(DuplicateReferenceError, handler(409, "duplicate_reference"))
    app.add_exception_handler(InvalidImageError, handler(422, "invalid_reference_image"))
    # A damaged or unreadable catalog is the service's state, not the request's fault.
    app.add_exception_handler(CatalogError, handler(503, "catalog_error"))


def _add_api_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Health:
        """Liveness: the process answers. Never touches the catalog."""
        return Health(status="ok")

    @app.get("/readyz", tags=["operations"], responses=_problems(503))
    def readyz(state: State) -> Any:
        """Readiness: 200 once the catalog is loaded, 503 (with the reason) before or on failure."""
        if not state.ready:
            return JSONResponse({"detail": state.status}, status_code=503)
        return Readiness(
            status="ready",
            references=state.catalog.count(),
            stale_references=state.detector.stale_references(),
        )

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics(state: State) -> PlainTextResponse:
        """Prometheus text format: requests, check latency by stage, catalog size, errors."""
        return PlainTextResponse(
            state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    check_extra = _image_parts_encoding()
    if app.state.service.settings.check_api_key is None:
        # Checks need no key in this configuration: an empty requirement says the key is optional.
        check_extra["security"] = [{}]

    @app.post(
        "/v1/checks",
        tags=["checks"],
        dependencies=[Depends(require_check_key)],
        responses=_problems(400, 401, 403, 408, 413, 415, 422, 503),
        openapi_extra=check_extra,
        # C4 fields appear only where they apply (error, correspondences), never as null.
        response_model_exclude_unset=True,
    )
    def check(
        state: State,
        image: Annotated[
            list[UploadFile],
            File(min_length=1, description="Listing photos (repeat the field for several)."),
        ],
        min_score: Annotated[
            float | None, Query(ge=0, le=1, description="Report candidates from this score.")
        ] = None,
        correspondences: Annotated[
            bool, Query(description="Include the verified keypoint pairs of each match.")
        ] = False,
        preview: Annotated[
            bool, Query(description="Include each checked photo as decoded, as a JPEG.")
        ] = False,
    ) -> CheckResponse:
        """Check listing photos; an undecodable one is a `status: error` result, not a failure."""
        if len(image) > state.settings.max_files:
            raise HTTPException(400, f"at most {state.settings.max_files} images per request")
        _refuse_non_images(state, image)
        results = []
        for position, upload in enumerate(image):
            data = upload.file.read()
            result = state.check(data, _label(upload, position), min_score)
            out = result.to_dict(correspondences=correspondences)
            if preview and result.status == "ok":
                out["preview"] = state.preview(data)
            results.append(CheckResultOut.model_validate(out))
        return CheckResponse(results=results)

    @app.get("/v1/references", tags=["references"], responses=_problems(422, 503))
    def list_references(
        state: State,
        design: Annotated[str | None, Query(description="Only this design (exact).")] = None,
        brand: Annotated[str | None, Query(description="Only this brand (exact).")] = None,
        offset: Offset = 0,
        limit: Annotated[
            int, Query(ge=1, le=MAX_INT64, description="Capped at IMGMATCH_PAGE_SIZE_MAX.")
        ] = 50,
    ) -> ReferencePage:
        """References in id order, a page at a time."""
        limit = min(limit, state.settings.page_size_max)
        catalog = state.catalog
        items = catalog.references(design=design, brand=brand, offset=offset, limit=limit)
        return ReferencePage(
            total=catalog.count(design=design, brand=brand),
            offset=offset,
            limit=limit,
            items=[ReferenceOut.of(r) for r in items],
        )

    @app.get(
        "/v1/references/{reference_id}", tags=["references"], responses=_problems(404, 422, 503)
    )
    def get_reference(state: State, reference_id: ReferenceId) -> ReferenceOut:
        return ReferenceOut.of(state.catalog.get(reference_id))

    @app.get(
        "/v1/references/{reference_id}/image",
        tags=["references"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **_problems(404, 422, 503)},
    )
    def reference_image(state: State, reference_id: ReferenceId) -> Response:
        """A re-encoded JPEG thumbnail of the reference photo (never the uploaded bytes)."""
        data = state.thumbnail(state.catalog.get(reference_id))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post(
        "/v1/references",
        tags=["references"],
        status_code=201,
        dependencies=[Depends(require_write_key)],
        responses=_problems(400, 401, 403, 408, 409, 413, 415, 422, 503),
        openapi_extra=_image_parts_encoding(),
    )
    def add_reference(
        state: State,
        image: Annotated[UploadFile, File(description="The reference photo.")],
        design: Annotated[str, Form(min_length=1, max_length=200)],
        brand: Annotated[str, Form(max_length=200)] = "",
        metadata: Annotated[
            str, Form(description='Any further fields as a JSON object, e.g. {"metal": "gold"}.')
        ] = "{}",
    ) -> ReferenceOut:
        """Fingerprint and add a reference photo; the next check sees it."""
        _refuse_non_images(state, [image])
        extra = _parse_metadata(metadata)
        upload = NewUpload(image.file.read(), design.strip(), brand.strip(), extra)
        return ReferenceOut.of(state.add_reference(upload))

    @app.delete(
        "/v1/references/{reference_id}",
        tags=["references"],
        dependencies=[Depends(require_write_key)],
        responses=_problems(401, 403, 404, 422, 503),
    )
    def delete_reference(state: State, reference_id: ReferenceId) -> ReferenceOut:
        """Remove a reference; the next check no longer reports it. Returns what was removed."""
        return ReferenceOut.of(state.remove_reference(reference_id))


def _parse_metadata(text: str) -> dict[str, Any]:
    """The fields as sent: nested objects, lists and numbers are kept as JSON values."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"metadata is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(422, "metadata must be a JSON object")
    return value


def _add_pages(app: FastAPI) -> None:
    @app.get("/", tags=["pages"], response_class=HTMLResponse)
    def review_page(request: Request, state: State) -> HTMLResponse:
        """The review page: drop a listing photo, see the verdict and the evidence."""
        return templates.TemplateResponse(
            request,
            "review.html",
            {"max_files": state.settings.max_files, "max_bytes": state.settings.max_body_bytes},
        )

    @app.get("/catalog", tags=["pages"], response_class=HTMLResponse, responses=_problems(422, 503))
    def catalog_page(
        request: Request,
        state: State,
        design: str | None = None,
        brand: str | None = None,
        offset: Offset = 0,
    ) -> HTMLResponse:
        """The catalog page: references with thumbnails, search, add and delete."""
        design, brand = (design or "").strip(), (brand or "").strip()
        limit = min(48, state.settings.page_size_max)
        catalog = state.catalog
        if design or brand:
            found = _search_references(catalog.references(), design, brand)
            references, total = found[offset : offset + limit], len(found)
        else:
            references, total = catalog.references(offset=offset, limit=limit), catalog.count()
        return templates.TemplateResponse(
            request,
            "catalog.html",
            {
                "references": references,
                "total": total,
                "design": design,
                "brand": brand,
                "offset": offset,
                "limit": limit,
            },
        )


def _search_references(references: Sequence[Reference], design: str, brand: str) -> list[Reference]:
    """The references whose design and brand contain what was typed, in any case: an analyst
    types part of a name ("D03", "atelier"), not the whole of it."""
    wanted = [(field, text.casefold()) for field, text in (("design", design), ("brand", brand))]
    return [
        reference
        for reference in references
        if all(text in getattr(reference, field).casefold() for field, text in wanted)
    ]


class _JsonFormatter(logging.Formatter):
    """One JSON object a line, with the request fields the access log attaches."""

    FIELDS = ("method", "path", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({f: getattr(record, f) for f in self.FIELDS if hasattr(record, f)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(settings: ServiceSettings) -> None:
    """Send the service's and uvicorn's logs to stderr as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        _JsonFormatter()
        if settings.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.setFormatter(formatter)
    for name in ("imgmatch", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(settings.log_level.upper())
        logger.propagate = False
