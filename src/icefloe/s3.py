"""The S3 boundary: client construction, URIs, and botocore errors translated once, here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from icefloe.errors import (
    ConfigurationError,
    ObjectChangedError,
    PermanentFileError,
    SourceError,
    TransientFileError,
)

_TRANSIENT_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"}


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split in two."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise ConfigurationError(f"source must look like s3://bucket/prefix/, got {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        return cls(bucket, prefix)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    loc = S3Location.parse(uri)
    return loc.bucket, loc.prefix


def make_client(max_pool_connections: int = 32) -> Any:
    """A boto3 S3 client configured by the AWS SDK's own environment (incl. ``AWS_ENDPOINT_URL``).

    Adaptive retries absorb throttling and 5xx; path-style addressing works with every
    S3-compatible store when an endpoint is set.
    """
    config = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if os.environ.get("AWS_ENDPOINT_URL") else None,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", region_name=region, config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"


@contextmanager
def source_errors(location: S3Location) -> Iterator[None]:
    """Translate errors of source-wide calls (listing) into one-line :class:`SourceError`."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in ("NoSuchBucket", "404"):
            raise SourceError(f"bucket {location.bucket!r} does not exist (at {_endpoint()})") from exc
        if code in _AUTH_CODES:
            raise SourceError(
                f"access to s3://{location.bucket}/ denied ({code}): check AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or the profile"
            ) from exc
        raise SourceError(f"listing s3://{location.bucket}/{location.prefix} failed: {code}: {exc}") from exc
    except NoCredentialsError as exc:
        raise ConfigurationError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        ) from exc
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise SourceError(f"cannot reach the S3 endpoint {_endpoint()}: {exc}") from exc
    except BotoCoreError as exc:
        raise SourceError(f"S3 error on s3://{location.bucket}/: {exc}") from exc


@contextmanager
def object_errors(uri: str) -> Iterator[None]:
    """Translate errors of one object's GET into the per-file error classes."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in ("PreconditionFailed", "412"):
            raise ObjectChangedError(f"{uri} changed after it was listed") from exc
        if code in ("NoSuchKey", "404"):
            raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing") from exc
        if code in _TRANSIENT_CODES:
            raise TransientFileError(f"S3 error {code} reading {uri}") from exc
        if code in _AUTH_CODES:
            raise PermanentFileError(f"access denied reading {uri} ({code})", error_type="AccessDenied") from exc
        raise TransientFileError(f"S3 error {code} reading {uri}") from exc
    except (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
        ResponseStreamingError,
        Urllib3HTTPError,
        ConnectionError,
    ) as exc:
        raise TransientFileError(f"S3 unreachable while reading {uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientFileError(f"S3 error reading {uri}: {exc}") from exc


# Presigned URLs are valid this long; a GET starts right after signing.
_PRESIGN_SECONDS = 900


class ObjectReader:
    """Conditional GETs of listed objects: ``If-Match: <listed ETag>``, so what is read is what was listed.

    botocore signs a presigned URL (endpoint resolution, credentials chain, addressing style all
    stay botocore's) and urllib3 fetches it. Measured on 2,000 small objects against SeaweedFS on
    2 cores: 4.2 s and 3.3 s of CPU, against 10 s and 6.5 s of CPU through ``client.get_object``,
    whose per-request Python overhead made it the bottleneck of small-file ingestion.
    """

    def __init__(self, client: Any, max_connections: int = 32) -> None:
        self.client = client
        retries = urllib3.Retry(
            total=5,
            backoff_factor=0.2,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=("GET",),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.pool = urllib3.PoolManager(
            maxsize=max_connections,
            retries=retries,
            timeout=urllib3.Timeout(connect=5, read=60),
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or None,
        )

    def open(self, uri: str, etag: str) -> urllib3.BaseHTTPResponse:
        """Start the GET of ``uri`` at version ``etag``; the caller reads (or streams) the body.

        Raises the per-file errors of :func:`object_errors`.
        """
        bucket, key = split_uri(uri)
        with object_errors(uri):
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=_PRESIGN_SECONDS
            )
            response = self.pool.request("GET", url, headers={"If-Match": f'"{etag}"'}, preload_content=False)
        if response.status == 200:
            return response
        body = response.read(2048)
        response.release_conn()
        status = response.status
        if status == 412:
            raise ObjectChangedError(f"{uri} changed after it was listed")
        if status == 404:
            raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing")
        if status == 403:
            raise PermanentFileError(f"access denied reading {uri} (HTTP 403)", error_type="AccessDenied")
        detail = body.decode("utf-8", "replace").split("<Code>")[-1].split("</Code>")[0][:100]
        raise TransientFileError(f"S3 answered HTTP {status} ({detail}) reading {uri}")

    def current_etag(self, uri: str) -> str | None:
        """The object's ETag now (a HEAD), or None when it is gone: for engines that cannot read
        conditionally, to check after reading that they read the listed version."""
        bucket, key = split_uri(uri)
        try:
            with object_errors(uri):
                head = self.client.head_object(Bucket=bucket, Key=key)
        except PermanentFileError as exc:
            if exc.error_type == "ObjectMissing":
                return None
            raise
        return str(head.get("ETag", "")).strip('"')

    def read(self, uri: str, etag: str) -> bytes:
        """The whole object at version ``etag``."""
        response = self.open(uri, etag)
        with object_errors(uri):
            try:
                return response.read()
            finally:
                response.release_conn()
