"""The service's one settings object, read from `IMGMATCH_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgmatch.catalog import resolve_catalog_dir


class ServiceSettings(BaseSettings):
    """Everything `imgmatch serve` can be told; each field is `IMGMATCH_<NAME>` in the environment.

    `catalog` is the same variable the CLI reads (contract C1), so both see one catalog.
    """

    model_config = SettingsConfigDict(env_prefix="IMGMATCH_", extra="ignore")

    catalog: Path | None = Field(
        default=None, description="Catalog folder (default: ./imgmatch-data, contract C1)."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Key for reference writes (X-API-Key); unset = writes refused."
    )
    check_api_key: SecretStr | None = Field(
        default=None, description="If set, POST /v1/checks also needs X-API-Key (this or api_key)."
    )
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Request bodies over this are answered 413."
    )
    max_files: int = Field(default=10, gt=0, description="Most images in one check request.")
    # A client that sends slowly holds a connection, and an upload also its spooled part, for
    # as long as it likes unless these bound it; a reverse proxy in front may bound it earlier.
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's line and headers must arrive within this (else 408, closed).",
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A request's whole body must arrive within this of its headers (else 408).",
    )
    max_uploads: int = Field(
        default=16,
        gt=0,
        description="Requests with a body handled at once; more are answered 503 (Retry-After).",
    )
    flag_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Flag threshold when the catalog holds no calibrated one.",
    )
    min_score: float | None = Field(
        default=None, ge=0, le=1, description="Default lowest score reported (None: threshold)."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        gt=0,
        description="Checks and fingerprints computed at once; more requests wait their turn.",
    )
    max_decodes: int = Field(
        default=2,
        gt=0,
        description=(
            "Images decoded at once, whatever the CPU count: a large image holds up to "
            "ImageLimits.max_decoded_bytes (three times that for WebP) while it decodes."
        ),
    )
    page_size_max: int = Field(default=200, gt=0, description="Largest reference page size.")
    thumbnail_side_px: int = Field(default=480, ge=32, description="Long side of thumbnails.")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    def catalog_dir(self) -> Path:
        return resolve_catalog_dir(self.catalog)
