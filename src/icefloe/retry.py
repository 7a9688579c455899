"""Retry decisions, pure: no I/O, unit-tested without a database."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int, *, base: float = 30.0, cap: float = 3600.0, rng: random.Random | None = None
) -> float:
    """Delay before attempt ``attempt + 1`` after ``attempt`` failures: exponential with jitter.

    "Equal jitter": half the exponential delay is kept, the other half is random, so retries of
    many files failed together spread out but none comes back immediately.
    """
    if attempt < 1:
        return 0.0
    exp = min(cap, base * 2 ** (attempt - 1))
    return float(exp / 2 + (rng or random).uniform(0, exp / 2))


# How many times a transient fetch error is retried in place before the file is failed.
IN_PLACE_ATTEMPTS = 3
