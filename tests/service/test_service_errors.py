"""Every error answer is a `{"detail": "<text>"}` Problem, with the status the OpenAPI document
gives for it: out-of-range numbers, invalid fields, broken multipart data, unsupported methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import API_KEY

WRITE = {"X-API-Key": API_KEY}
TOO_BIG = 2**63  # one past the largest 64-bit signed integer
LARGEST = 2**63 - 1
PROBLEM = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _documented_statuses(client: TestClient, method: str, path: str) -> set[str]:
    schema = client.get("/openapi.json").json()
    return set(schema["paths"][path][method]["responses"])


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("get", f"/v1/references?offset={TOO_BIG}", "/v1/references"),
        ("get", f"/v1/references?limit={TOO_BIG}", "/v1/references"),
        ("get", f"/v1/references/{TOO_BIG}", "/v1/references/{reference_id}"),
        ("get", f"/v1/references/{TOO_BIG}/image", "/v1/references/{reference_id}/image"),
        ("delete", f"/v1/references/{TOO_BIG}", "/v1/references/{reference_id}"),
        ("get", f"/catalog?offset={TOO_BIG}", "/catalog"),
        ("get", "/v1/references/0", "/v1/references/{reference_id}"),
        ("get", "/v1/references/-1/image", "/v1/references/{reference_id}/image"),
    ],
)
def test_an_out_of_range_integer_is_a_documented_422(
    client: TestClient, method: str, path: str, template: str
) -> None:
    response = client.request(method, path, headers=WRITE)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and ("offset" in detail or "limit" in detail or "id" in detail)
    assert "422" in _documented_statuses(client, method, template)


def test_the_largest_integers_are_answered_normally(client: TestClient) -> None:
    page = client.get("/v1/references", params={"offset": LARGEST, "limit": LARGEST})
    assert page.status_code == 200 and page.json()["items"] == []
    assert client.get(f"/v1/references/{LARGEST}").status_code == 404
    assert client.get(f"/v1/references/{LARGEST}/image").status_code == 404
    assert client.delete(f"/v1/references/{LARGEST}", headers=WRITE).status_code == 404
    assert client.get("/catalog", params={"offset": LARGEST}).status_code == 200


def test_invalid_fields_are_one_string_naming_each_field(client: TestClient) -> None:
    response = client.post("/v1/references", headers=WRITE, data={"brand": "x"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert "body.image" in detail and "body.design" in detail


def test_broken_multipart_data_is_a_documented_400(client: TestClient) -> None:
    for path in ("/v1/references", "/v1/checks"):
        response = client.post(
            path,
            headers={**WRITE, "Content-Type": "multipart/form-data; boundary=x"},
            content=b"--x\r\nNone--x--\r\n",
        )
        assert response.status_code == 400, (path, response.text)
        assert isinstance(response.json()["detail"], str)
        assert "400" in _documented_statuses(client, "post", path)


def test_image_parts_are_documented_as_images(client: TestClient) -> None:
    """A part that is not typed as an image (nor starts like one) is refused with 415: the
    document says the parts are images, so a client that follows it is not refused."""
    schema = client.get("/openapi.json").json()
    for path in ("/v1/references", "/v1/checks"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert body["encoding"]["image"]["contentType"] == "image/*"
    untyped = client.post(
        "/v1/references",
        headers=WRITE,
        files={"image": ("image", b"", "")},
        data={"design": "x"},
    )
    assert untyped.status_code == 415


def _error_responses(schema: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (path, method, status, response)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    ]


def test_every_documented_error_is_a_json_problem(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    errors = _error_responses(schema)
    assert len(errors) > 20
    for path, method, status, response in errors:
        assert response["content"] == PROBLEM, (path, method, status)
    assert set(schema["components"]["schemas"]["Problem"]["properties"]) == {"detail"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    # The HTML page's errors are JSON too.
    catalog_errors = schema["paths"]["/catalog"]["get"]["responses"]
    assert catalog_errors["503"]["content"] == PROBLEM


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS"])
def test_an_unsupported_method_lists_every_method_of_the_path(
    client: TestClient, method: str
) -> None:
    response = client.request(method, "/v1/references/1", headers=WRITE)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert isinstance(response.json()["detail"], str)
    collection = client.request(method, "/v1/references", headers=WRITE)
    assert collection.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("check_key", [None, "check-key"])
def test_the_check_key_is_documented_as_configured(
    make_client: Callable[..., TestClient], check_key: str | None
) -> None:
    client = make_client(check_api_key=check_key)
    schema = client.get("/openapi.json").json()
    security = schema["paths"]["/v1/checks"]["post"]["security"]
    # An empty requirement means "no key needed": true only while no check key is set.
    assert ({} in security) is (check_key is None)
    assert {"APIKeyHeader": []} in security
