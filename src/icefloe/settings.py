"""Settings, validated once from the environment in ``main()`` / ``create_app()`` and passed down.

Nothing here is read at import time and nothing below the entry points reads ``os.environ``: tests
and the demo build their own :class:`Settings`. Every ``ICEFLOE_*`` variable read here is in the
README's configuration table (a unit test keeps the two in step). The AWS SDK's credential chain
stays the SDK's; only the endpoint, region, CA bundle and explicitly given keys are passed on.
"""

from __future__ import annotations

import math
import os
import socket
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, cast

from icefloe.durations import parse_duration
from icefloe.errors import ConfigurationError

# Levels of struct/list/map a column may nest (ICEFLOE_MAX_NESTING, at most MAX_NESTING_LIMIT):
# pyiceberg cannot load a table's metadata back past 64 levels of structs (measured, 0.12). Here,
# not in schema.py, so that reading the settings does not import pyarrow and pyiceberg.
DEFAULT_MAX_NESTING = 32
MAX_NESTING_LIMIT = 60

DEFAULT_MAX_LINE_BYTES = 256 << 20

DEFAULT_LEASE_SECONDS = 60
N = TypeVar("N", int, float)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class S3Settings:
    """Where icefloe's own S3 clients connect (sources, the embedded catalog's S3 warehouse, Spark).

    ``endpoint_url`` None means AWS S3; with an endpoint, addressing is path-style (every
    S3-compatible store supports it). Keys None leave credentials to the AWS SDK's own chain
    (environment, profile, instance role).
    """

    endpoint_url: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def path_style(self) -> bool:
        return self.endpoint_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        """The AWS SDK's variables that icefloe passes on explicitly."""
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )


@dataclass(frozen=True)
class GcsSettings:
    """Google Cloud Storage sources. ``credentials_file``: a service account (or other ADC) JSON file,
    ``GOOGLE_APPLICATION_CREDENTIALS``; None leaves it to Application Default Credentials (gcloud's
    file, the metadata server). ``emulator_host``: ``STORAGE_EMULATOR_HOST`` (e.g.
    ``http://127.0.0.1:4443``): no authentication, that endpoint instead of Google's.
    """

    credentials_file: str | None = None
    emulator_host: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GcsSettings:
        host = env.get("STORAGE_EMULATOR_HOST") or None
        if host is not None and "://" not in host:
            host = f"http://{host}"  # the Google SDKs accept a bare host:port
        return cls(credentials_file=env.get("GOOGLE_APPLICATION_CREDENTIALS") or None, emulator_host=host)


@dataclass(frozen=True)
class AzureSettings:
    """Azure Blob Storage sources, configured as the Azure SDKs are.

    ``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's included) gives the account, its key or SAS and
    the blob endpoint; otherwise ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` or
    ``AZURE_STORAGE_SAS_TOKEN``; with no key or SAS the credential chain stays the library's, as
    ``DefaultAzureCredential``'s (``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``,
    workload identity, managed identity, the Azure CLI).
    """

    account: str | None = None
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    blob_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AzureSettings:
        conn = env.get("AZURE_STORAGE_CONNECTION_STRING") or ""
        parts = azure_connection_string(conn) if conn else {}
        account = parts.get("accountname") or env.get("AZURE_STORAGE_ACCOUNT") or env.get("AZURE_STORAGE_ACCOUNT_NAME")
        endpoint = parts.get("blobendpoint")
        if endpoint is None and parts.get("usedevelopmentstorage", "").lower() == "true":
            account, endpoint = _AZURITE_ACCOUNT, "http://127.0.0.1:10000/devstoreaccount1"
            parts.setdefault("accountkey", _AZURITE_KEY)
        if endpoint is None and account and parts.get("endpointsuffix"):
            endpoint = f"{parts.get('defaultendpointsprotocol', 'https')}://{account}.blob.{parts['endpointsuffix']}"
        key = parts.get("accountkey") or env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_ACCOUNT_KEY")
        sas = parts.get("sharedaccesssignature") or env.get("AZURE_STORAGE_SAS_TOKEN")
        return cls(account=account or None, account_key=key or None, sas_token=sas or None, blob_endpoint=endpoint)


# Azurite's well-known development account (documented by Microsoft; not a secret).
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azure_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;…`` pairs with lower-case keys (values keep their ``=``: keys end in ``==``)."""
    parts: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.strip().partition("=")
        if not sep:
            if name:
                raise ConfigurationError("AZURE_STORAGE_CONNECTION_STRING must be Key=Value pairs separated by ';'")
            continue
        parts[name.strip().lower()] = value.strip()
    return parts


@dataclass(frozen=True)
class SparkSettings:
    """The Spark engine and ``icefloe spark-server`` (docs/spark.md).

    ``remote``: the default Spark Connect URL (an ingestion's ``--spark-remote`` wins);
    ``catalog``: ``client`` (icefloe configures the session's catalog) or ``server`` (the
    cluster's own); ``scheme``: how Spark reads ``s3://`` objects (s3a, or s3 on EMR/Databricks);
    ``cache_dir``: pyspark's venv and the jars (None: ``ICEFLOE_HOME/spark``); ``java_home``:
    a Java 17/21 to run the local server with (None: searched, then ``JAVA_HOME``).
    """

    remote: str | None = None
    catalog: Literal["client", "server"] = "client"
    scheme: Literal["s3a", "s3", "s3n"] = "s3a"
    cache_dir: Path | None = None
    java_home: Path | None = None
    fallback_java_home: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SparkSettings:
        catalog = env.get("ICEFLOE_SPARK_CATALOG") or "client"
        if catalog not in ("client", "server"):
            raise ConfigurationError(f"ICEFLOE_SPARK_CATALOG must be client or server, got {catalog!r}")
        scheme = env.get("ICEFLOE_SPARK_SCHEME") or "s3a"
        if scheme not in ("s3a", "s3", "s3n"):
            raise ConfigurationError(f"ICEFLOE_SPARK_SCHEME must be s3a or s3, got {scheme!r}")
        remote = env.get("ICEFLOE_SPARK_REMOTE") or env.get("SPARK_REMOTE") or None
        cache, java, fallback = env.get("ICEFLOE_SPARK_CACHE"), env.get("ICEFLOE_SPARK_JAVA_HOME"), env.get("JAVA_HOME")
        return cls(
            remote=remote,
            catalog=cast(Literal["client", "server"], catalog),
            scheme=cast(Literal["s3a", "s3", "s3n"], scheme),
            cache_dir=Path(cache).expanduser() if cache else None,
            java_home=Path(java).expanduser() if java else None,
            fallback_java_home=Path(fallback) if fallback else None,
        )


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send alert emails."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AlertSettings:
    """The alert channels; none configured means alerts are recorded (``icefloe alerts list``) only."""

    webhook_url: str | None = field(default=None, repr=False)  # may carry a token in its path
    smtp: SmtpSettings | None = None
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlertSettings:
        """Read the ``ICEFLOE_ALERT_*`` variables (see docs/alerts.md); empty means unset."""

        def get(name: str) -> str | None:
            value = env.get(f"ICEFLOE_ALERT_{name}", "")
            # a password is taken as it is; anything else without surrounding blanks
            return (value if name == "SMTP_PASSWORD" else value.strip()) or None

        timeout = _number("ICEFLOE_ALERT_TIMEOUT_SECONDS", get("TIMEOUT_SECONDS") or "10", float)
        if not 0 < timeout < math.inf:
            raise ConfigurationError("ICEFLOE_ALERT_TIMEOUT_SECONDS must be a positive number of seconds")
        url = get("WEBHOOK_URL")
        if url is not None:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigurationError("ICEFLOE_ALERT_WEBHOOK_URL must be an http:// or https:// URL")
        return cls(webhook_url=url, smtp=_smtp_from_env(get), timeout_seconds=timeout)

    @property
    def channel_names(self) -> list[str]:
        return (["webhook"] if self.webhook_url else []) + (["email"] if self.smtp else [])


def _smtp_from_env(get: Callable[[str], str | None]) -> SmtpSettings | None:
    host = get("SMTP_HOST")
    others = ("SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD", "SMTP_STARTTLS", "SMTP_FROM", "SMTP_TO")
    if host is None:
        stray = [f"ICEFLOE_ALERT_{name}" for name in others if get(name) is not None]
        if stray:
            raise ConfigurationError(f"{', '.join(stray)} set but ICEFLOE_ALERT_SMTP_HOST is not")
        return None
    starttls_raw = (get("SMTP_STARTTLS") or "false").lower()
    if starttls_raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"ICEFLOE_ALERT_SMTP_STARTTLS must be true or false, got {starttls_raw!r}")
    starttls = starttls_raw in ("true", "1", "yes")
    port = _number("ICEFLOE_ALERT_SMTP_PORT", get("SMTP_PORT") or ("587" if starttls else "25"), int)
    if not 0 < port < 65536:
        raise ConfigurationError(f"ICEFLOE_ALERT_SMTP_PORT must be a TCP port, got {port}")
    user, password = get("SMTP_USER"), get("SMTP_PASSWORD")
    if (user is None) != (password is None):
        raise ConfigurationError("set both ICEFLOE_ALERT_SMTP_USER and ICEFLOE_ALERT_SMTP_PASSWORD, or neither")
    recipients = tuple(a.strip() for a in (get("SMTP_TO") or "").split(",") if a.strip())
    if not recipients:
        raise ConfigurationError("ICEFLOE_ALERT_SMTP_TO (comma-separated addresses) is required with SMTP_HOST")
    sender = get("SMTP_FROM") or f"icefloe@{socket.gethostname()}"
    return SmtpSettings(host, port, sender, recipients, starttls, user, password)


@dataclass(frozen=True)
class ApiSettings:
    """What ``icefloe serve`` needs beyond the rest (docs/api.md).

    ``cors_origins``: origins allowed to call the API from a browser; empty (the default) adds no
    CORS headers at all. ``metrics_public``: ``/metrics`` answers without a token (for Prometheus
    scrapers on a trusted network); otherwise it needs a reader token like every other route.
    """

    cors_origins: tuple[str, ...] = ()
    metrics_public: bool = False
    docs_public: bool = False  # /docs (Swagger UI, assets shipped in the package) and /openapi.json open
    file_sources: bool = False  # POST /ingestions may name a file:// source (the server's own files)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        """``ICEFLOE_API_CORS_ORIGINS`` (comma-separated), ``ICEFLOE_API_METRICS_PUBLIC`` and
        ``ICEFLOE_API_DOCS_PUBLIC`` (true/false)."""
        origins = tuple(o.strip() for o in env.get("ICEFLOE_API_CORS_ORIGINS", "").split(",") if o.strip())
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigurationError(f"ICEFLOE_API_CORS_ORIGINS: {origin!r} is not an http(s) origin")
        return cls(
            cors_origins=origins,
            metrics_public=_flag(env, "ICEFLOE_API_METRICS_PUBLIC"),
            docs_public=_flag(env, "ICEFLOE_API_DOCS_PUBLIC"),
            file_sources=_flag(env, "ICEFLOE_API_FILE_SOURCES"),
        )


@dataclass(frozen=True)
class Settings:
    """Everything icefloe needs to know about its environment.

    ``database_url`` None means "the embedded PostgreSQL under ``home``"; ``catalog_name`` None
    means "a pyiceberg SQL catalog in the ledger database", whose warehouse is ``warehouse_url``
    or, when None, ``home/warehouse``. ``log_format`` None: text on a terminal, JSON otherwise.
    """

    home: Path
    database_url: str | None = None
    catalog_name: str | None = None
    warehouse_url: str | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    # Parallel GETs + parses per batch (pyarrow releases the GIL while parsing).
    read_threads: int = 8
    log_format: Literal["json", "text"] | None = None
    s3: S3Settings = field(default_factory=S3Settings)
    gcs: GcsSettings = field(default_factory=GcsSettings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    spark: SparkSettings = field(default_factory=SparkSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    # How long `icefloe maintain` keeps snapshots (the snapshot search's recovery window).
    snapshot_retention_seconds: int = 7 * 86400
    # Levels of struct/list/map a column may nest; deeper files are FAILED (InvalidSchema).
    max_nesting: int = DEFAULT_MAX_NESTING
    # Longest line (record) of a text file; longer lines fail the file (LineTooLong).
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    # Child processes parsing fetched files (a parser crash costs one file); 0: parse in-process.
    parser_processes: int = field(default_factory=lambda: max(1, os.cpu_count() or 2))

    @property
    def warehouse(self) -> str:
        """Warehouse location of the default catalog."""
        return self.warehouse_url or (self.home / "warehouse").resolve().as_uri()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate ``ICEFLOE_*`` variables (and the AWS SDK's endpoint and region).

        ``env`` is ``os.environ`` in the entry points, a plain dict in tests.
        """
        home = Path(env.get("ICEFLOE_HOME") or Path.home() / ".icefloe").expanduser()
        lease = _number("ICEFLOE_LEASE_SECONDS", env.get("ICEFLOE_LEASE_SECONDS") or str(DEFAULT_LEASE_SECONDS), int)
        if lease < 3:
            raise ConfigurationError(f"ICEFLOE_LEASE_SECONDS must be at least 3, got {lease}")
        threads = max(1, _number("ICEFLOE_READ_THREADS", env.get("ICEFLOE_READ_THREADS") or "8", int))
        url = ledger_url(env.get("ICEFLOE_DATABASE_URL") or None)
        log_format = env.get("ICEFLOE_LOG_FORMAT") or None
        if log_format not in (None, "json", "text"):
            raise ConfigurationError(f"ICEFLOE_LOG_FORMAT must be json or text, got {log_format!r}")
        retention_raw = env.get("ICEFLOE_SNAPSHOT_RETENTION")
        retention = parse_duration(retention_raw) if retention_raw else 7 * 86400
        nesting = _int_setting(env, "ICEFLOE_MAX_NESTING", DEFAULT_MAX_NESTING, 1, MAX_NESTING_LIMIT)
        line_bytes = _int_setting(env, "ICEFLOE_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES, 1 << 20, 2**31 - 1)
        parsers = _int_setting(env, "ICEFLOE_PARSER_PROCESSES", max(1, os.cpu_count() or 2), 0, 64)
        return cls(
            home=home,
            database_url=url,
            catalog_name=env.get("ICEFLOE_CATALOG") or None,
            warehouse_url=env.get("ICEFLOE_WAREHOUSE") or None,
            lease_seconds=lease,
            read_threads=threads,
            log_format=cast(Literal["json", "text"] | None, log_format),
            s3=S3Settings.from_env(env),
            gcs=GcsSettings.from_env(env),
            azure=AzureSettings.from_env(env),
            spark=SparkSettings.from_env(env),
            alerts=AlertSettings.from_env(env),
            api=ApiSettings.from_env(env),
            snapshot_retention_seconds=retention,
            max_nesting=nesting,
            max_line_bytes=line_bytes,
            parser_processes=parsers,
        )


def _number(name: str, raw: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(raw)
    except ValueError:
        kind_name = "an integer" if kind is int else "a number"
        raise ConfigurationError(f"{name} must be {kind_name}, got {raw!r}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def ledger_url(url: str | None) -> str | None:
    """``ICEFLOE_DATABASE_URL`` as SQLAlchemy takes it; anything but PostgreSQL (through psycopg 3)
    is a configuration error naming the scheme (never the rest: it may hold a password)."""
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        # Accept libpq-style URLs too; SQLAlchemy needs the driver spelled out.
        return "postgresql+psycopg://" + rest
    if scheme == "postgresql+psycopg" and sep:
        return url
    shown = f"a {scheme}:// URL" if sep else "no URL"
    raise ConfigurationError(
        f"ICEFLOE_DATABASE_URL must be a PostgreSQL URL (postgresql://host/db or postgresql+psycopg://…), got {shown}"
    )


def _int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value
