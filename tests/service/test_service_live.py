"""`imgmatch serve` as a real process on a loopback port: body cap, event-loop health under load,
and concurrent writes and checks."""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import LiveServer
from PIL import Image
from service_helpers import API_KEY, REFERENCES, jpeg_bytes, listing_with, open_files_under

pytestmark = pytest.mark.slow

HUGE_BYTES = 200 * 1024 * 1024
CHUNK = 256 * 1024


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        parts.append(value.encode() + b"\r\n")
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _huge_upload(server: LiveServer, *, chunked: bool) -> tuple[int, int]:
    """Send up to 200 MB of upload, stopping as soon as an answer arrives: (status, bytes sent)."""
    boundary = "cap"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff\xd8\xff"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE_BYTES}"
    request = (
        f"POST /v1/checks HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        payload = head
        while sent < HUGE_BYTES:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            data = payload + bytes(CHUNK - len(payload))
            payload = b""
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                sock.sendall(frame)
            except OSError:
                break
            sent += len(data)
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200mb_upload_is_413_and_leaves_no_file(live_server: LiveServer, chunked: bool) -> None:
    catalog_files = {p for p in live_server.catalog.rglob("*")}
    status, sent = _huge_upload(live_server, chunked=chunked)
    assert status == 413
    # Answered at the cap, not after the whole body: at most the cap plus what was in flight.
    assert sent < 40 * 1024 * 1024
    # A chunked body was spooled up to the cap; the spool goes with the answer.
    deadline = time.monotonic() + 5
    while open_files_under(live_server.process.pid, live_server.tmpdir):
        assert time.monotonic() < deadline, "a refused upload's spool is still open"
        time.sleep(0.05)
    assert list(live_server.tmpdir.iterdir()) == []
    assert {p for p in live_server.catalog.rglob("*")} <= catalog_files | {
        p for p in live_server.catalog.glob("catalog.sqlite3*")
    }
    assert _request(f"{live_server.url}/healthz")[0] == 200


def test_healthz_stays_fast_under_16_concurrent_large_checks(live_server: LiveServer) -> None:
    rng = np.random.default_rng(7)
    large = jpeg_bytes(listing_with("D004_0.jpg", rng, scale=3.0), quality=95)
    body, content_type = _multipart({}, [("image", "large.jpg", large)])
    latencies: list[float] = []
    # Collected here and asserted after the join: an assert inside the thread would only end
    # the thread, never the test.
    statuses: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            start = time.perf_counter()
            status, _ = _request(f"{live_server.url}/healthz")
            latencies.append(time.perf_counter() - start)
            statuses.append(status)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            url = f"{live_server.url}/v1/checks"
            futures = [
                pool.submit(_request, url, "POST", body, {"Content-Type": content_type})
                for _ in range(16)
            ]
            results = [f.result() for f in futures]
    finally:
        done.set()
        poller.join()
    assert all(status == 200 for status, _ in results)
    assert all(r["results"][0]["flagged"] for _, r in results)
    assert set(statuses) == {200}, statuses
    assert len(latencies) >= 10
    p99 = float(np.percentile(latencies, 99))
    print(f"/healthz p99 {p99 * 1000:.1f} ms over {len(latencies)} polls during 16 checks")
    assert p99 < 0.2, f"/healthz p99 {p99 * 1000:.0f} ms over {len(latencies)} polls"


def test_concurrent_adds_deletes_and_checks(live_server: LiveServer) -> None:
    """For a bounded time, add and delete references while checking: no 5xx, and no check
    reports a reference that had already been deleted when the check was sent."""
    rng = np.random.default_rng(11)
    url = live_server.url
    # Listings copy two designs: one never deleted (D037), one that comes and goes (D015).
    listing = jpeg_bytes(listing_with("D015_0.jpg", rng))
    check_body, check_type = _multipart({}, [("image", "l.jpg", listing)])
    with Image.open(REFERENCES / "D015_0.jpg") as image:
        photo = np.asarray(image.convert("RGB"))
    deleted: set[int] = set()
    lock = threading.Lock()
    failures: list[str] = []
    stop_at = time.monotonic() + 4.0
    writes = {"added": 0, "deleted": 0}
    checks = {"count": 0, "matched": 0}

    def reported(work: Callable[..., None]) -> Callable[..., None]:
        """`work`, with any exception it raises recorded as a failure: raised in a thread, it
        would end the thread and go unseen by the test."""

        def run(*args: object) -> None:
            try:
                work(*args)
            except Exception as exc:
                failures.append(f"{work.__name__} raised {exc!r}")

        return run

    def writer(seed: int) -> None:
        local = random.Random(seed)
        serial = 0
        while time.monotonic() < stop_at:
            # A unique mark in one corner: new bytes each time, so each add is a new reference.
            serial += 1
            marked = photo.copy()
            marked[:8, :8] = (seed * 97 + serial * 13) % 256
            variant = jpeg_bytes(marked)
            body, ctype = _multipart({"design": "D015"}, [("image", "r.jpg", variant)])
            status, reference = _request(
                f"{url}/v1/references", "POST", body, {"Content-Type": ctype, "X-API-Key": API_KEY}
            )
            if status != 201:
                failures.append(f"add {status} {reference}")
                continue
            writes["added"] += 1
            time.sleep(local.random() * 0.2)
            status, _ = _request(
                f"{url}/v1/references/{reference['reference_id']}",
                "DELETE",
                headers={"X-API-Key": API_KEY},
            )
            if status != 200:
                failures.append(f"delete {status}")
            with lock:
                # Marked once the delete has answered: a check sent after this may not report
                # it. (Marked before the request, a check sent meanwhile could be served before
                # the delete, and rightly report the reference.)
                deleted.add(reference["reference_id"])
            writes["deleted"] += 1

    def checker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                gone_before = set(deleted)
            status, data = _request(
                f"{url}/v1/checks", "POST", check_body, {"Content-Type": check_type}
            )
            if status != 200:
                failures.append(f"check {status} {data}")
                continue
            checks["count"] += 1
            for match in data["results"][0]["matches"]:
                checks["matched"] += 1
                if match["reference_id"] in gone_before:
                    failures.append(f"check reported deleted reference {match['reference_id']}")

    threads = [threading.Thread(target=reported(writer), args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=reported(checker)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer or checker hung"
    assert not failures, failures[:5]
    assert writes["added"] >= 2 and checks["count"] >= 3
    assert live_server.process.poll() is None
    # Every reference left in the catalog is one that was never deleted.
    status, page = _request(f"{url}/v1/references?limit=200")
    assert status == 200
    assert not {r["reference_id"] for r in page["items"]} & deleted
