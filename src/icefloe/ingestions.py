"""Ingestions: define, list, change and delete them. The CLI and the API call these directly."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from icefloe import ledger
from icefloe.errors import ConfigurationError, ConflictError, NotFoundError
from icefloe.globs import compile_glob, may_overlap
from icefloe.identifiers import invisible_character, split_identifier
from icefloe.models import DISCOVERIES, ENGINES, FORMATS, LISTINGS, ON_CHANGE, SCHEMA_EVOLUTIONS, File, Ingestion
from icefloe.redaction import redact_uri
from icefloe.scheduler import Schedule
from icefloe.stores import parse_source


@dataclass(frozen=True)
class IngestionSpec:
    """What a user gives to define an ingestion (the CLI's options, the API's body)."""

    name: str
    source: str
    format: str
    table: str
    pattern: str | None = None
    since: dt.datetime | None = None
    schema: dict[str, Any] | None = None
    on_change: str = "replace"
    max_files_per_commit: int = 1000
    max_bytes_per_commit: int = 1 << 30
    max_retries: int = 3
    csv_delimiter: str = ","
    csv_quote_char: str = '"'
    csv_header: bool = True
    csv_null_values: list[str] | None = None  # None: only an empty unquoted field is NULL
    # Alert when no run has succeeded for this long (seconds); None: never.
    alert_stale_after_seconds: int | None = None
    # Runs by itself on a cron expression or every N seconds, in schedule_timezone.
    schedule_cron: str | None = None
    schedule_interval_seconds: int | None = None
    schedule_timezone: str = "UTC"
    allow_concurrent_runs: bool = False
    # A worker maintains the table (compaction, expiry, orphans) every N seconds; None: never.
    maintain_every_seconds: int | None = None
    # "arrow" (in-process) or "spark" (Spark Connect; remote from here or ICEFLOE_SPARK_REMOTE).
    engine: str = "arrow"
    spark_remote: str | None = None
    # "full" lists the whole prefix every run; "incremental" lists after the watermark (StartAfter),
    # re-listing the date partitions of the last relist_lookback_seconds, and makes a full
    # reconciling listing every full_listing_every_seconds.
    listing: str = "full"
    relist_lookback_seconds: int | None = None
    full_listing_every_seconds: int = 86400
    # What a file whose schema differs from the table's does: add-columns (and safe widenings, in
    # the rows' commit), approve (HELD until `icefloe schema approve`), rescue (the table never
    # changes; misfits go to _rescued_data), fail (FAILED SchemaMismatch).
    schema_evolution: str = "add-columns"
    # strptime-style formats of timestamps / dates in CSV and JSON text, besides ISO-8601.
    timestamp_formats: list[str] | None = None
    date_formats: list[str] | None = None
    # A line or row that does not parse or fit: "fail-file" its file, "skip" it, or "quarantine" it
    # (to the table <table>__quarantine); a file with more than max_bad_records ("N", "P%") fails.
    on_bad_record: str = "fail-file"
    max_bad_records: str | None = None
    # "listing" (as ``listing`` says) or "events": S3 notifications from the SQS queue events_queue,
    # with a full reconciling listing every reconcile_every_seconds (icefloe.events).
    discovery: str = "listing"
    events_queue: str | None = None
    reconcile_every_seconds: int = 86400
    # keep | delete | move:PREFIX | tag:KEY=VALUE, after_ingest_delay_seconds after SUCCESS (icefloe.cleanup).
    after_ingest: str = "keep"
    after_ingest_delay_seconds: int = 7 * 86400

    def validate(self, *, new_name: bool = True) -> None:
        """Raise :class:`ConfigurationError` naming the first invalid field.

        ``new_name=False`` (an update that keeps the name): an ingestion made before the name
        rules stays changeable.
        """
        # Imported here, not at the top: every CLI command imports this module, and these bring
        # pyarrow, pyiceberg and boto3 (~0.5 s) that only checking a definition needs.
        from icefloe.badrecords import check_policy
        from icefloe.cleanup import parse_action
        from icefloe.events import queue_endpoint
        from icefloe.schema_documents import parse_schema_document

        if new_name:
            check_name(self.name)
        location = parse_source(self.source)
        if self.format not in FORMATS:
            raise ConfigurationError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if new_name:
            split_identifier(self.table)
        if self.pattern is not None:
            compile_glob(self.pattern)
        if self.schema is not None:
            parse_schema_document(self.schema)
        if self.on_change not in ON_CHANGE:
            raise ConfigurationError(f"on_change must be replace or append, got {self.on_change!r}")
        for field in ("max_files_per_commit", "max_bytes_per_commit"):
            if getattr(self, field) < 1:
                raise ConfigurationError(f"{field} must be at least 1")
        if self.max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if len(self.csv_delimiter) != 1 or len(self.csv_quote_char) != 1:
            raise ConfigurationError("csv delimiter and quote char must be single characters")
        if self.csv_null_values is not None and (
            len(self.csv_null_values) > 100 or any(not isinstance(v, str) or len(v) > 100 for v in self.csv_null_values)
        ):
            raise ConfigurationError("csv_null_values must be at most 100 texts of at most 100 characters")
        if self.since is not None and self.since.tzinfo is None:
            raise ConfigurationError("since must carry a time zone (e.g. 2025-01-01T00:00:00Z)")
        if self.alert_stale_after_seconds is not None and self.alert_stale_after_seconds < 1:
            raise ConfigurationError("alert_stale_after_seconds must be at least 1")
        if self.maintain_every_seconds is not None and self.maintain_every_seconds < 60:
            raise ConfigurationError("maintain_every_seconds must be at least 60")
        Schedule(self.schedule_cron, self.schedule_interval_seconds, self.schedule_timezone).validate()
        if self.engine not in ENGINES:
            raise ConfigurationError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.spark_remote is not None and not self.spark_remote.startswith("sc://"):
            raise ConfigurationError(f"spark_remote must look like sc://host:15002, got {self.spark_remote!r}")
        if self.listing not in LISTINGS:
            raise ConfigurationError(f"listing must be one of {', '.join(LISTINGS)}, got {self.listing!r}")
        if self.listing == "incremental" and location.scheme == "az":
            # Azure's List Blobs has no start-after: an incremental listing would list everything anyway.
            raise ConfigurationError(
                "listing incremental is not available for Azure sources (List Blobs has no start-after)"
            )
        if self.engine == "spark" and location.scheme != "s3":
            raise ConfigurationError(
                f"the spark engine reads s3:// sources only, not {location.scheme}://; use engine arrow for this source"
            )
        if self.relist_lookback_seconds is not None and self.relist_lookback_seconds < 1:
            raise ConfigurationError("relist_lookback_seconds must be at least 1")
        if self.full_listing_every_seconds < 1:
            raise ConfigurationError("full_listing_every_seconds must be at least 1")
        if self.schema_evolution not in SCHEMA_EVOLUTIONS:
            raise ConfigurationError(
                f"schema_evolution must be one of {', '.join(SCHEMA_EVOLUTIONS)}, got {self.schema_evolution!r}"
            )
        for option, formats in (("timestamp_formats", self.timestamp_formats), ("date_formats", self.date_formats)):
            if formats is not None and (
                len(formats) > 20 or any(not isinstance(f, str) or "%" not in f or len(f) > 100 for f in formats)
            ):
                raise ConfigurationError(
                    f"{option} must be at most 20 strptime-style formats (with a %, e.g. %d/%m/%Y) of at most "
                    "100 characters"
                )
        if self.engine == "spark" and (self.timestamp_formats or self.date_formats):
            raise ConfigurationError("--timestamp-format and --date-format are not supported by the spark engine")
        if self.engine == "spark" and self.schema_evolution != "add-columns":
            # Spark's Parquet files are added by name after its schema change is committed: it can
            # neither hold a file before reading it as a whole batch nor rescue values row by row.
            raise ConfigurationError(
                f"--schema-evolution {self.schema_evolution} is not supported by the spark engine "
                "(add-columns only); use --engine arrow"
            )
        check_policy(self.on_bad_record, self.max_bad_records)
        if self.engine == "spark" and self.on_bad_record != "fail-file":
            raise ConfigurationError(
                f"the spark engine does not support --on-bad-record {self.on_bad_record} (it fails the file); "
                "use --engine arrow"
            )
        if self.discovery not in DISCOVERIES:
            raise ConfigurationError(f"discovery must be one of {', '.join(DISCOVERIES)}, got {self.discovery!r}")
        if self.discovery == "events" and not self.events_queue:
            raise ConfigurationError("discovery events needs an events queue (--events-queue SQS-QUEUE-URL)")
        if self.discovery == "events" and not self.source.lower().startswith("s3://"):
            # S3 → SQS notifications only: other stores' events (Pub/Sub, Event Grid) are not read.
            raise ConfigurationError(
                f"--discovery events reads S3 notifications from SQS: the source must be s3://, "
                f"got {redact_uri(self.source)!r}; list it instead (--discovery listing)"
            )
        if self.events_queue is not None:
            queue_endpoint(self.events_queue)
        if self.reconcile_every_seconds < 1:
            raise ConfigurationError("reconcile_every_seconds must be at least 1")
        parse_action(self.after_ingest, self.source)
        if self.after_ingest_delay_seconds < 0:
            raise ConfigurationError("after_ingest_delay_seconds must be 0 or more")


def create(db: Engine, spec: IngestionSpec) -> Ingestion:
    spec.validate()
    with Session(db, expire_on_commit=False) as session:
        _lock_definitions(session)
        if session.scalar(select(Ingestion.id).where(Ingestion.name == spec.name)) is not None:
            raise ConflictError(f"an ingestion named {spec.name!r} already exists")  # before: it says more
        _refuse_overlap(session, spec)
        ingestion = Ingestion(**_columns(dataclasses.asdict(spec)))
        session.add(ingestion)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"an ingestion named {spec.name!r} already exists") from exc
        session.refresh(ingestion)
        return ingestion


def _lock_definitions(session: Session) -> None:
    """Serialise the overlap check with concurrent creates and updates (until the commit)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('icefloe.ingestion-sources'))"))


def _refuse_overlap(session: Session, spec: IngestionSpec, *, own_id: int | None = None) -> None:
    """Refuse a definition that could ingest a key another ingestion of the same table ingests.

    Two such ingestions would each commit the file (its rows twice), and a change of the file
    would make ``--on-change replace`` in one delete the rows the other committed. Overlap means:
    the same bucket, one prefix a prefix of the other, and one key below both that both patterns
    match (decided exactly, :func:`icefloe.globs.may_overlap`). Table names compare without case
    (Glue and Hive fold it).
    """
    _lock_definitions(session)
    mine = parse_source(spec.source)
    same_table = select(Ingestion).where(func.lower(Ingestion.table_identifier) == spec.table.lower())
    for other in session.scalars(same_table):
        if other.id == own_id:
            continue
        theirs = parse_source(other.source)
        if (theirs.scheme, theirs.container, theirs.account) != (mine.scheme, mine.container, mine.account):
            continue
        if mine.prefix.startswith(theirs.prefix):
            overlap = may_overlap(other.pattern, spec.pattern, inner_below=mine.prefix[len(theirs.prefix) :])
        elif theirs.prefix.startswith(mine.prefix):
            overlap = may_overlap(spec.pattern, other.pattern, inner_below=theirs.prefix[len(mine.prefix) :])
        else:
            continue
        if overlap:
            pattern = f" (pattern {other.pattern!r})" if other.pattern else ""
            raise ConflictError(
                f"ingestion {other.name!r} already writes table {other.table_identifier} from "
                f"{redact_uri(other.source)}{pattern}, which overlaps this source: a file matched by both "
                "would be ingested twice; use disjoint prefixes or patterns, or another table"
            )


def get(db: Engine, name_or_id: str | int) -> Ingestion:
    with Session(db, expire_on_commit=False) as session:
        stmt = select(Ingestion)
        if isinstance(name_or_id, int):
            stmt = stmt.where(Ingestion.id == name_or_id)
        else:
            stmt = stmt.where(Ingestion.name == name_or_id)
        ingestion = session.scalars(stmt).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name_or_id!r}")
        return ingestion


def list_all(db: Engine) -> list[Ingestion]:
    with Session(db, expire_on_commit=False) as session:
        return list(session.scalars(select(Ingestion).order_by(Ingestion.name)))


def set_status(db: Engine, name: str, status: str) -> Ingestion:
    with Session(db, expire_on_commit=False) as session:
        ingestion = session.scalars(select(Ingestion).where(Ingestion.name == name)).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name!r}")
        ingestion.status = status
        ingestion.updated_at = func.now()
        session.commit()
        session.refresh(ingestion)
        return ingestion


def delete(db: Engine, name: str) -> None:
    """Delete the ingestion and its ledger (runs, files). The Iceberg table is kept.

    Refused while a worker holds a live lease on one of its files: deleting the ledger under a
    worker would lose the record of what it is about to commit.
    """
    with Session(db) as session:
        ingestion = session.scalars(select(Ingestion).where(Ingestion.name == name)).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name!r}")
        busy = session.scalar(
            select(func.count())
            .select_from(File)
            .where(
                File.ingestion_id == ingestion.id,
                File.status == "PROCESSING",
                File.lease_expires_at > func.now(),
            )
        )
        if busy:
            raise ConflictError(f"ingestion {name!r} is being processed ({busy} file(s) leased); try later")
        session.delete(ingestion)
        session.commit()


# ----------------------------------------------------------------------------- API additions

# Options fixed once an ingestion is defined: the ledger records what was read from that source
# into that table; define a new ingestion instead. Every other option of the spec may change.
FIXED = ("source", "format", "table")
# The spec's options whose ledger column has another name.
_COLUMN_OF = {"table": "table_identifier"}
OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(IngestionSpec))
UPDATABLE: tuple[str, ...] = tuple(o for o in OPTIONS if o not in FIXED)


def _columns(options: Mapping[str, Any]) -> dict[str, Any]:
    """Spec options as ledger columns (renamed where they differ, the schema in canonical form)."""
    from icefloe.schema_documents import canonical_schema_document  # pyarrow, pyiceberg: see validate()

    columns = {_COLUMN_OF.get(k, k): v for k, v in options.items()}
    if columns.get("schema") is not None:
        columns["schema"] = canonical_schema_document(columns["schema"])
    return columns


# Changing these changes which keys belong to the ingestion: keys below the listing watermark may
# newly match, so the watermark is forgotten and the next run lists everything.
_RESETS_LISTING = ("pattern", "since")


def spec_of(ingestion: Ingestion) -> IngestionSpec:
    """The spec an ingestion was defined with (as changed since)."""
    return IngestionSpec(**{o: getattr(ingestion, _COLUMN_OF.get(o, o)) for o in OPTIONS})


def update(db: Engine, name_or_id: str | int, changes: Mapping[str, Any]) -> Ingestion:
    """Change some options of an ingestion (`PATCH /api/v1/ingestions/{id}`), checked as :func:`create`
    checks a new one. The row is locked while it changes, so concurrent updates apply one after the other.
    """
    fixed = sorted(set(changes) - set(UPDATABLE))
    if fixed:
        raise ConfigurationError(
            f"cannot change {', '.join(fixed)} of an ingestion (changeable: {', '.join(UPDATABLE)})"
        )
    with Session(db, expire_on_commit=False) as session:
        if "pattern" in changes:
            _lock_definitions(session)  # before the row lock, as create takes it: no deadlock
        column = Ingestion.id if isinstance(name_or_id, int) else Ingestion.name
        ingestion = session.scalars(select(Ingestion).where(column == name_or_id).with_for_update()).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name_or_id!r}")
        changed = replace(spec_of(ingestion), **changes)
        changed.validate(new_name="name" in changes)
        if "pattern" in changes:
            _refuse_overlap(session, changed, own_id=ingestion.id)
        for name, value in _columns(changes).items():
            setattr(ingestion, name, value)
        ingestion.updated_at = func.now()
        if any(field in changes for field in _RESETS_LISTING):
            ledger.reset_listing_state(session.connection(), ingestion.id)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"an ingestion named {changes.get('name')!r} already exists") from exc
        session.refresh(ingestion)
        return ingestion


def search(
    db: Engine,
    *,
    status: str | None = None,
    format: str | None = None,
    name_prefix: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Ingestion]:
    """Ingestions in id order after ``after_id`` (keyset pagination), optionally filtered."""
    stmt = select(Ingestion).order_by(Ingestion.id).limit(limit)
    if status is not None:
        stmt = stmt.where(Ingestion.status == status)
    if format is not None:
        stmt = stmt.where(Ingestion.format == format)
    if name_prefix:
        stmt = stmt.where(func.starts_with(Ingestion.name, name_prefix))
    if after_id is not None:
        stmt = stmt.where(Ingestion.id > after_id)
    with Session(db, expire_on_commit=False) as session:
        return list(session.scalars(stmt))


def file_uri(ingestion: Ingestion, key_or_uri: str) -> str:
    """A file's ledger path (``s3://bucket/key``) from a key of the ingestion's bucket or a full URI."""
    location = parse_source(ingestion.source)
    if key_or_uri.startswith(f"{location.base.split(':', 1)[0]}://"):
        return key_or_uri
    return location.uri(key_or_uri)


def check_name(name: str) -> None:
    """An ingestion's name: 1 to 200 characters, not all digits (the API takes a name or an id in
    one path segment: "42" must mean one thing), no "/" (a path segment), nothing invisible
    (controls, bidi overrides: a name must read as what it is)."""
    if not name or len(name) > 200:
        raise ConfigurationError("name must be 1 to 200 characters")
    if name.isdigit():
        raise ConfigurationError(f"name {name!r} is all digits: the API would take it for an id")
    invisible = invisible_character(name)
    if invisible is not None:
        raise ConfigurationError(f"name {name!r} holds the invisible character {invisible}")
    if "/" in name or name != name.strip():
        raise ConfigurationError(f"name {name!r} holds a '/' or blanks at its ends")


def file_uri_candidates(ingestion: Ingestion, key_or_uri: str) -> list[str]:
    """The ledger paths a user's file argument may mean, most likely first: a full ``s3://`` URI; a
    key below the ingestion's prefix (as `icefloe files` shows it); a key of the bucket."""
    location = parse_source(ingestion.source)
    if key_or_uri.startswith(f"{location.base.split(':', 1)[0]}://"):
        return [key_or_uri]
    below = location.uri(location.prefix + key_or_uri.lstrip("/"))
    in_bucket = location.uri(key_or_uri.lstrip("/"))
    return [below] if below == in_bucket else [below, in_bucket]


def key_below_prefix(ingestion: Ingestion, file_path: str) -> str:
    """A ledger path as the key below the ingestion's prefix (unchanged if not below it)."""
    return file_path.removeprefix(ingestion.source if ingestion.source.endswith("/") else ingestion.source + "/")


def as_dict(i: Ingestion) -> dict[str, Any]:
    """An ingestion as the CLI's --json and the API show it: the CLI's option names in snake_case,
    credentials written into its URIs masked (:func:`icefloe.redaction.redact_uri`)."""
    options = dataclasses.asdict(spec_of(i))
    options["source"] = redact_uri(i.source)
    options["spark_remote"] = None if i.spark_remote is None else redact_uri(i.spark_remote)
    return {"id": i.id, **options, "status": i.status, "created_at": i.created_at, "updated_at": i.updated_at}
