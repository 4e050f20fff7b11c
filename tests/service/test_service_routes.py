"""Every route, status code and error path of the service, in process (TestClient)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import (
    API_KEY,
    INDEXED,
    REFERENCES,
    jpeg_bytes,
    listing_with,
    random_scene,
)

WRITE = {"X-API-Key": API_KEY}
UNGUARDED_POSTS = {("post", "/v1/checks")}


def files(*parts: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", part) for part in parts]


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "references": len(INDEXED), "stale_references": 0}


def test_readyz_is_503_with_the_reason_when_the_catalog_cannot_load(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    client = make_client(catalog=not_a_folder)
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "not a directory" in ready.json()["detail"]
    assert client.get("/v1/references").status_code == 503


def test_check_flags_a_copied_design_with_a_box(
    client: TestClient, rng: np.random.Generator
) -> None:
    listing = jpeg_bytes(listing_with("D004_0.jpg", rng))
    response = client.post("/v1/checks", files=files(("listing.jpg", listing, "image/jpeg")))
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "ok" and result["flagged"] is True
    assert result["path"] == "listing.jpg"
    top = result["matches"][0]
    assert top["design"] == "D004"
    x0, y0, x1, y1 = top["box"]
    # The reference was pasted at (150, 120) at 0.6 scale: 384x288 pixels.
    assert abs(x0 - 150) < 30 and abs(y0 - 120) < 30 and abs(x1 - 534) < 30 and abs(y1 - 408) < 30
    assert "correspondences" not in top
    assert set(result["timing_ms"]) >= {"decode", "features", "search", "verify"}


def test_check_many_files_in_order_with_correspondences(
    client: TestClient, rng: np.random.Generator
) -> None:
    copy = jpeg_bytes(listing_with("D030_0.jpg", rng))
    unrelated = jpeg_bytes(random_scene(rng))
    response = client.post(
        "/v1/checks?correspondences=true",
        files=files(("a.jpg", copy, "image/jpeg"), ("b.jpg", unrelated, "image/jpeg")),
    )
    first, second = response.json()["results"]
    assert first["flagged"] and first["matches"][0]["design"] == "D030"
    pairs = first["matches"][0]["correspondences"]
    assert len(pairs) >= 12 and all(len(p) == 4 for p in pairs)
    assert second["status"] == "ok" and second["flagged"] is False and second["matches"] == []


def test_preview_is_the_listing_as_decoded_as_a_jpeg(
    client: TestClient, rng: np.random.Generator
) -> None:
    listing = listing_with("D004_0.jpg", rng, scale=1.6)
    tiff = io.BytesIO()
    listing.save(tiff, format="TIFF")
    upload = files(("listing.tif", tiff.getvalue(), "image/tiff"))
    plain = client.post("/v1/checks", files=upload).json()["results"][0]
    assert "preview" not in plain
    result = client.post("/v1/checks?preview=true", files=upload).json()["results"][0]
    assert result["flagged"] and result["matches"][0]["design"] == "D004"
    prefix = "data:image/jpeg;base64,"
    assert result["preview"].startswith(prefix)
    shown = Image.open(io.BytesIO(base64.b64decode(result["preview"][len(prefix) :])))
    assert shown.format == "JPEG"
    # The whole photo, its long side brought down to a size a page draws quickly.
    assert max(shown.size) == 1024 < max(listing.size)
    assert shown.width / shown.height == pytest.approx(result["width"] / result["height"], 0.01)
    expected = np.asarray(listing.resize(shown.size), dtype=np.float64)
    assert np.abs(np.asarray(shown, dtype=np.float64) - expected).mean() < 8


def test_an_undecodable_image_is_a_per_file_error(
    client: TestClient, rng: np.random.Generator
) -> None:
    good = jpeg_bytes(random_scene(rng))
    truncated = good[: len(good) // 3]
    response = client.post(
        "/v1/checks",
        files=files(
            ("bad.jpg", b"\xff\xd8\xff garbage", "image/jpeg"),
            ("cut.jpg", truncated, "image/jpeg"),
            ("ok.jpg", good, "image/jpeg"),
        ),
    )
    assert response.status_code == 200
    bad, cut, ok = response.json()["results"]
    assert bad["status"] == "error" and bad["error"] and bad["matches"] == []
    assert cut["status"] == "error" and cut["error_type"]
    assert ok["status"] == "ok"
    assert 'imgmatch_errors_total{type="' in client.get("/metrics").text


def test_a_non_image_is_415(client: TestClient, rng: np.random.Generator) -> None:
    good = jpeg_bytes(random_scene(rng))
    response = client.post(
        "/v1/checks",
        files=files(("ok.jpg", good, "image/jpeg"), ("notes.txt", b"hello there", "text/plain")),
    )
    assert response.status_code == 415
    assert "notes.txt" in response.json()["detail"]


def test_an_image_sent_as_octet_stream_is_recognised(
    client: TestClient, rng: np.random.Generator
) -> None:
    good = jpeg_bytes(random_scene(rng))
    response = client.post("/v1/checks", files=files(("x", good, "application/octet-stream")))
    assert response.status_code == 200


def test_too_many_files_is_400(
    make_client: Callable[..., TestClient], rng: np.random.Generator
) -> None:
    client = make_client(max_files=2)
    image = jpeg_bytes(random_scene(rng))
    response = client.post("/v1/checks", files=files(*[("x.jpg", image, "image/jpeg")] * 3))
    assert response.status_code == 400
    assert "at most 2" in response.json()["detail"]


def test_missing_image_field_is_422(client: TestClient) -> None:
    assert client.post("/v1/checks", data={"other": "x"}).status_code == 422


def test_min_score_lists_weaker_candidates(client: TestClient, rng: np.random.Generator) -> None:
    listing = jpeg_bytes(listing_with("D010_0.jpg", rng))
    response = client.post("/v1/checks?min_score=0", files=files(("l.jpg", listing, "image/jpeg")))
    assert response.json()["results"][0]["matches"]
    assert (
        client.post(
            "/v1/checks?min_score=2", files=files(("l.jpg", listing, "image/jpeg"))
        ).status_code
        == 422
    )


@pytest.fixture
def small_cap_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_body_bytes=100_000)


def test_a_declared_body_over_the_cap_is_413(small_cap_client: TestClient) -> None:
    response = small_cap_client.post(
        "/v1/checks", files=files(("big.jpg", b"\xff\xd8\xff" + bytes(200_000), "image/jpeg"))
    )
    assert response.status_code == 413
    assert "100,000-byte limit" in response.json()["detail"]


def test_a_streamed_body_over_the_cap_is_413(small_cap_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(20):
            yield bytes(16_384)

    response = small_cap_client.post(
        "/v1/checks",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    metrics = small_cap_client.get("/metrics").text
    assert 'imgmatch_errors_total{type="body_too_large"} 1' in metrics


def test_list_references_paginates_and_filters(client: TestClient) -> None:
    page = client.get("/v1/references", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == len(INDEXED) and page["limit"] == 2 and page["offset"] == 1
    assert [r["design"] for r in page["items"]] == ["D004", "D010"]
    by_design = client.get("/v1/references", params={"design": "D020"}).json()
    assert by_design["total"] == 1 and by_design["items"][0]["design"] == "D020"
    by_brand = client.get("/v1/references", params={"brand": "Atelier Exemple"}).json()
    assert by_brand["total"] == len(INDEXED)
    assert client.get("/v1/references", params={"brand": "nobody"}).json()["items"] == []
    assert client.get("/v1/references", params={"limit": 0}).status_code == 422


def test_page_size_is_capped(make_client: Callable[..., TestClient]) -> None:
    client = make_client(page_size_max=3)
    page = client.get("/v1/references", params={"limit": 100}).json()
    assert page["limit"] == 3 and len(page["items"]) == 3


def test_get_reference_and_404(client: TestClient) -> None:
    reference = client.get("/v1/references/1").json()
    assert reference["design"] == "D000" and reference["metadata"]["family"] == "screw_bangle"
    assert reference["image_url"] == "/v1/references/1/image"
    missing = client.get("/v1/references/999")
    assert missing.status_code == 404 and "999" in missing.json()["detail"]
    assert client.get("/v1/references/abc").status_code == 422


def test_reference_image_is_a_reencoded_thumbnail(make_client: Callable[..., TestClient]) -> None:
    client = make_client(thumbnail_side_px=200)
    response = client.get("/v1/references/1/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content != (REFERENCES / INDEXED[0]).read_bytes()
    with Image.open(io.BytesIO(response.content)) as image:
        assert max(image.size) == 200
    assert client.get("/v1/references/999/image").status_code == 404


def test_add_reference_is_seen_by_the_next_check(
    client: TestClient, rng: np.random.Generator
) -> None:
    photo = Image.open(REFERENCES / "D015_0.jpg")
    listing = jpeg_bytes(listing_with("D015_0.jpg", rng))
    before = client.post("/v1/checks", files=files(("l.jpg", listing, "image/jpeg"))).json()
    assert not any(m["design"] == "D015" for m in before["results"][0]["matches"])
    added = client.post(
        "/v1/references",
        headers=WRITE,
        files={"image": ("../../etc/passwd", jpeg_bytes(photo, 95), "image/jpeg")},
        data={"design": "D015", "brand": "Atelier Exemple", "metadata": '{"metal": "gold"}'},
    )
    assert added.status_code == 201, added.text
    reference = added.json()
    assert reference["path"].startswith("upload:") and "passwd" not in reference["path"]
    assert reference["metadata"] == {"metal": "gold"}
    after = client.post("/v1/checks", files=files(("l.jpg", listing, "image/jpeg"))).json()
    top = after["results"][0]["matches"][0]
    assert top["design"] == "D015" and top["reference_id"] == reference["reference_id"]
    thumbnail = client.get(reference["image_url"])
    assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"


def test_metadata_sent_as_nested_json_comes_back_as_the_same_json(
    client: TestClient, rng: np.random.Generator
) -> None:
    metadata = {
        "metal": "gold",
        "rights": {"kind": "registered design", "number": 4021187, "countries": ["FR", "DE"]},
        "carats": 18.0,
        "discontinued": False,
    }
    added = client.post(
        "/v1/references",
        headers=WRITE,
        files={"image": ("ref.jpg", jpeg_bytes(random_scene(rng)), "image/jpeg")},
        data={"design": "nested", "metadata": json.dumps(metadata)},
    )
    assert added.status_code == 201, added.text
    assert added.json()["metadata"] == metadata
    stored = client.get(f"/v1/references/{added.json()['reference_id']}").json()
    assert stored["metadata"] == metadata


def test_add_reference_errors(client: TestClient, rng: np.random.Generator) -> None:
    existing = (REFERENCES / INDEXED[0]).read_bytes()
    duplicate = client.post(
        "/v1/references",
        headers=WRITE,
        files={"image": ("a.jpg", existing, "image/jpeg")},
        data={"design": "other"},
    )
    assert duplicate.status_code == 409 and "reference 1" in duplicate.json()["detail"]
    assert client.get("/v1/references/1").json()["design"] == "D000"
    image = ("a.jpg", jpeg_bytes(random_scene(rng)), "image/jpeg")
    cases = [
        ({"image": ("a.txt", b"plain text", "text/plain")}, {"design": "x"}, 415),
        ({"image": ("a.jpg", b"\xff\xd8\xff broken", "image/jpeg")}, {"design": "x"}, 422),
        ({"image": image}, {"design": ""}, 422),
        ({"image": image}, {"design": "x", "metadata": "[1, 2]"}, 422),
        ({"image": image}, {"design": "x", "metadata": "{nope"}, 422),
        ({}, {"design": "x"}, 422),
    ]
    for upload, data, status in cases:
        response = client.post("/v1/references", headers=WRITE, files=upload, data=data)
        assert response.status_code == status, (data, response.text)


def test_delete_reference_is_seen_by_the_next_check(
    client: TestClient, catalog_dir: Path, rng: np.random.Generator
) -> None:
    listing = jpeg_bytes(listing_with("D020_0.jpg", rng))
    before = client.post("/v1/checks", files=files(("l.jpg", listing, "image/jpeg"))).json()
    reference_id = before["results"][0]["matches"][0]["reference_id"]
    client.get(f"/v1/references/{reference_id}/image")
    assert (catalog_dir / "thumbnails" / f"{reference_id}.jpg").exists()
    deleted = client.delete(f"/v1/references/{reference_id}", headers=WRITE)
    assert deleted.status_code == 200 and deleted.json()["design"] == "D020"
    assert not (catalog_dir / "thumbnails" / f"{reference_id}.jpg").exists()
    assert client.get(f"/v1/references/{reference_id}").status_code == 404
    after = client.post("/v1/checks", files=files(("l.jpg", listing, "image/jpeg"))).json()
    assert all(m["reference_id"] != reference_id for m in after["results"][0]["matches"])
    assert client.delete(f"/v1/references/{reference_id}", headers=WRITE).status_code == 404


def _write_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every operation in the OpenAPI schema that is not a read: a new route cannot hide."""
    schema = client.get("/openapi.json").json()
    operations = [
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method not in ("get", "head", "options")
    ]
    return [op for op in operations if op not in UNGUARDED_POSTS]


def _concrete(path: str) -> str:
    return path.replace("{reference_id}", "1")


def test_every_write_route_needs_the_key(client: TestClient) -> None:
    operations = _write_operations(client)
    assert {("post", "/v1/references"), ("delete", "/v1/references/{reference_id}")} <= set(
        operations
    )
    for method, path in operations:
        missing = client.request(method, _concrete(path))
        assert missing.status_code == 401, (method, path, missing.text)
        wrong = client.request(method, _concrete(path), headers={"X-API-Key": API_KEY + "x"})
        assert wrong.status_code == 403, (method, path, wrong.text)
    assert client.get("/v1/references/1").status_code == 200


def test_every_write_route_declares_the_key_in_openapi(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for method, path in _write_operations(client):
        operation = schema["paths"][path][method]
        assert operation.get("security"), (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_writes_are_refused_with_a_hint_when_no_key_is_configured(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_key=None)
    for method, path in _write_operations(client):
        response = client.request(method, _concrete(path), headers={"X-API-Key": "anything"})
        assert response.status_code == 403
        assert "IMGMATCH_API_KEY" in response.json()["detail"]


def test_checks_can_require_a_key(
    make_client: Callable[..., TestClient], rng: np.random.Generator
) -> None:
    client = make_client(check_api_key="check-key")
    upload = files(("a.jpg", jpeg_bytes(random_scene(rng)), "image/jpeg"))
    assert client.post("/v1/checks", files=upload).status_code == 401
    assert client.post("/v1/checks", files=upload, headers={"X-API-Key": "no"}).status_code == 403
    for key in ("check-key", API_KEY):
        assert (
            client.post("/v1/checks", files=upload, headers={"X-API-Key": key}).status_code == 200
        )


def test_metrics_report_requests_stages_and_catalog_size(
    client: TestClient, rng: np.random.Generator
) -> None:
    client.post("/v1/checks", files=files(("a.jpg", jpeg_bytes(random_scene(rng)), "image/jpeg")))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'imgmatch_http_requests_total{method="POST",route="/v1/checks",status="200"} 1' in text
    assert 'imgmatch_check_stage_seconds_count{stage="features"} 1' in text
    assert 'imgmatch_check_stage_seconds_bucket{stage="total",le="+Inf"} 1' in text
    assert f"imgmatch_catalog_references {len(INDEXED)}" in text


def test_openapi_documents_every_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    for route in client.app.routes:  # type: ignore[attr-defined]
        for method in getattr(route, "methods", None) or ():
            if getattr(route, "include_in_schema", False) and method != "HEAD":
                assert (method, route.path) in documented
    check = schema["paths"]["/v1/checks"]["post"]
    assert {"200", "413", "415"} <= set(check["responses"])


def test_review_page(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="listing"' in page.text and 'type="file"' in page.text
    assert client.get("/static/review.js").status_code == 200


def test_catalog_page_finds_part_of_a_design_or_brand_in_any_case(client: TestClient) -> None:
    def cards(**search: str) -> int:
        page = client.get("/catalog", params=search)
        assert page.status_code == 200
        return page.text.count('class="card"')

    designs = [Path(name).stem.split("_")[0] for name in INDEXED]
    assert cards(design="D03") == sum(d.startswith("D03") for d in designs) == 2
    assert cards(design="d03") == 2
    assert cards(design="37") == 1
    assert cards(brand="exemple") == len(INDEXED)
    assert cards(design="D03", brand="nobody") == 0


def test_catalog_page_lists_and_searches(client: TestClient) -> None:
    page = client.get("/catalog")
    assert page.status_code == 200
    assert page.text.count('class="card"') == len(INDEXED)
    filtered = client.get("/catalog", params={"design": "D037"})
    assert filtered.text.count('class="card"') == 1 and "D037" in filtered.text
    assert 'id="add-form"' in page.text and 'id="api-key"' in page.text
