"""A local Spark Connect server for development, the demo and tests (``icefloe spark-server``).

It is the Connect server shipped in the full ``pyspark`` 4.0.x package, installed in a virtualenv
of its own (``pyspark`` and the ``pyspark-client`` icefloe uses install the same ``pyspark/``
folder and break each other), run with ``spark-submit`` on Java 17, ``local[2]``, bound to
127.0.0.1 only, with quiet logs and the jars of :mod:`icefloe.engines.spark.jars` on its classpath.

Layout: the *cache* (``ICEFLOE_SPARK_CACHE``, default ``ICEFLOE_HOME/spark``) holds what is
downloaded once (``venv/``, ``jars/``); the *state* folder (``ICEFLOE_HOME/spark/server``) holds
what belongs to one running server (``server.json``, ``server.log``, ``tmp/``).

The server configures S3A (for reading ``s3a://`` sources) from the AWS SDK's environment of the
process that starts it, and loads Iceberg's SQL extensions. The Iceberg catalog is *not* fixed
here: each icefloe client session configures the ``icefloe`` catalog for itself (see
:mod:`icefloe.engines.spark.session`), so one server serves ledgers in several databases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from icefloe.engines.spark import jars
from icefloe.errors import ConfigurationError, IcefloeError

PYSPARK_VERSION = "4.0.1"
DEFAULT_PORT = 15002
DEFAULT_DRIVER_MEMORY = "1g"
DEFAULT_MASTER = "local[2]"
START_TIMEOUT = 180.0  # a cold JVM on a busy 2-core machine
STOP_TIMEOUT = 30.0
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"

LOG4J2 = """\
# icefloe: a quiet Spark Connect server. Warnings and errors only; Spark's own noise muted.
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.nativeloader.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativeloader.level = error
logger.s3a.name = org.apache.hadoop.fs.s3a
logger.s3a.level = error
logger.metrics.name = org.apache.hadoop.metrics2
logger.metrics.level = error
logger.awssdk.name = software.amazon.awssdk
logger.awssdk.level = error
logger.iceberg.name = org.apache.iceberg
logger.iceberg.level = warn
logger.snapshotproducer.name = org.apache.iceberg.SnapshotProducer
logger.snapshotproducer.level = error
"""


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` records about a started server."""

    pid: int
    port: int
    remote: str
    log_file: str
    started_at: float
    driver_memory: str
    master: str


def default_cache(home: Path) -> Path:
    return Path(os.environ.get("ICEFLOE_SPARK_CACHE") or home / "spark").expanduser()


def default_state_dir(home: Path) -> Path:
    return (home / "spark" / "server").expanduser()


def find_java_home() -> Path:
    """A Java 17 (or 21) home: ``ICEFLOE_SPARK_JAVA_HOME``, else Debian's OpenJDK 17, else ``JAVA_HOME``.

    Spark 4.0 runs on Java 17 and 21 only; a newer default ``java`` must not be picked up.
    """
    explicit = os.environ.get("ICEFLOE_SPARK_JAVA_HOME")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        for pattern in ("java-17-openjdk*", "java-21-openjdk*", "*17*", "*21*"):
            candidates.extend(sorted(p for p in jvm.glob(pattern) if not p.is_symlink()))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    for home in candidates:
        if (home / "bin" / "java").is_file() and _java_major(home) in (17, 21):
            return home
    raise ConfigurationError(
        "Spark 4.0 needs Java 17 or 21 and none was found: install openjdk-17-jre-headless "
        "or set ICEFLOE_SPARK_JAVA_HOME"
    )


def _java_major(home: Path) -> int | None:
    release = home / "release"
    try:
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return int(line.split("=", 1)[1].strip('"').split(".")[0])
    except (OSError, ValueError):
        pass
    return None


# ------------------------------------------------------------------------------------- install


def venv_dir(cache: Path) -> Path:
    return cache / "venv"


def spark_home(cache: Path) -> Path:
    """``site-packages/pyspark`` of the server's venv: the wheel is a full Spark distribution."""
    libs = sorted((venv_dir(cache) / "lib").glob("python3*/site-packages/pyspark"))
    if not libs:
        raise ConfigurationError(f"pyspark is not installed in {venv_dir(cache)}")
    return libs[-1]


def _installed_marker(cache: Path) -> Path:
    return venv_dir(cache) / f".icefloe-pyspark-{PYSPARK_VERSION}"


def ensure_venv(cache: Path, *, log: bool = True) -> Path:
    """Create the server's virtualenv with ``pyspark==PYSPARK_VERSION`` if missing; return SPARK_HOME.

    ``--no-cache-dir``: pip would otherwise keep ~430 MB of built wheel in its cache.
    """
    marker = _installed_marker(cache)
    if not marker.is_file():
        venv = venv_dir(cache)
        if log:
            print(f"installing pyspark=={PYSPARK_VERSION} into {venv} (about 500 MB, a few minutes)", flush=True)
        if not (venv / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdin=subprocess.DEVNULL)
        result = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-cache-dir",
                f"pyspark=={PYSPARK_VERSION}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            detail = " ".join((result.stdout + result.stderr).split())[-400:]
            raise ConfigurationError(f"could not install pyspark=={PYSPARK_VERSION} into {venv}: {detail}")
        marker.write_text(PYSPARK_VERSION + "\n")
    return spark_home(cache)


def install(cache: Path, *, log: bool = True) -> tuple[Path, list[Path]]:
    """Everything the server needs on disk: (SPARK_HOME, jars). Idempotent; cached."""
    return ensure_venv(cache, log=log), jars.ensure_jars(cache, log=log)


# ------------------------------------------------------------------------------------- config


def s3a_conf(environ: dict[str, str]) -> dict[str, str]:
    """S3A settings from the AWS SDK's environment (credentials stay in the environment)."""
    # Credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set (no instance-metadata
    # probing), else the SDK's default chain (profiles, instance profile).
    provider = (
        "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
        if environ.get("AWS_ACCESS_KEY_ID")
        else "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
    )
    conf = {
        "spark.hadoop.fs.s3a.aws.credentials.provider": provider,
        "spark.hadoop.fs.s3a.connection.maximum": "64",
        "spark.hadoop.fs.s3a.retry.limit": "3",
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
    }
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    endpoint = environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https:")).lower()
        conf.setdefault("spark.hadoop.fs.s3a.endpoint.region", "us-east-1")
    return conf


def server_conf(port: int, state_dir: Path, jar_files: list[Path], environ: dict[str, str]) -> dict[str, str]:
    tmp = state_dir / "tmp"
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": str(state_dir / "spark-warehouse"),
        "spark.local.dir": str(tmp),
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={tmp} -XX:+UseSerialGC",
        "spark.driver.extraClassPath": ":".join(str(j) for j in jar_files),
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        # Parquet written by Spark for icefloe (staged replace batches) must read as Iceberg types.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # Idle client sessions (a worker that died) give their catalog connections back.
        "spark.connect.session.manager.defaultSessionTimeout": "15min",
        "spark.sql.files.maxPartitionBytes": str(64 << 20),
        # A batch names up to 1,000 objects: Spark lists them with a job of min(paths, 10,000) tasks
        # by default, one task per object on local[2]. A few tasks do the same HEADs.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
    }
    conf.update(s3a_conf(environ))
    return conf


def _server_env(java_home: Path, spark: Path, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update(
        JAVA_HOME=str(java_home),
        SPARK_HOME=str(spark),
        SPARK_CONF_DIR=str(state_dir / "conf"),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(state_dir),
        PATH=os.pathsep.join([str(java_home / "bin"), env.get("PATH", os.defpath)]),
        # AWS SDK >= 2.30 adds checksums S3-compatible stores may refuse.
        AWS_REQUEST_CHECKSUM_CALCULATION=env.get("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED"),
        AWS_RESPONSE_CHECKSUM_VALIDATION=env.get("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED"),
    )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        env.setdefault("AWS_REGION", region)
    if env.get("AWS_ACCESS_KEY_ID"):
        # Explicit credentials: the SDK need not ask the EC2 instance-metadata service for any.
        env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return env


# ------------------------------------------------------------------------------------- lifecycle


def _state_file(state_dir: Path) -> Path:
    return state_dir / "server.json"


def read_state(state_dir: Path) -> ServerState | None:
    """The recorded server, if its process still lives (a stale record is removed)."""
    path = _state_file(state_dir)
    try:
        state = ServerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    *,
    cache: Path,
    state_dir: Path,
    port: int = DEFAULT_PORT,
    driver_memory: str = DEFAULT_DRIVER_MEMORY,
    master: str = DEFAULT_MASTER,
    extra_conf: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
    log: bool = True,
) -> ServerState:
    """Start the server (installing pyspark and the jars first if needed); return once it listens.

    A server already recorded in ``state_dir`` and alive is returned as is.
    """
    existing = read_state(state_dir)
    if existing is not None:
        return existing
    if not _port_open_free(port):
        raise ConfigurationError(f"port {port} on 127.0.0.1 is taken; choose another with --port")
    spark, jar_files = install(cache, log=log)
    java_home = find_java_home()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "tmp").mkdir(exist_ok=True)
    (state_dir / "conf").mkdir(exist_ok=True)
    (state_dir / "conf" / "log4j2.properties").write_text(LOG4J2)
    env = _server_env(java_home, spark, state_dir)
    conf = server_conf(port, state_dir, jar_files, dict(environ if environ is not None else os.environ))
    conf.update(extra_conf or {})
    command = [
        str(spark / "bin" / "spark-submit"),
        "--class",
        CONNECT_CLASS,
        "--name",
        "icefloe-spark-connect",
        "--master",
        master,
        "--driver-memory",
        driver_memory,
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command.append(str(spark / "jars" / f"spark-connect_2.13-{PYSPARK_VERSION}.jar"))
    log_file = state_dir / "server.log"
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
        )
    state = ServerState(
        pid=process.pid,
        port=port,
        remote=f"sc://localhost:{port}",
        log_file=str(log_file),
        started_at=time.time(),
        driver_memory=driver_memory,
        master=master,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise IcefloeError(
                f"the Spark Connect server exited with code {process.returncode} while starting; "
                f"its log ({log_file}):\n{_tail(log_file)}"
            )
        if _port_open(port):
            _state_file(state_dir).write_text(json.dumps(asdict(state)))
            return state
        time.sleep(0.25)
    _kill_group(process.pid)
    raise IcefloeError(
        f"the Spark Connect server did not listen on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s; "
        f"its log ({log_file}):\n{_tail(log_file)}"
    )


def _port_open_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kill_group(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the server's process group, SIGKILL after ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(state_dir: Path) -> ServerState | None:
    """Stop the recorded server; returns what was stopped, None if none ran."""
    state = read_state(state_dir)
    if state is None:
        return None
    _kill_group(state.pid)
    _state_file(state_dir).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "tmp", ignore_errors=True)
    return state


def status(state_dir: Path) -> dict[str, Any]:
    """A small report: running or not, and where, how big."""
    state = read_state(state_dir)
    if state is None:
        return {"running": False}
    try:
        proc = psutil.Process(state.pid)
        rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        rss = 0
    return {
        "running": True,
        "listening": _port_open(state.port),
        "remote": state.remote,
        "pid": state.pid,
        "master": state.master,
        "driver_memory": state.driver_memory,
        "rss_mb": rss >> 20,
        "uptime_seconds": int(time.time() - state.started_at),
        "log_file": state.log_file,
    }
