"""The jars a local Spark Connect server needs, fetched from Maven Central with Maven and cached.

pyspark 4.0.x ships Spark with the Hadoop 3.4.1 client but without Iceberg, S3 or PostgreSQL
support. The versions below go together:

* Iceberg's Spark runtime for Spark 4.0 / Scala 2.13 (SparkCatalog, the JDBC catalog, S3FileIO);
* ``iceberg-aws-bundle``: the AWS SDK v2 (2.33) that S3FileIO uses. It is not relocated; it also
  serves ``hadoop-aws`` below (built against SDK 2.24.6; the 0.6 GB ``software.amazon.awssdk:bundle``
  it names is not needed), with the one module the Iceberg bundle lacks, the S3 transfer manager,
  at the same SDK version. One SDK on the classpath, not two;
* ``hadoop-aws`` matching pyspark's Hadoop client, for ``s3a://`` reads of the source files;
* the PostgreSQL JDBC driver, for Iceberg's JDBC catalog in icefloe's ledger database.

``iceberg-aws-bundle`` 1.10.2 is not published; 1.10.1 carries the same SDK.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from icefloe.errors import ConfigurationError

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@dataclass(frozen=True)
class Artifact:
    group: str
    artifact: str
    version: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


ICEBERG_VERSION = "1.10.2"
JARS: tuple[Artifact, ...] = (
    Artifact("org.apache.iceberg", "iceberg-spark-runtime-4.0_2.13", ICEBERG_VERSION),
    Artifact("org.apache.iceberg", "iceberg-aws-bundle", "1.10.1"),
    Artifact("software.amazon.awssdk", "s3-transfer-manager", "2.33.0"),
    Artifact("org.apache.hadoop", "hadoop-aws", "3.4.1"),
    Artifact("org.postgresql", "postgresql", "42.7.8"),
)


def jar_dir(cache: Path) -> Path:
    """Where the jars of this version set live; another set gets another folder."""
    return cache / "jars" / f"iceberg-{ICEBERG_VERSION}"


def missing(cache: Path) -> list[Artifact]:
    folder = jar_dir(cache)
    return [a for a in JARS if not (folder / a.file_name).is_file()]


def ensure_jars(cache: Path, *, log: bool = True) -> list[Path]:
    """The jar files, fetched with ``mvn dependency:copy`` into the cache when missing.

    A jar is copied to a temporary folder first and moved into place when complete, so an
    interrupted download never leaves a truncated jar behind.
    """
    folder = jar_dir(cache)
    todo = missing(cache)
    if todo:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConfigurationError(
                "the Spark server's jars are not cached and Maven (`mvn`) is not installed: "
                f"install Maven or copy {', '.join(a.coordinates for a in todo)} into {folder}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for artifact in todo:
            if log:
                print(f"fetching {artifact.coordinates} with Maven", flush=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                result = subprocess.run(
                    [
                        mvn,
                        "-B",
                        "-q",
                        f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                        f"-Dartifact={artifact.coordinates}",
                        f"-DoutputDirectory={tmp}",
                    ],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                    env=os.environ.copy(),
                )
                downloaded = Path(tmp) / artifact.file_name
                if result.returncode != 0 or not downloaded.is_file():
                    detail = " ".join((result.stdout + result.stderr).split())[-400:]
                    raise ConfigurationError(f"mvn could not fetch {artifact.coordinates}: {detail}")
                os.replace(downloaded, folder / artifact.file_name)
    return [folder / a.file_name for a in JARS]
