"""The service over a catalog that holds nothing, or one that is damaged."""

from __future__ import annotations

import sqlite3
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


def _damage_keypoints(catalog_dir: Path) -> None:
    """Every stored keypoint blob cut by one byte: a check that verifies any match reads one."""
    with sqlite3.connect(catalog_dir / "catalog.sqlite3") as db:
        db.execute(
            "UPDATE feature_view SET keypoints = substr(keypoints, 1, length(keypoints) - 1)"
        )
    db.close()


def test_a_damaged_catalog_answers_503_and_readyz_says_why(
    make_client: Callable[..., TestClient], catalog_dir: Path, rng: np.random.Generator
) -> None:
    _damage_keypoints(catalog_dir)
    client = make_client()
    # The index files are intact, so the catalog loads; the damage shows at the first check.
    assert client.get("/readyz").status_code == 200
    copy = jpeg_bytes(listing_with("D004_0.jpg", rng))
    response = client.post("/v1/checks", files=[("image", ("l.jpg", copy, "image/jpeg"))])
    assert response.status_code == 503
    assert "catalog.sqlite3" in response.json()["detail"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "catalog.sqlite3" in ready.json()["detail"]
    assert "imgmatch catalog verify" in ready.json()["detail"]
    # Listing references still works: an operator can find and remove the damaged ones.
    assert client.get("/v1/references").status_code == 200


def test_an_emptied_database_is_refused_not_recreated(
    make_client: Callable[..., TestClient], catalog_dir: Path
) -> None:
    (catalog_dir / "catalog.sqlite3").write_bytes(b"")
    client = make_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "catalog.sqlite3 is empty (0 bytes)" in ready.json()["detail"]
    assert client.get("/v1/references").status_code == 503
    assert (catalog_dir / "catalog.sqlite3").stat().st_size == 0
