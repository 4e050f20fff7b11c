"""The service decodes at most `max_decodes` images at once, whatever its workers, and hands
freed memory back once the last job of a burst is done."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_helpers import READY_TIMEOUT_S, jpeg_bytes, listing_with

import imgmatch.detector
import service.state
from imgmatch.images import DecodedImage, decode_image
from service.memory import BurstTracker
from service.metrics import Metrics
from service.settings import ServiceSettings
from service.state import ServiceState


class DecodeCounter:
    """Wraps `decode_image`: counts the decodes running at once, each held a moment."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, source: Any, *args: Any, **kwargs: Any) -> DecodedImage:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.hold_s)
            return decode_image(source, *args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def counted_decodes(monkeypatch: pytest.MonkeyPatch) -> DecodeCounter:
    counter = DecodeCounter(hold_s=0.3)
    # Wherever the service's checks decode: in the service itself or through the detector.
    monkeypatch.setattr(service.state, "decode_image", counter, raising=False)
    monkeypatch.setattr(imgmatch.detector, "decode_image", counter)
    return counter


@pytest.fixture
def make_state(catalog_dir: Path) -> Iterator[Any]:
    states: list[ServiceState] = []

    def start(**overrides: Any) -> ServiceState:
        state = ServiceState(ServiceSettings(catalog=catalog_dir, **overrides), Metrics())
        state.start()
        assert state.wait_loaded(READY_TIMEOUT_S) and state.ready, state.status
        states.append(state)
        return state

    yield start
    for state in states:
        state.close()


def test_decodes_at_once_are_bounded_below_the_workers(
    make_state: Any, counted_decodes: DecodeCounter, rng: np.random.Generator
) -> None:
    state = make_state(workers=4, max_decodes=1)
    listings = [jpeg_bytes(listing_with("D004_0.jpg", rng)) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: state.check(listings[i], f"listing-{i}", None), range(4)))
    assert [r.status for r in results] == ["ok"] * 4
    assert results[0].flagged and results[0].matches[0].design == "D004"
    assert counted_decodes.most == 1


def test_an_undecodable_upload_still_answers_with_an_error_result(make_state: Any) -> None:
    state = make_state(max_decodes=1)
    result = state.check(b"not an image at all", "listing-0", None)
    assert result.status == "error"
    assert result.error_type == "unsupported format"
    assert "decode" in result.timing_ms
    # The one slot is given back: the next upload decodes (rather than waiting for ever).
    listing = jpeg_bytes(listing_with("D000_0.jpg", np.random.default_rng(3)))
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(state.check, listing, "listing-1", None).result(60).status == "ok"


def test_the_decode_bound_does_not_follow_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    settings = ServiceSettings()
    assert settings.workers == 64
    assert settings.max_decodes == 2


def test_memory_is_released_when_the_last_job_of_a_burst_ends() -> None:
    released: list[int] = []
    tracker = BurstTracker(on_idle=lambda: released.append(1))
    with tracker.job():
        with tracker.job():
            pass
        assert released == []  # one job still runs: its memory is still in use
    assert released == [1]
    with tracker.job():
        pass
    assert released == [1, 1]
