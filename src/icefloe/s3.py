"""The S3 boundary: client construction, URIs, and botocore errors translated once, here."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
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
from botocore.utils import parse_timestamp
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import MaxRetryError

from icefloe.errors import (
    ConfigurationError,
    ObjectChangedError,
    PermanentFileError,
    SourceError,
    TransientFileError,
)
from icefloe.redaction import redact_text
from icefloe.s3_listing import ListingParserFactory, use_cheap_200_check
from icefloe.settings import S3Settings

if TYPE_CHECKING:
    from icefloe.stores import Body, Entry, Location

PAGE_SIZE = 1000

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


def _timestamp(value: str) -> dt.datetime:
    """S3's ISO 8601 timestamps parsed without dateutil: botocore's default parser took 70 % of the
    CPU of a 1,000-key listing page (0.08 s of the GIL a page)."""
    try:
        return dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return parse_timestamp(value)  # another form (RFC 822 in a header, epoch seconds)


def make_client(settings: S3Settings, max_pool_connections: int = 32) -> Any:
    """A boto3 S3 client on the endpoint and region of ``settings``; credentials are its keys
    when given, else the AWS SDK's own chain (environment, profile, instance role).

    Adaptive retries absorb throttling and 5xx; path-style addressing works with every
    S3-compatible store when an endpoint is set. ListObjectsV2 responses are parsed by
    :mod:`icefloe.s3_listing` (same result, a fraction of botocore's CPU).
    """
    config = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if settings.path_style else None,
    )
    given = settings.access_key_id and settings.secret_access_key
    core = botocore.session.get_session()
    core.register_component("response_parser_factory", ListingParserFactory(timestamp_parser=_timestamp))
    session = boto3.session.Session(
        botocore_session=core,
        aws_access_key_id=settings.access_key_id if given else None,
        aws_secret_access_key=settings.secret_access_key if given else None,
        aws_session_token=settings.session_token if given else None,
    )
    client = session.client(
        "s3",
        region_name=settings.region or "us-east-1",
        endpoint_url=settings.endpoint_url,
        verify=settings.ca_bundle,
        config=config,
    )
    use_cheap_200_check(client)
    return client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


@contextmanager
def source_errors(location: S3Location, endpoint: str) -> Iterator[None]:
    """Translate errors of source-wide calls (listing) into one-line :class:`SourceError`;
    ``endpoint`` is the client's, for the message."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in ("NoSuchBucket", "404"):
            raise SourceError(f"bucket {location.bucket!r} does not exist (at {endpoint})") from exc
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
        raise SourceError(f"cannot reach the S3 endpoint {endpoint}: {exc}") from exc
    except BotoCoreError as exc:
        # botocore echoes the bucket it refused, credentials written into the URI included.
        shown = f"***@{location.bucket.rsplit('@', 1)[1]}" if "@" in location.bucket else location.bucket
        raise SourceError(f"S3 error on s3://{shown}/: {str(exc).replace(location.bucket, shown)}") from exc


@contextmanager
def object_errors(uri: str) -> Iterator[None]:
    """Translate errors of one object's boto3 request (HEAD, delete, copy) into the per-file error
    classes (reads go through obstore: :func:`icefloe.stores.cloud.object_errors`)."""
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
        raise TransientFileError(f"S3 unreachable while reading {uri}: {_cause(exc)}") from exc
    except BotoCoreError as exc:
        raise TransientFileError(f"S3 error reading {uri}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """What broke, in one line, credentials masked."""
    cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", str(cause))
    return redact_text(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)


class ObjectReader:
    """S3 as a :class:`~icefloe.stores.Store`: listing, HEAD, delete and copy through boto3; the
    object reads (``GET`` with ``If-Match: <listed ETag>``) through obstore, one store per bucket.

    The reads are the hot path of small-file ingestion: ``benchmarks/stores.py --stores s3`` measured
    0.42 s of client CPU per 1,000 GETs through obstore (in Rust, off the GIL) against 1.23 s for
    botocore's presigning plus urllib3, which this replaced.
    """

    def __init__(self, client: Any, settings: S3Settings) -> None:
        self.client = client
        self.settings = settings
        self._buckets: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _store(self, bucket: str) -> Any:
        from icefloe.stores import cloud  # obstore: loaded by the first read, not by every command

        with self._lock:
            store = self._buckets.get(bucket)
            if store is None:
                store = self._buckets[bucket] = cloud.build_s3(bucket, self.settings)
            return store

    def open(self, uri: str, etag: str) -> Body:
        """Start the GET of ``uri`` at version ``etag``; the caller reads (or streams) the body.

        Raises the per-file errors of :func:`icefloe.stores.cloud.object_errors`.
        """
        from icefloe.stores.cloud import open_body

        bucket, key = split_uri(uri)
        return open_body(self._store(bucket), key, uri, etag)

    def read(self, uri: str, etag: str) -> bytes:
        """The whole object at version ``etag``."""
        from icefloe.stores.cloud import read_whole

        bucket, key = split_uri(uri)
        return read_whole(self._store(bucket), key, uri, etag)

    def list_pages(self, location: Location, start_after: str | None = None) -> Iterator[list[Entry]]:
        """ListObjectsV2 page by page (one LIST request each, ≤ 1,000 keys), after ``start_after``."""
        from icefloe.stores import Entry

        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"StartAfter": start_after} if start_after else {}
        s3_location = S3Location(location.container, location.prefix)
        with source_errors(s3_location, self.client.meta.endpoint_url):
            for page in paginator.paginate(
                Bucket=location.container, Prefix=location.prefix, PaginationConfig={"PageSize": PAGE_SIZE}, **extra
            ):
                yield [
                    Entry(
                        key=obj["Key"],
                        size=int(obj.get("Size", 0)),
                        modified_at=obj.get("LastModified"),
                        version=str(obj.get("ETag", "")).strip('"'),
                    )
                    for obj in page.get("Contents", [])
                ]

    def delete(self, uri: str) -> None:
        bucket, key = split_uri(uri)
        with object_errors(uri):
            self.client.delete_object(Bucket=bucket, Key=key)

    def copy(self, uri: str, to_uri: str) -> None:
        bucket, key = split_uri(uri)
        to_bucket, to_key = split_uri(to_uri)
        with object_errors(uri):
            self.client.copy_object(Bucket=to_bucket, Key=to_key, CopySource={"Bucket": bucket, "Key": key})

    def current_version(self, uri: str) -> str | None:
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
