"""Retry and backoff policies, pure and named: every wait icefloe makes before trying again is here.

A :class:`Backoff` is exponential (``base · factor^(attempt-1)``, capped) with a jitter rule; the
named policies below are the only ones the code uses, so a reader sees every schedule in one place
and each is unit-tested without a database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["none", "equal", "proportional"]


@dataclass(frozen=True)
class Backoff:
    """The delay before attempt ``attempt + 1`` after ``attempt`` failures.

    Jitter: ``none`` — the exponential delay itself; ``equal`` — half of it kept, half random
    (retries of many files failed together spread out, but none comes back at once);
    ``proportional`` — the delay times a random factor in [``low``, 1] (commit retries: contenders
    for one table must not retry in lockstep).
    """

    base: float
    cap: float
    factor: float = 2.0
    jitter: Jitter = "none"
    low: float = 0.5

    def exponential(self, attempt: int) -> float:
        if attempt < 1:
            return 0.0
        return float(min(self.cap, self.base * self.factor ** (attempt - 1)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exp = self.exponential(attempt)
        if self.jitter == "equal":
            return exp / 2 + (rng or random).uniform(0, exp / 2)
        if self.jitter == "proportional":
            return exp * (rng or random).uniform(self.low, 1.0)
        return exp

    def schedule(self, attempts: int) -> list[float]:
        """Cumulative offsets (no jitter) from the first attempt: 0, d1, d1+d2, … for ``attempts``."""
        offsets, due = [], 0.0
        for attempt in range(1, attempts + 1):
            offsets.append(due)
            due += self.exponential(attempt)
        return offsets


# A FAILED file becomes claimable again after this (30 s, 60 s, … 1 h), until --max-retries.
FILE_RETRY = Backoff(base=30.0, cap=3600.0, jitter="equal")
# A transient GET/write error of one file, retried in place within the batch (1 s, 2 s).
IN_PLACE = Backoff(base=1.0, cap=4.0)
IN_PLACE_ATTEMPTS = 3
# An Iceberg commit that conflicted or whose outcome is unknown (0.1 s … 5 s, jittered).
COMMIT = Backoff(base=0.1, cap=5.0, jitter="proportional")
# Waiting for the ledger's database to answer again (1 s, 2 s, 4 s, 8 s, then every 10 s).
LEDGER_WAIT = Backoff(base=1.0, cap=10.0)
# A webhook POST retried in place (0.5 s, 1 s); later attempts are ALERT_DELIVERY's.
WEBHOOK_IN_PLACE = Backoff(base=0.5, cap=1.0)
# An undelivered alert is tried again 1 min, 3 min, 7 min, … after its creation (gaps capped at 1 h).
ALERT_DELIVERY = Backoff(base=60.0, cap=3600.0)
