"""Schemathesis against a live `imgmatch serve`: generated requests, valid and invalid, find no
server error and no answer that the OpenAPI document does not describe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import LiveServer
from service_helpers import API_KEY

pytestmark = pytest.mark.slow

# Every check of answers against the document, plus the stateful ones (a deleted reference
# stays gone, a created one can be read). Left out: `positive_data_acceptance`, which expects
# every schema-valid request to succeed; a schema can say a part is an image, not that its
# bytes decode, and an undecodable reference photo is rightly refused with a documented 422.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
)
EXAMPLES_PER_OPERATION = 25
SEED = 20240611
RUN_TIMEOUT_S = 300


@pytest.mark.parametrize("check_api_key", [None, "check-key"], ids=["open-checks", "keyed-checks"])
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    start_live_server: Callable[..., LiveServer], tmp_path: Path, check_api_key: str | None
) -> None:
    settings = {} if check_api_key is None else {"check_api_key": check_api_key}
    server = start_live_server(**settings)
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        # The write key, which is also accepted for checks when they need a key.
        "--header",
        f"X-API-Key: {API_KEY}",
    ]
    # Its example database and reports stay in the test's folder.
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    print(summary)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert "generated" in summary and "passed" in summary
    assert server.process.poll() is None
