"""A local directory (or a shared file system mounted here) as a source: ``file:///path/``.

Keys are absolute paths without their leading ``/``. The listing walks the directories in key
order — siblings sorted by name, a directory as ``name/`` — so pages, ``start_after`` and the
incremental listing's watermark mean what they mean on S3. The version token is
``mtime_ns-size-inode`` in hex: a file rewritten in place (new mtime or size) or replaced by a
rename (new inode) is a new version; a read checks the open file's ``fstat`` against it, so the
bytes read are those of the listed version (a writer that keeps size and mtime escapes it, as it
escapes every mtime-based tool). Symbolic links are followed to files, not to directories (no loops).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from icefloe.errors import ObjectChangedError, PermanentFileError, SourceError, TransientFileError
from icefloe.stores import Entry, Location, directory_of

PAGE_SIZE = 1000


def version_of(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _path(uri: str) -> Path:
    if not uri.startswith("file:///"):
        raise PermanentFileError(f"{uri} is not a file:/// URI", error_type="UnreadableFile")
    return Path(uri[len("file://") :])


class _FileBody:
    """An open file as a streaming body."""

    def __init__(self, handle: BinaryIO, uri: str) -> None:
        self.handle = handle
        self.uri = uri

    def read(self, amt: int | None = None) -> bytes:
        try:
            return self.handle.read(-1 if amt is None else amt)
        except OSError as exc:
            raise TransientFileError(f"reading {self.uri} failed: {exc.strerror or exc}") from exc

    def release_conn(self) -> None:
        self.handle.close()


class LocalStore:
    """The local file system (one instance serves every ``file://`` source)."""

    def __init__(self, location: Location | None = None) -> None:
        self.location = location

    def list_pages(self, location: Location, start_after: str | None = None) -> Iterator[list[Entry]]:
        prefix = location.prefix
        top = "/" + directory_of(prefix)  # walked; keys filtered on the whole prefix
        if not os.path.isdir(top):
            if os.path.exists(top.rstrip("/")):
                raise SourceError(f"{location.base}{top.lstrip('/')} is not a directory")
            raise SourceError(f"directory {top} does not exist")
        if not os.access(top, os.R_OK | os.X_OK):
            raise SourceError(f"access to directory {top} denied (permissions)")
        page: list[Entry] = []
        for entry in self._walk(top, prefix, start_after):
            page.append(entry)
            if len(page) == PAGE_SIZE:
                yield page
                page = []
        yield page

    def _walk(self, directory: str, prefix: str, start_after: str | None) -> Iterator[Entry]:
        try:
            with os.scandir(directory) as it:
                children = sorted(((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in it)
        except PermissionError as exc:
            raise SourceError(f"access to directory {directory} denied (permissions)") from exc
        except FileNotFoundError:
            return  # removed while listing: nothing below it any more
        for name, child in children:
            key = (directory + name).lstrip("/")
            # Skip whole subtrees outside the prefix or at/before start_after.
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if name.endswith("/"):
                if start_after is not None and key <= start_after and not start_after.startswith(key):
                    continue
                yield from self._walk(directory + name, prefix, start_after)
                continue
            if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                continue
            try:
                st = child.stat(follow_symlinks=True)
            except FileNotFoundError:
                continue  # removed (or a dangling link) while listing
            if not os.path.isfile(child.path):
                continue
            modified = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=dt.UTC)
            yield Entry(key=key, size=st.st_size, modified_at=modified, version=version_of(st))

    def open(self, uri: str, version: str) -> _FileBody:
        path = _path(uri)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing") from exc
        except PermissionError as exc:
            raise PermanentFileError(f"access denied reading {uri} (permissions)", error_type="AccessDenied") from exc
        except IsADirectoryError as exc:
            raise ObjectChangedError(f"{uri} changed after it was listed (now a directory)") from exc
        except OSError as exc:
            raise TransientFileError(f"opening {uri} failed: {exc.strerror or exc}") from exc
        if version_of(os.fstat(handle.fileno())) != version:
            handle.close()
            raise ObjectChangedError(f"{uri} changed after it was listed")
        return _FileBody(handle, uri)

    def read(self, uri: str, version: str) -> bytes:
        body = self.open(uri, version)
        try:
            return body.read()
        finally:
            body.release_conn()

    def current_version(self, uri: str) -> str | None:
        try:
            return version_of(_path(uri).stat())
        except FileNotFoundError:
            return None

    def delete(self, uri: str) -> None:
        try:
            _path(uri).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            kind = "AccessDenied" if exc.errno in (errno.EACCES, errno.EPERM) else "DeleteFailed"
            raise PermanentFileError(f"deleting {uri} failed: {exc.strerror or exc}", error_type=kind) from exc

    def copy(self, uri: str, to_uri: str) -> None:
        import shutil

        target = _path(to_uri)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copy beside the target, then rename: a reader never sees half a file.
            partial = target.with_name(f".{target.name}.icefloe-partial")
            shutil.copyfile(_path(uri), partial)
            os.replace(partial, target)
        except FileNotFoundError as exc:
            raise PermanentFileError(f"{uri} no longer exists", error_type="ObjectMissing") from exc
        except OSError as exc:
            raise PermanentFileError(f"copying {uri} failed: {exc.strerror or exc}", error_type="CopyFailed") from exc
