"""Test-only fault points: make this process die or pause at a named step of the protocol.

``ICEFLOE_FAULT_POINT=after-claim`` (or ``after-write``, ``before-commit``, ``after-quarantine-commit``,
``after-commit``, ``during-discovery``, ``maintenance-before-commit``, ``maintenance-after-commit``,
``cleanup-after-copy``, ``cleanup-after-action``) kills the
process with SIGKILL the first time it reaches that point;
``NAME:sleep=SECONDS`` pauses there instead. Unset, :func:`point` does nothing.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = (
    "during-discovery",
    "after-claim",
    "after-write",
    "before-commit",
    "after-quarantine-commit",
    "after-commit",
    "maintenance-before-commit",
    "maintenance-after-commit",
    "cleanup-after-copy",
    "cleanup-after-action",
)


def point(name: str) -> None:
    """A named point of the protocol; acts only when ``ICEFLOE_FAULT_POINT`` names it."""
    spec = os.environ.get("ICEFLOE_FAULT_POINT")
    if not spec:
        return
    target, _, action = spec.partition(":")
    if target != name:
        return
    if action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
        return
    os.kill(os.getpid(), signal.SIGKILL)
