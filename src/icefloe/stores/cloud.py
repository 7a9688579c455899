"""Object stores through ``obstore`` (Rust's ``object_store``): Google Cloud Storage and Azure Blob
Storage whole, and the object reads of S3 (:mod:`icefloe.s3` lists with boto3).

One store per bucket or container. Listing pages come from ``obstore.list`` in key order; reads are
``GET`` with ``If-Match: <listed ETag>`` and, because an emulator (or a proxy) may ignore the header,
the ETag of the response is compared with the listed one as well: what is read is what was listed.
obstore's errors are translated here, once, into icefloe's (one line, no Rust debug dump).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import (
    BaseError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from icefloe.errors import (
    ConfigurationError,
    ObjectChangedError,
    PermanentFileError,
    SourceError,
    TransientFileError,
)
from icefloe.redaction import redact_text
from icefloe.stores import Entry, Location, directory_of

if TYPE_CHECKING:
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, RetryConfig, S3Config

    from icefloe.settings import S3Settings, Settings

PAGE_SIZE = 1000
STREAM_CHUNK = 8 << 20
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_HOST = re.compile(r"\b(https?://[^/\s?]+)")


# object_store retries 5xx and connection errors itself; bounded so that an unreachable endpoint
# fails a run in seconds, not after its default 3 minutes.
_RETRY: RetryConfig = {"max_retries": 3, "retry_timeout": dt.timedelta(seconds=20)}


def _client_options() -> ClientConfig:
    # A stalled read fails after 60 s; the whole request may take as long as a large object needs
    # (object_store's default 30 s for the whole request would cut a 1 GB stream).
    return {
        "connect_timeout": dt.timedelta(seconds=5),
        "read_timeout": dt.timedelta(seconds=60),
        "timeout": dt.timedelta(hours=6),
    }


def build_s3(bucket: str, s3: S3Settings) -> Any:
    """The obstore store of an S3 bucket, configured as icefloe's boto3 clients are (endpoint,
    region, path-style with an endpoint, CA bundle); without keys the credentials come from boto3's
    own chain (profile, instance role), refreshed through it."""
    from obstore.store import S3Store

    client = _client_options()
    config: S3Config = {"region": s3.region or "us-east-1"}
    if s3.endpoint_url:
        config["endpoint"] = s3.endpoint_url.rstrip("/")
        client["allow_http"] = s3.endpoint_url.startswith("http://")
    else:
        # AWS: virtual-hosted, as boto3 does, except for a bucket with a dot in its name (its
        # host name would not match the wildcard certificate).
        config["virtual_hosted_style_request"] = "." not in bucket
    if s3.ca_bundle:
        client["root_certificate"] = Path(s3.ca_bundle).read_text()
    if s3.access_key_id and s3.secret_access_key:
        config["access_key_id"] = s3.access_key_id
        config["secret_access_key"] = s3.secret_access_key
        if s3.session_token:
            config["session_token"] = s3.session_token
        return S3Store(bucket, config=config, client_options=client, retry_config=_RETRY)
    import boto3
    from obstore.auth.boto3 import Boto3CredentialProvider

    try:
        provider = Boto3CredentialProvider(boto3.session.Session())
    except ValueError as exc:  # "Received None from session.get_credentials"
        raise ConfigurationError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        ) from exc
    return S3Store(bucket, config=config, client_options=client, retry_config=_RETRY, credential_provider=provider)


def build(location: Location, settings: Settings) -> Any:
    """The obstore store of ``location``'s bucket or container, credentials from ``settings``."""
    client = _client_options()
    if location.scheme == "gs":
        from obstore.store import GCSStore

        gcs = settings.gcs
        if gcs.emulator_host:
            client["allow_http"] = gcs.emulator_host.startswith("http://")
            # object_store's own emulator form (its tests' fake-gcs-server): a key without OAuth, so no
            # request ever goes for a token (skip_signature alone still fetches one to delete).
            emulator_key = {"gcs_base_url": gcs.emulator_host.rstrip("/"), "disable_oauth": True}
            key = json.dumps(emulator_key | {"client_email": "", "private_key": "", "private_key_id": ""})
            emulated: GCSConfig = {"service_account_key": key}
            return GCSStore(location.container, config=emulated, client_options=client, retry_config=_RETRY)
        google: GCSConfig = {"application_credentials": gcs.credentials_file} if gcs.credentials_file else {}
        return GCSStore(location.container, config=google, client_options=client, retry_config=_RETRY)
    from obstore.store import AzureStore

    az = settings.azure
    account = location.account or az.account
    if not account:
        raise ConfigurationError(
            f"no Azure storage account for {location.base}: set AZURE_STORAGE_CONNECTION_STRING or "
            "AZURE_STORAGE_ACCOUNT, or use abfss://container@account.dfs.core.windows.net/"
        )
    config: AzureConfig = {"account_name": account}
    if az.blob_endpoint and (location.account is None or location.account == az.account):
        config["endpoint"] = az.blob_endpoint.rstrip("/")
        client["allow_http"] = az.blob_endpoint.startswith("http://")
    if az.account_key and account == az.account:
        config["account_key"] = az.account_key
    elif az.sas_token and account == az.account:
        config["sas_key"] = az.sas_token.lstrip("?")
    return AzureStore(location.container, config=config, client_options=client, retry_config=_RETRY)


_MESSAGE = re.compile(r"<Message>([^<]*)</Message>|\"message\":\s*\"([^\"]*)\"")


def _first_line(exc: BaseException) -> str:
    """What obstore's error says, in one short line: the HTTP status and the server's message when
    it answered, else the first line (its Rust debug dump dropped); credentials and query strings masked."""
    text = str(exc).split("Debug source:", 1)[0]
    status, code = _status(exc)
    found = _MESSAGE.search(text)
    if status is not None:
        message = (found.group(1) or found.group(2)).split("\n")[0] if found else ""
        code = f" {code}" if code and code != str(status) else ""
        text = f"HTTP {status}{code}" + (f": {message}" if message else "")
    return redact_text(" ".join(text.split()))[:240]


def _status(exc: BaseException) -> tuple[int | None, str]:
    text = str(exc)
    status, code = _STATUS.search(text), _CODE.search(text)
    return (int(status.group(1)) if status else None), (code.group(1) if code else "")


def _name(location: Location) -> str:
    return "container" if location.scheme == "az" else "bucket"


@contextmanager
def source_errors(location: Location) -> Iterator[None]:
    """Listing errors as one-line :class:`SourceError`: missing bucket/container, denied, unreachable."""
    what = f"{_name(location)} {location.container!r}"
    try:
        yield
    except (PermissionDeniedError, UnauthenticatedError, PermissionError) as exc:
        raise SourceError(f"access to {location.base} denied: {_first_line(exc)}") from exc
    except FileNotFoundError as exc:
        raise SourceError(f"{what} does not exist ({location.base})") from exc
    except InvalidPathError as exc:
        # object_store refuses some names the store accepts (an empty segment: a//b) and ends the
        # listing there (obstore#429); say which object, and what the user can do about it.
        raise SourceError(
            f"listing {location.root} failed: {_first_line(exc)}; rename that object or use a prefix "
            "that leaves it out (obstore cannot list such names: obstore#429)"
        ) from exc
    except BaseError as exc:
        status, code = _status(exc)
        if status == 404 or code in ("ContainerNotFound", "NoSuchBucket"):
            raise SourceError(f"{what} does not exist ({location.base})") from exc
        if status in (401, 403):
            raise SourceError(f"access to {location.base} denied ({code or status}): check the credentials") from exc
        if status is None and "error sending request" in str(exc):
            host = _HOST.search(str(exc))
            at = f" at {host.group(1)}" if host else ""
            raise SourceError(f"cannot reach the storage endpoint of {location.base}{at} (no connection)") from exc
        raise SourceError(f"listing {location.root} failed: {_first_line(exc)}") from exc


@contextmanager
def object_errors(uri: str) -> Iterator[None]:
    """Errors of one object's GET as the per-file error classes."""
    try:
        yield
    except PreconditionError as exc:
        raise ObjectChangedError(f"{uri} changed after it was listed") from exc
    except (NotFoundError, FileNotFoundError) as exc:  # obstore raises the builtin one for a missing object
        raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing") from exc
    except (PermissionDeniedError, UnauthenticatedError, PermissionError) as exc:
        raise PermanentFileError(f"access denied reading {uri}", error_type="AccessDenied") from exc
    except BaseError as exc:
        status, _ = _status(exc)
        if status == 412:
            raise ObjectChangedError(f"{uri} changed after it was listed") from exc
        if status in (401, 403):
            raise PermanentFileError(f"access denied reading {uri} (HTTP {status})", error_type="AccessDenied") from exc
        raise TransientFileError(f"storage error reading {uri}: {_first_line(exc)}") from exc


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


class _StreamBody:
    """obstore's chunk stream as a ``read(n)`` body: ``n`` bytes (fewer only at the end), sliced out
    of the current chunk without copying the rest of it."""

    def __init__(self, chunks: Any, uri: str) -> None:
        self.chunks = chunks
        self.uri = uri
        self.pending = memoryview(b"")
        self.done = False

    def read(self, amt: int | None = None) -> bytes:
        parts: list[bytes] = []
        wanted = -1 if amt is None else amt
        while wanted != 0:
            if not self.pending:
                if self.done:
                    break
                with object_errors(self.uri):
                    chunk = next(self.chunks, None)
                if chunk is None:
                    self.done = True
                    continue
                self.pending = memoryview(chunk)
            take = len(self.pending) if wanted < 0 else min(wanted, len(self.pending))
            parts.append(bytes(self.pending[:take]))
            self.pending = self.pending[take:]
            wanted = wanted if wanted < 0 else wanted - take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release_conn(self) -> None:
        self.done = True
        self.pending = memoryview(b"")


def head_version(store: Any, key: str, uri: str) -> str | None:
    """The object's version token now (a HEAD), or None when it is gone."""
    try:
        with object_errors(uri):
            return _etag(obstore.head(store, key).get("e_tag"))
    except PermanentFileError as exc:
        if exc.error_type == "ObjectMissing":
            return None
        raise


def _get(store: Any, key: str, uri: str, version: str) -> Any:
    """GET at ``version``. A failed precondition is a change, unless the object is gone (Azurite,
    like HTTP, answers 412 to If-Match on a deleted blob): then it is missing, not re-listed forever."""
    try:
        with object_errors(uri):
            result = obstore.get(store, key, options={"if_match": f'"{version}"'})
    except ObjectChangedError:
        if head_version(store, key, uri) is None:
            raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing") from None
        raise
    served = _etag(result.meta.get("e_tag"))
    if served and served != version:
        raise ObjectChangedError(f"{uri} changed after it was listed")
    return result


def open_body(store: Any, key: str, uri: str, version: str) -> _StreamBody:
    """Start streaming the object at ``version`` (``key`` in ``store``; ``uri`` names it in errors)."""
    return _StreamBody(iter(_get(store, key, uri, version).stream(min_chunk_size=STREAM_CHUNK)), uri)


def read_whole(store: Any, key: str, uri: str, version: str) -> bytes:
    """The whole object at ``version``."""
    result = _get(store, key, uri, version)
    with object_errors(uri):
        return bytes(result.bytes())


class CloudStore:
    """A GCS bucket or an Azure container."""

    def __init__(self, location: Location, settings: Settings) -> None:
        self.location = location
        self.store = build(location, settings)

    def _key(self, uri: str) -> str:
        try:
            return self.location.key_of(uri)
        except ValueError:
            raise PermanentFileError(f"{uri} is not in {self.location.base}", error_type="UnreadableFile") from None

    def list_pages(self, location: Location, start_after: str | None = None) -> Iterator[list[Entry]]:
        prefix = location.prefix
        directory = directory_of(prefix)  # object_store lists whole path segments
        with source_errors(location):
            stream = obstore.list(
                self.store, directory.rstrip("/") or None, offset=start_after or None, chunk_size=PAGE_SIZE
            )
            yielded = False
            for chunk in stream:
                page = [
                    Entry(key=m["path"], size=int(m["size"]), modified_at=m["last_modified"], version=_etag(m["e_tag"]))
                    for m in chunk
                    # the server may ignore start-after (Azure has none): filtered here as well
                    if m["path"].startswith(prefix) and (start_after is None or m["path"] > start_after)
                ]
                yielded = True
                yield page
            if not yielded:
                yield []

    def open(self, uri: str, version: str) -> _StreamBody:
        return open_body(self.store, self._key(uri), uri, version)

    def read(self, uri: str, version: str) -> bytes:
        return read_whole(self.store, self._key(uri), uri, version)

    def current_version(self, uri: str) -> str | None:
        return head_version(self.store, self._key(uri), uri)

    def delete(self, uri: str) -> None:
        try:
            with object_errors(uri):
                obstore.delete(self.store, self._key(uri))
        except PermanentFileError as exc:
            if exc.error_type != "ObjectMissing":
                raise

    def copy(self, uri: str, to_uri: str) -> None:
        with object_errors(uri):
            obstore.copy(self.store, self._key(uri), self._key(to_uri))
