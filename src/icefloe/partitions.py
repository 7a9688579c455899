"""Date partitions in keys, for the incremental listing's ``--relist-lookback``, pure.

A layout whose partitions sort by date (``dt=2025-01-03/``, ``year=2025/month=01/day=03/``,
``2025/01/03/``) lists in date order even when the names inside a partition do not (UUIDs). From
the watermark's partition we can therefore start listing at the partition ``lookback`` earlier and
re-list only the newest partitions, where late files with small names can still appear.
"""

from __future__ import annotations

import datetime as dt
import re

# The first date partition of a key, at a segment boundary: name=YYYY-MM-DD (dt=, date=, …),
# year=YYYY/month=MM/day=DD, or YYYY/MM/DD. Zero-padded, so that lexical order is date order.
_PARTITION = re.compile(
    r"(?:^|(?<=/))(?:"
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<y1>\d{4})-(?P<m1>\d{2})-(?P<d1>\d{2})"
    r"|year=(?P<y2>\d{4})/month=(?P<m2>\d{2})/day=(?P<d2>\d{2})"
    r"|(?P<y3>\d{4})/(?P<m3>\d{2})/(?P<d3>\d{2})"
    r")/"
)


def relist_start(watermark: str, prefix: str, lookback_seconds: int) -> str:
    """The key after which an incremental listing with a lookback starts (S3 ``StartAfter``).

    The watermark's first date partition below ``prefix``, moved back by whole days of
    ``lookback_seconds``, cut just before that partition's first key: ``prefix/dt=2025-01-03/x``
    with 2 days gives ``prefix/dt=2025-01-01/``, so every partition dated 2025-01-01 or later is
    listed again. A watermark without a date partition is returned as it is (no lookback).
    The result is never above the watermark, so the listing is always a superset of what the
    plain watermark would list.
    """
    relative = watermark[len(prefix) :] if watermark.startswith(prefix) else watermark
    base = len(watermark) - len(relative)
    for match in _PARTITION.finditer(relative):
        day = _date(match)
        if day is None:
            continue
        try:
            start = day - dt.timedelta(days=lookback_seconds // 86400)
        except OverflowError:  # a lookback past year 1: list every partition
            return watermark[: base + match.start()]
        if match.group("name"):
            partition = f"{match.group('name')}={start:%Y-%m-%d}"
        elif match.group("y2"):
            partition = f"year={start:%Y}/month={start:%m}/day={start:%d}"
        else:
            partition = f"{start:%Y}/{start:%m}/{start:%d}"
        # Up to the partition's slash: a bare ``dt=2025-01-01`` would be lexically right on S3, but
        # stores that list by directory (SeaweedFS) take it for the directory and skip all of it.
        return watermark[: base + match.start()] + partition + "/"
    return watermark


def _date(match: re.Match[str]) -> dt.date | None:
    for i in ("1", "2", "3"):
        if match.group("y" + i):
            try:
                return dt.date(int(match.group("y" + i)), int(match.group("m" + i)), int(match.group("d" + i)))
            except ValueError:  # 2025/13/45: digits, but not a date
                return None
    return None
