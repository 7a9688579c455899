"""Object stores behind one small interface: S3, Google Cloud Storage, Azure Blob Storage, a local directory.

A source URI names its store (:func:`parse_source`); :func:`open_store` builds the store from the
settings. Every store lists in key order, page by page, each object with its *version token* (the
value the ledger keeps in ``etag`` and that a read must match):

- S3, ``s3://bucket/prefix/``: the ETag; read with ``If-Match`` (through obstore; listed with boto3).
- GCS, ``gs://bucket/prefix/``: the ETag of the listing (the content's MD5 for a plain upload);
  read with ``If-Match``, and the ETag served compared.
- Azure, ``az://container/prefix/`` or ``abfs[s]://container@account.dfs.core.windows.net/prefix/``:
  the ETag; read with ``If-Match``, and the ETag served compared.
- local, ``file:///path/``: ``mtime_ns-size-inode`` in hex; the open file's ``fstat`` compared.

A read of a version that is no longer the object's raises :class:`~icefloe.errors.ObjectChangedError`
(the file goes back to DISCOVERED); a vanished object, :class:`~icefloe.errors.PermanentFileError`
``ObjectMissing``. Errors of source-wide calls (listing) are one-line :class:`~icefloe.errors.SourceError`.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from icefloe.errors import ConfigurationError
from icefloe.redaction import redact_uri

if TYPE_CHECKING:
    from icefloe.settings import Settings

__all__ = ["SCHEMES", "Body", "Entry", "Location", "Store", "directory_of", "open_store", "parse_source"]

SCHEMES = ("s3", "gs", "az", "file")
_AZURE_DFS = ".dfs.core.windows.net"
_AZURE_BLOB = ".blob.core.windows.net"


@dataclass(frozen=True)
class Location:
    """A source split into its store and key prefix.

    ``scheme``: ``s3``, ``gs``, ``az`` or ``file``; ``container``: the bucket or container (empty
    for ``file``); ``account``: the Azure storage account an ``abfs[s]://`` URI names (None: the
    configured one); ``base``: what a key is appended to for its ledger URI (``s3://bucket/``,
    ``file:///``). For ``file``, a key is the absolute path without its leading ``/``.
    """

    scheme: str
    container: str
    prefix: str
    base: str
    account: str | None = None

    def uri(self, key: str) -> str:
        return self.base + key

    @property
    def root(self) -> str:
        return self.uri(self.prefix)

    def key_of(self, uri: str) -> str:
        """The key of one of this store's URIs (ValueError if it is another store's)."""
        if not uri.startswith(self.base):
            raise ValueError(f"{uri!r} is not below {self.base!r}")
        return uri[len(self.base) :]


def parse_source(uri: str) -> Location:
    """Split a source URI; anything else is a :class:`ConfigurationError` naming the forms."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme in ("s3", "gs", "az"):
        container, _, prefix = rest.partition("/")
        # s3://key:secret@bucket/ stays accepted as before (masked wherever it is shown).
        if container and ("@" not in container or scheme == "s3"):
            return Location(scheme, container, prefix, f"{scheme}://{container}/")
    elif scheme in ("abfs", "abfss"):
        authority, _, prefix = rest.partition("/")
        container, at, host = authority.partition("@")
        account = host.split(".", 1)[0]
        if container and at and account and host.endswith((_AZURE_DFS, _AZURE_BLOB)):
            return Location("az", container, prefix, f"{scheme}://{authority}/", account=account)
    elif scheme == "file":
        path = urllib.parse.unquote(rest)
        if path.startswith("/") and "\x00" not in path:
            return Location("file", "", path.lstrip("/"), "file:///")
    raise ConfigurationError(
        "source must look like s3://bucket/prefix/, gs://bucket/prefix/, az://container/prefix/, "
        f"abfss://container@account.dfs.core.windows.net/prefix/ or file:///path/, got {redact_uri(uri)!r}"
        + (
            " (credentials go in the environment, never in the URI)"
            if "@" in uri and scheme in ("s3", "gs", "az")
            else ""
        )
    )


def directory_of(prefix: str) -> str:
    """The deepest directory (``a/b/``, or ``""``) a key prefix names: stores that list whole path
    segments list it and keep the keys that start with the prefix."""
    return prefix if prefix.endswith("/") else prefix.rpartition("/")[0] + "/" if "/" in prefix else ""


class Entry(NamedTuple):
    """One listed object: its key, size, last modification and version token (a named tuple, made
    once per listed key)."""

    key: str
    size: int
    modified_at: dt.datetime | None
    version: str


class Body(Protocol):
    """A streaming object body (a file, a chunk stream)."""

    def read(self, amt: int | None = None) -> bytes: ...

    def release_conn(self) -> None:
        """Give the connection (or file) back; the body is not read after this."""
        ...


class Store(Protocol):
    """One bucket or container (or the local file system), as icefloe reads and cleans it."""

    def list_pages(self, location: Location, start_after: str | None = None) -> Iterator[list[Entry]]:
        """The objects below ``location``'s prefix in key order (after the key ``start_after``), one
        LIST page at a time; raises :class:`~icefloe.errors.SourceError` (missing bucket, denied, unreachable)."""
        ...

    def read(self, uri: str, version: str) -> bytes:
        """The whole object at ``version``."""
        ...

    def open(self, uri: str, version: str) -> Body:
        """Start reading the object at ``version``; the caller reads and then releases the body."""
        ...

    def current_version(self, uri: str) -> str | None:
        """The object's version token now, or None when it is gone."""
        ...

    def delete(self, uri: str) -> None:
        """Delete the object (gone already is fine)."""
        ...

    def copy(self, uri: str, to_uri: str) -> None:
        """Copy the object to another key of this store."""
        ...


def open_store(location: Location, settings: Settings, *, max_connections: int = 32) -> Store:
    """The store ``location`` names, configured from ``settings`` (the store's module imported only now)."""
    if location.scheme == "s3":
        from icefloe.s3 import ObjectReader, make_client

        return ObjectReader(make_client(settings.s3, max_pool_connections=max_connections), settings.s3)
    if location.scheme == "file":
        from icefloe.stores.local import LocalStore

        return LocalStore(location)
    from icefloe.stores.cloud import CloudStore

    return CloudStore(location, settings)
