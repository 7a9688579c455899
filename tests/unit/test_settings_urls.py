import pytest

from icefloe.errors import ConfigurationError
from icefloe.settings import ledger_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, None),
        ("", None),
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ],
)
def test_postgresql_urls_are_taken(url: str | None, expected: str | None) -> None:
    assert ledger_url(url) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u:hunter2@h/db", "sqlite:///x.db", "postgresql+psycopg2://u:hunter2@h/d", "h/db"]
)
def test_other_urls_are_a_configuration_error_that_shows_no_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be a PostgreSQL URL") as raised:
        ledger_url(url)
    assert "hunter2" not in str(raised.value)
