"""The local directory store on a temporary directory: key order, links, version tokens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from icefloe.errors import ObjectChangedError, SourceError
from icefloe.stores import parse_source
from icefloe.stores.local import LocalStore


def _keys(root: Path, start_after: str | None = None, suffix: str = "") -> list[str]:
    location = parse_source(f"file://{root}/{suffix}")
    below = str(root).lstrip("/") + "/"
    return [e.key.removeprefix(below) for p in LocalStore().list_pages(location, start_after) for e in p]


def test_keys_in_byte_order_with_links_to_files_only(tmp_path: Path) -> None:
    for name in ("b", "a/x", "a-1", "a0", "c/d/e", ".hidden"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"1")
    (tmp_path / "link-file").symlink_to(tmp_path / "b")
    (tmp_path / "link-dir").symlink_to(tmp_path / "c")  # not followed: no loops, no duplicates
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    keys = _keys(tmp_path)
    assert keys == sorted(keys) == [".hidden", "a-1", "a/x", "a0", "b", "c/d/e", "link-file"]
    prefix = str(tmp_path).lstrip("/") + "/"
    assert _keys(tmp_path, start_after=prefix + "a/x") == ["a0", "b", "c/d/e", "link-file"]
    assert _keys(tmp_path, suffix="a") == ["a-1", "a/x", "a0"]


def test_a_replacing_rename_is_a_new_version(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a\n1\n")
    location = parse_source(f"file://{tmp_path}/")
    store = LocalStore()
    (first,) = next(iter(store.list_pages(location)))
    replacement = tmp_path / ".f.tmp"
    replacement.write_bytes(b"a\n2\n")  # same size
    st = path.stat()
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the inode differs
    os.replace(replacement, path)
    uri = location.uri(first.key)
    assert store.current_version(uri) != first.version
    with pytest.raises(ObjectChangedError):
        store.read(uri, first.version)


def test_a_missing_directory_or_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    for uri, said in ((f"file://{tmp_path}/none/", "does not exist"), (f"file://{tmp_path}/file/", "not a directory")):
        location = parse_source(uri)
        with pytest.raises(SourceError, match=said):
            next(iter(LocalStore().list_pages(location)))
