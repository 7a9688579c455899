"""Durations as people type them (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``), pure.

Used by the CLI for ``--every`` and ``--alert-stale-after``, and to print durations back.
"""

from __future__ import annotations

import re

from icefloe.errors import ConfigurationError

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")


def parse_duration(value: str) -> int:
    """Seconds in ``value``: one or more ``<integer><unit>`` parts, units w d h m s, largest first.

    A bare number is refused: ``--every 10`` could mean seconds or minutes, so the unit is required.
    Raises :class:`ConfigurationError` for anything else, and for a zero duration.
    """
    text = value.strip().lower()
    parts = _PART.findall(text)
    units = [unit for _, unit in parts]
    well_formed = bool(parts) and "".join(n + u for n, u in parts) == text
    # each unit once, largest first: "1h30m", not "30m1h" or "1h1h"
    ordered = units == sorted(set(units), key=lambda u: -UNITS[u])
    if not (well_formed and ordered):
        raise ConfigurationError(f"duration must look like 90s, 10m, 2h, 1d or 1h30m, got {value!r}")
    seconds = sum(int(n) * UNITS[u] for n, u in parts)
    if seconds < 1:
        raise ConfigurationError(f"duration must be at least 1s, got {value!r}")
    return seconds


def parse_delay(value: str) -> int:
    """As :func:`parse_duration`, but ``0s`` (no delay) is allowed: ``--after-ingest-delay 0s``."""
    if value.strip().lower() in ("0", "0s", "0m", "0h", "0d"):
        return 0
    return parse_duration(value)


def format_duration(seconds: int) -> str:
    """The shortest exact spelling that :func:`parse_duration` reads back: 7200 → ``2h``, 5400 → ``1h30m``."""
    if seconds < 1:
        return "0s"
    out = []
    for unit, size in UNITS.items():
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
