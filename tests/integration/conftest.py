"""Fixtures of the integration tests: icefloe in this process against the session's services.

``rt`` is an :class:`icefloe.runtime.Runtime` built from ``icefloe_env`` exactly as the CLI builds
one from its environment; :func:`ingest` defines an ingestion and :func:`run` runs it once
(``icefloe.worker.run_ingestion``). Results are read back from the Iceberg table through the
runtime's catalog, and from the ledger through ``icefloe.ledger``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from icefloe import embedded

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="module")
def module_bucket(s3: embedded.SeaweedS3, s3_client: S3Client) -> Iterator[str]:
    """A bucket shared by the tests of one module that only read it (seeded once)."""
    name = f"mod-{uuid.uuid4().hex[:24]}"
    embedded.create_bucket(s3, name)
    yield name
    with contextlib.suppress(BotoCoreError, ClientError):
        s3_client.delete_bucket(Bucket=name)
