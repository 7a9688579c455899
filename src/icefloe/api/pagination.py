"""Opaque cursors of keyset pagination: the id of the last item of a page, base64url-encoded.

Ids only grow, so "items with an id above the cursor" stays correct while new rows arrive: they
land after every cursor handed out, nothing is skipped and nothing is listed twice. The encoding
is opaque on purpose: clients pass ``next_cursor`` back and may not build one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from icefloe.errors import ConfigurationError

_VERSION = "v1:"
_MAX_ID = 2**63 - 1
T = TypeVar("T")


def encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_VERSION}{last_id}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int | None:
    """The id after which the page starts; None for the first page."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_VERSION):
            raise ValueError(raw)
        last_id = int(raw.removeprefix(_VERSION))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConfigurationError("cursor is not one this API handed out (pass next_cursor back)") from None
    if not 0 <= last_id <= _MAX_ID:
        raise ConfigurationError("cursor is out of range")
    return last_id


def page(items: Sequence[T], limit: int, id_of: Callable[[T], int]) -> tuple[list[T], str | None]:
    """Cut ``items`` — fetched with ``limit + 1`` — to one page, and the cursor of the next page
    (None when there is none: the extra item tells, so a last page never links to an empty one)."""
    if len(items) <= limit:
        return list(items), None
    kept = list(items[:limit])
    return kept, encode(id_of(kept[-1]))
