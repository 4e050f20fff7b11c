"""The service refuses a reference too plain to protect, as `imgmatch index` does."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import API_KEY, jpeg_bytes


def test_a_gradient_uploaded_as_a_reference_is_refused_and_nothing_is_added(
    client: TestClient,
) -> None:
    before = client.get("/v1/references", params={"limit": 100}).json()["items"]
    row = np.linspace(0, 255, 640).astype(np.uint8)
    gradient = np.ascontiguousarray(np.broadcast_to(row[None, :, None], (480, 640, 3)))
    response = client.post(
        "/v1/references",
        headers={"X-API-Key": API_KEY},
        files={"image": ("gradient.jpg", jpeg_bytes(gradient), "image/jpeg")},
        data={"design": "plain"},
    )
    assert response.status_code == 422, response.text
    assert "too little detail" in response.text
    assert client.get("/v1/references", params={"limit": 100}).json()["items"] == before
