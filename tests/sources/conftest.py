"""Fixtures of the source tests: the GCS emulator, Azurite and a local directory, each as a
:class:`Source` (a fresh bucket, container or directory per test) that the same tests run against."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from icefloe.runtime import Runtime
from icefloe.settings import Settings
from tests.support.emulators import Azurite, FakeGcs, Source, touch_later


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    server = FakeGcs.start(tmp_path_factory.mktemp("fake-gcs") / "log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite.start(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


def _gcs_source(server: FakeGcs) -> Source:
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    server.create_bucket(bucket)
    return Source(
        "gs",
        f"gs://{bucket}/",
        lambda key, body: server.put(bucket, key, body),
        {"STORAGE_EMULATOR_HOST": server.endpoint},
    )


def _azure_source(server: Azurite) -> Source:
    container = f"test-{uuid.uuid4().hex[:20]}"
    server.create_container(container)
    return Source(
        "az",
        f"az://{container}/",
        lambda key, body: server.put(container, key, body),
        {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string},
    )


def _local_source(root: Path) -> Source:
    def put(key: str, body: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        touch_later(path, body)

    return Source("file", f"file://{root.resolve()}/", put, {})


@pytest.fixture(params=["gs", "az", "file"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    """A fresh, empty prefix on each store in turn."""
    if request.param == "gs":
        return _gcs_source(request.getfixturevalue("fake_gcs"))
    if request.param == "az":
        return _azure_source(request.getfixturevalue("azurite"))
    (tmp_path / "files").mkdir()
    return _local_source(tmp_path / "files")


@pytest.fixture
def source_env(icefloe_env: dict[str, str], source: Source) -> dict[str, str]:
    return icefloe_env | source.env


@pytest.fixture
def rt(source_env: dict[str, str]) -> Iterator[Runtime]:
    runtime = Runtime.open(Settings.from_env(source_env))
    try:
        yield runtime
    finally:
        runtime.close()
