"""The review and catalog pages in real headless Chromium (Debian's package, via Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LiveServer
from service_helpers import jpeg_bytes, listing_with

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(live_server: LiveServer):  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("no Chromium at /usr/bin/chromium: `apt-get install chromium` (.ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright's Python package is not installed"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 800})
        finally:
            browser.close()


def test_review_page_shows_the_verdict_and_box_then_the_catalog(
    page, live_server: LiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    listing = tmp_path / "listing.jpg"
    listing.write_bytes(jpeg_bytes(listing_with("D004_0.jpg", np.random.default_rng(3))))
    page.goto(f"{live_server.url}/")
    page.set_input_files("#listing", str(listing))
    verdict = page.locator("#verdict")
    verdict.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("document.querySelector('#verdict').textContent.length > 0")
    assert verdict.inner_text().startswith("Flagged: copies D004")
    box = page.locator("#evidence rect.box")
    box.first.wait_for(state="attached", timeout=10_000)
    assert box.first.get_attribute("data-design") == "D004"
    assert page.locator("#evidence line.pair").count() > 0
    page.uncheck("#show-lines")
    assert not page.locator("#evidence line.pair").first.is_visible()
    assert "score" in page.locator("#matches").inner_text()

    page.click("text=Catalog")
    page.wait_for_url(f"{live_server.url}/catalog")
    assert page.locator(".card").count() >= 6
    page.fill("#q-design", "D037")
    page.click("button:has-text('Search')")
    page.wait_for_url("**design=D037**")
    assert page.locator(".card").count() == 1


def block_the_network(page, server_url: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Let the page reach only the service, as on a machine without internet; returns the
    addresses it tried to reach elsewhere."""
    attempted: list[str] = []

    def only_the_service(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_service)
    return attempted


def test_api_docs_render_without_internet(page, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    elsewhere = block_the_network(page, live_server.url)
    page.goto(f"{live_server.url}/")
    page.click("text=API")
    page.wait_for_url(f"{live_server.url}/docs")
    # Swagger UI draws one block per operation once its script has loaded the OpenAPI document.
    operations = page.locator(".opblock-summary-path")
    operations.first.wait_for(state="visible", timeout=20_000)
    paths = set(operations.all_inner_texts())
    assert {"/v1/checks", "/v1/references", "/healthz"} <= {p.replace("\u200b", "") for p in paths}

    page.goto(f"{live_server.url}/redoc")
    page.get_by_text("/v1/checks").first.wait_for(state="attached", timeout=20_000)
    assert page.locator("h2", has_text="Check").count() > 0
    # ReDoc's attribution logo is its one outside address, and it removes itself offline.
    assert [url for url in elsewhere if url != REDOC_LOGO] == []
    broken = "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length"
    assert page.evaluate(broken) == 0


def test_a_tiff_listing_is_shown_as_the_service_decoded_it(
    page, live_server: LiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    listing = tmp_path / "listing.tif"
    listing_with("D004_0.jpg", np.random.default_rng(4)).save(listing, format="TIFF")
    page.goto(f"{live_server.url}/")
    page.set_input_files("#listing", str(listing))
    page.locator("#evidence rect.box").first.wait_for(state="attached", timeout=30_000)
    assert page.locator("#verdict").inner_text().startswith("Flagged: copies D004")
    shown = page.locator("#evidence image").first.get_attribute("href")
    # The photo drawn under the boxes must be one the browser can decode (it cannot read TIFF).
    loaded_width = page.evaluate(
        """href => new Promise(done => {
             const probe = new Image();
             probe.onload = () => done(probe.naturalWidth);
             probe.onerror = () => done(0);
             probe.src = href;
           })""",
        shown,
    )
    assert loaded_width > 0


def test_an_unreadable_listing_gets_a_short_reason_and_no_empty_frame(
    page, live_server: LiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    whole = jpeg_bytes(listing_with("D004_0.jpg", np.random.default_rng(5)))
    listing = tmp_path / "cut.jpg"
    listing.write_bytes(whole[: len(whole) // 3])
    page.goto(f"{live_server.url}/")
    page.set_input_files("#listing", str(listing))
    verdict = page.locator("#verdict")
    page.wait_for_function("document.querySelector('#verdict').textContent.length > 0")
    assert verdict.inner_text() == (
        "Could not check cut.jpg: the file is incomplete (cut off during download or upload)."
    )
    assert not page.locator("#evidence").is_visible()
    assert not page.locator("#matches").is_visible()


def test_the_catalog_asks_for_the_key_before_adding_and_shows_the_answer_in_view(
    page, live_server: LiveServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "new.jpg"
    photo.write_bytes(jpeg_bytes(listing_with("D010_0.jpg", np.random.default_rng(6))))
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{live_server.url}/catalog")
    page.click("text=Add a reference")
    key_top = page.locator("#api-key").bounding_box()["y"]
    assert key_top < page.locator("#add-form").bounding_box()["y"]
    # A first add without the key: the answer must be where the analyst is looking.
    page.set_input_files("#add-image", str(photo))
    page.fill("#add-design", "D999")
    page.click("button:has-text('Add reference')")
    status = page.locator("#status")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Not added')")
    box = status.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= page.evaluate("window.innerHeight")
