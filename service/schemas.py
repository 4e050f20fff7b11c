"""Pydantic models of the HTTP edge: what the routes return, as documented at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from imgmatch.catalog import Reference


class MatchOut(BaseModel):
    """One protected design found in the listing (contract C4)."""

    reference_id: int
    reference_path: str
    design: str
    brand: str
    score: float = Field(
        ge=0, le=1, description="Monotone in the evidence; flagged at >= threshold."
    )
    hash_distance: int | None = Field(description="Bits apart (of 64) where the hashes matched.")
    inliers: int = Field(description="ORB correspondences that agree on one geometry.")
    inlier_ratio: float
    transform: str = Field(description="How the listing shows the reference (mirrored, ...).")
    box: list[int] | None = Field(
        description="[x0, y0, x1, y1] in the listing's pixels; null for a whole-image hash match."
    )
    evidence: str
    correspondences: list[list[float]] | None = Field(
        default=None,
        description="Only with ?correspondences=true: [ref_x, ref_y, listing_x, listing_y] each.",
    )


class CheckResultOut(BaseModel):
    """The verdict on one uploaded listing photo (contract C4)."""

    path: str | None = Field(description="The upload's file name, as a label only.")
    status: Literal["ok", "error"]
    flagged: bool
    matches: list[MatchOut]
    timing_ms: dict[str, float] = Field(description="decode, features, search, verify.")
    width: int | None = None
    height: int | None = None
    error: str | None = Field(default=None, description="Why the image could not be checked.")
    error_type: str | None = Field(default=None, description="e.g. 'corrupt image'.")
    preview: str | None = Field(
        default=None,
        description="Only with ?preview=true: the photo as the service decoded it (turned by its "
        "EXIF orientation, transparency on white), as a `data:image/jpeg;base64,...` URI, for "
        "display where a browser cannot show the uploaded format (TIFF).",
    )


class CheckResponse(BaseModel):
    results: list[CheckResultOut] = Field(description="One per uploaded file, in upload order.")


class ReferenceOut(BaseModel):
    reference_id: int
    path: str = Field(description="As indexed; `upload:<sha256 prefix>` for uploaded photos.")
    design: str
    brand: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, Any] = Field(
        description="Further fields: text from an indexed metadata CSV, any JSON value as sent."
    )
    added_at: str
    image_url: str = Field(description="A re-encoded JPEG thumbnail of the photo.")

    @classmethod
    def of(cls, reference: Reference) -> ReferenceOut:
        return cls(
            reference_id=reference.reference_id,
            path=reference.path,
            design=reference.design,
            brand=reference.brand,
            sha256=reference.sha256,
            width=reference.width,
            height=reference.height,
            metadata=dict(reference.metadata),
            added_at=reference.added_at,
            image_url=f"/v1/references/{reference.reference_id}/image",
        )


class ReferencePage(BaseModel):
    total: int = Field(description="References matching the filter, over all pages.")
    offset: int
    limit: int
    items: list[ReferenceOut]


class Problem(BaseModel):
    """Every error answer: `detail` says what went wrong and what to do about it."""

    detail: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    references: int | None = None
    # References fingerprinted by another imgmatch version or with other settings: re-index them.
    stale_references: int | None = None
