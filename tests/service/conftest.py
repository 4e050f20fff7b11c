"""Fixtures of the service tests: a small catalog of bundled references, seeded listing photos,
an in-process client and a real `imgmatch serve` on a loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import API_KEY, INDEXED, READY_TIMEOUT_S, REFERENCES

from imgmatch.catalog import Catalog
from imgmatch.indexing import index_references
from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture(scope="session")
def indexed_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog of the INDEXED references (absolute paths, so thumbnails work from any cwd)."""
    directory = tmp_path_factory.mktemp("catalog-template")
    with Catalog(directory) as catalog:
        report = index_references(
            catalog,
            [REFERENCES / name for name in INDEXED],
            metadata_csv=REFERENCES / "metadata.csv",
        )
    assert report.added == len(INDEXED)
    return directory


@pytest.fixture
def catalog_dir(indexed_catalog: Path, tmp_path: Path) -> Path:
    """A private copy of the catalog: tests that add and delete never affect each other."""
    directory = tmp_path / "catalog"
    shutil.copytree(indexed_catalog, directory)
    return directory


@pytest.fixture
def make_client(catalog_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start the app in process over the test catalog with these settings; wait until ready."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> TestClient:
            values: dict[str, Any] = {"catalog": catalog_dir, "api_key": API_KEY, **overrides}
            client = stack.enter_context(TestClient(create_app(ServiceSettings(**values))))
            client.app.state.service.wait_loaded(READY_TIMEOUT_S)  # type: ignore[attr-defined]
            return client

        yield start


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    port: int
    catalog: Path
    tmpdir: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def start_live_server(catalog_dir: Path, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start `imgmatch serve` in a subprocess on 127.0.0.1 with these IMGMATCH_* settings (given
    as lower-case names), with its own TMPDIR to watch for spools; stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> LiveServer:
        port = _free_port()
        tmpdir = tmp_path / f"server-tmp-{len(processes)}"
        tmpdir.mkdir()
        env = {
            **os.environ,
            "IMGMATCH_API_KEY": API_KEY,
            "TMPDIR": str(tmpdir),
            "IMGMATCH_LOG_LEVEL": "WARNING",
            **{f"IMGMATCH_{name.upper()}": value for name, value in settings.items()},
        }
        # The installed console script, exactly as an operator runs it.
        script = Path(sys.executable).with_name("imgmatch")
        command = [str(script), "serve", "--catalog", str(catalog_dir)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server exited: {stderr[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in time")
            time.sleep(0.1)
        return LiveServer(url, process, port, catalog_dir, tmpdir)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def live_server(start_live_server: Callable[..., LiveServer]) -> LiveServer:
    """`imgmatch serve` with the default settings."""
    return start_live_server()
