"""The service over a catalog that holds nothing, or one that is damaged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import API_KEY, jpeg_bytes, listing_with, random_scene

WRITE = {"X-API-Key": API_KEY}


def _check(client: TestClient, *images: bytes) -> list[dict[str, object]]:
    response = client.post(
        "/v1/checks",
        params={"min_score": 0},
        files=[("image", (f"l{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)],
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, object]] = response.json()["results"]
    return results


def test_a_new_catalog_answers_every_check_with_no_matches(
    make_client: Callable[..., TestClient], tmp_path: Path, rng: np.random.Generator
) -> None:
    """The service makes a new catalog on an empty folder; checks must work at once."""
    client = make_client(catalog=tmp_path / "new-catalog")
    assert client.get("/readyz").json()["references"] == 0
    copy, unrelated = jpeg_bytes(listing_with("D004_0.jpg", rng)), jpeg_bytes(random_scene(rng))
    for result in _check(client, copy, unrelated):
        assert (result["status"], result["flagged"], result["matches"]) == ("ok", False, [])


def test_a_catalog_with_every_reference_deleted_answers_with_no_matches(
    client: TestClient, rng: np.random.Generator
) -> None:
    copy = jpeg_bytes(listing_with("D004_0.jpg", rng))
    assert _check(client, copy)[0]["flagged"] is True
    for reference in client.get("/v1/references", params={"limit": 1000}).json()["items"]:
        deleted = client.delete(f"/v1/references/{reference['reference_id']}", headers=WRITE)
        assert deleted.status_code == 200
    assert client.get("/readyz").json()["references"] == 0
    for result in _check(client, copy, jpeg_bytes(random_scene(rng))):
        assert (result["status"], result["flagged"], result["matches"]) == ("ok", False, [])
