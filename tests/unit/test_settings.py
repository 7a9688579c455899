"""Settings: validated once from an environment mapping; the README documents every variable read."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from icefloe.errors import ConfigurationError
from icefloe.settings import S3Settings, Settings, SparkSettings

README = Path(__file__).resolve().parents[2] / "README.md"


class _Recording(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _readme_variables() -> set[str]:
    """The ICEFLOE_* names in the first column of the README's configuration table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|"):
            names.update(re.findall(r"ICEFLOE_[A-Z0-9_]+", line.split("|")[1]))
    return names


def test_the_readme_table_lists_exactly_the_variables_settings_read() -> None:
    env = _Recording({})
    Settings.from_env(env)
    read = {name for name in env.asked if name.startswith("ICEFLOE_")}
    assert read >= {"ICEFLOE_WAREHOUSE", "ICEFLOE_LOG_FORMAT", "ICEFLOE_SPARK_REMOTE", "ICEFLOE_API_CORS_ORIGINS"}
    documented = _readme_variables()
    assert sorted(read - documented) == [], "read but not in the README's configuration table"
    assert sorted(documented - read) == [], "in the README's configuration table but never read"


def test_from_env_reads_every_part(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ICEFLOE_HOME": str(tmp_path),
            "ICEFLOE_DATABASE_URL": "postgresql://u@db/ledger",
            "ICEFLOE_WAREHOUSE": "s3://warehouse/x",
            "ICEFLOE_LOG_FORMAT": "json",
            "ICEFLOE_SPARK_CATALOG": "server",
            "ICEFLOE_SPARK_CACHE": str(tmp_path / "cache"),
            "ICEFLOE_ALERT_WEBHOOK_URL": "https://hooks.example/x",
            "ICEFLOE_API_METRICS_PUBLIC": "true",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_DEFAULT_REGION": "eu-west-3",
            "AWS_CA_BUNDLE": "/etc/ca.pem",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@db/ledger"  # libpq style accepted
    assert (settings.home, settings.warehouse, settings.log_format) == (tmp_path, "s3://warehouse/x", "json")
    assert settings.s3 == S3Settings(endpoint_url="http://127.0.0.1:9000", region="eu-west-3", ca_bundle="/etc/ca.pem")
    assert settings.s3.path_style
    assert settings.spark.catalog == "server" and settings.spark.cache_dir == tmp_path / "cache"
    assert settings.alerts.channel_names == ["webhook"] and settings.api.metrics_public
    defaults = Settings.from_env({"ICEFLOE_HOME": str(tmp_path)})
    assert defaults.warehouse == (tmp_path / "warehouse").as_uri() and not defaults.s3.path_style
    assert defaults.spark == SparkSettings() and defaults.lease_seconds == 60


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ICEFLOE_LEASE_SECONDS": "soon"}, "ICEFLOE_LEASE_SECONDS must be an integer"),
        ({"ICEFLOE_LEASE_SECONDS": "2"}, "at least 3"),
        ({"ICEFLOE_READ_THREADS": "many"}, "ICEFLOE_READ_THREADS"),
        ({"ICEFLOE_LOG_FORMAT": "xml"}, "ICEFLOE_LOG_FORMAT"),
        ({"ICEFLOE_SPARK_CATALOG": "both"}, "ICEFLOE_SPARK_CATALOG"),
        ({"ICEFLOE_SPARK_SCHEME": "gs"}, "ICEFLOE_SPARK_SCHEME"),
        ({"ICEFLOE_ALERT_SMTP_TO": "a@example.com"}, "SMTP_HOST is not"),
        ({"ICEFLOE_API_CORS_ORIGINS": "ftp://x"}, "ICEFLOE_API_CORS_ORIGINS"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)
