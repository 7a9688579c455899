"""What the local host gives the embedded services: free TCP ports on 127.0.0.1, and log tails."""

from __future__ import annotations

import random
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from icefloe.errors import EmbeddedServiceError

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

if TYPE_CHECKING:
    pass


def _port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR, as the servers (Go, PostgreSQL) set it: connections of a stopped server still in
    TIME_WAIT do not count, a listener on this port (or on the wildcard address) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_start() -> int:
    """First port of the kernel's ephemeral range (outgoing connections take their ports from it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, *, offset: int = 0) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1, each free together with ``port + offset``.

    Picked at random below the ephemeral range where possible, so that an outgoing connection
    cannot take one between this check and the server's bind. Still a check-then-use race with
    other processes: callers retry a start that fails on a port already in use.
    """
    high = min(_ephemeral_start(), 65536) - 1 - offset
    low = 10_000
    if high - low < 1_000:
        low, high = 1024, 65535 - offset
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(10_000):
        port = random.randint(low, high)
        group = {port, port + offset}
        if group & taken:
            continue
        if all(_port_is_free(p) for p in group):
            chosen.append(port)
            taken |= group
            if len(chosen) == count:
                return chosen
    raise EmbeddedServiceError(f"found no {count} free TCP ports on 127.0.0.1")


def tail_of(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
