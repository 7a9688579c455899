"""`icefloe services start|stop|status`: keep the embedded services of an icefloe home running.

By default the embedded PostgreSQL runs only while an icefloe command runs, on a socket whose port
changes at every start, so no other tool can reach the catalog in it. ``start`` launches a small
background process (the *holder*) that holds a handle on that PostgreSQL with a TCP listener on
127.0.0.1 at a fixed port, and optionally runs the embedded S3 (SeaweedFS) on a fixed port, until
``stop``. Commands that run meanwhile attach to the same server as usual; when the holder stops, the
server stops with the last command using it, as before.

The holder records what it runs in ``HOME/services.json`` (removed when it stops): ports, the
ledger URL, the S3 endpoint and its keys (the file is readable by its owner only).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from icefloe.errors import ConfigurationError

DEFAULT_PG_PORT = 15432
DEFAULT_S3_PORT = 18333
S3_ACCESS_KEY = "icefloe"
S3_SECRET_KEY = "icefloe-secret"
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 60.0


def state_file(home: Path) -> Path:
    return home.expanduser().resolve() / "services.json"


def status(home: Path) -> dict[str, Any] | None:
    """What the holder of ``home`` runs, or None when no holder is running."""
    path = state_file(home)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        alive = psutil.Process(int(state["pid"])).is_running()
    except (psutil.Error, KeyError, ValueError):
        alive = False
    if not alive:
        path.unlink(missing_ok=True)  # a holder killed without cleaning up
        return None
    return state


def start(home: Path, *, pg_port: int, s3_port: int | None) -> dict[str, Any]:
    """Start the holder of ``home`` (if none runs) and wait until its services answer."""
    running = status(home)
    if running is not None:
        return running | {"already_running": True}
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "services.log"
    command = [sys.executable, "-m", "icefloe.services", str(home), str(pg_port), str(s3_port or 0)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        state = status(home)
        if state is not None and state.get("pid") == process.pid:
            return state
        if process.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
            raise ConfigurationError(f"the services did not start (see {log}): {tail}")
        time.sleep(0.2)
    process.terminate()
    raise ConfigurationError(f"the services did not start within {_START_TIMEOUT:.0f} s (see {log})")


def stop(home: Path) -> bool:
    """Stop the holder of ``home``; False when none was running."""
    state = status(home)
    if state is None:
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(_STOP_TIMEOUT)
    state_file(home).unlink(missing_ok=True)
    return True


def _hold(home: Path, pg_port: int, s3_port: int) -> None:
    """The holder process: start, record, wait for SIGTERM, stop."""
    from icefloe import embedded

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    url, port = embedded.ensure_postgres_tcp(home, port=pg_port)
    state: dict[str, Any] = {"pid": os.getpid(), "home": str(home), "postgres": {"port": port, "url": url}}
    s3 = None
    try:
        if s3_port:
            s3 = embedded.start_seaweedfs(home / "s3", S3_ACCESS_KEY, S3_SECRET_KEY, s3_port=s3_port)
            state["s3"] = {"endpoint": s3.endpoint, "data_dir": str(s3.data_dir)} | {
                "env": s3.env(),
            }
        path = state_file(home)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
        print(f"services of {home} running: {json.dumps(state)}", flush=True)
        stopping.wait()
    finally:
        state_file(home).unlink(missing_ok=True)
        if s3 is not None:
            s3.stop()
        embedded.release_postgres(home)
        print("services stopped", flush=True)


if __name__ == "__main__":
    _hold(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
