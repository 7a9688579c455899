import pytest

from icefloe.discovery import Filter, compile_glob, skip_reason
from icefloe.errors import ConfigurationError


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*.jsonl", "a.jsonl", True),
        ("*.jsonl", "dt=1/a.jsonl", False),  # * stays within a segment
        ("**/*.jsonl", "a.jsonl", True),  # **/ matches zero directories
        ("**/*.jsonl", "x/y/z/a.jsonl", True),
        ("dt=2025-01-0?/*.csv", "dt=2025-01-03/a.csv", True),
        ("dt=2025-01-0?/*.csv", "dt=2025-01-10/a.csv", False),
        ("part-[0-4]*.csv", "part-3x.csv", True),
        ("part-[!0-4]*.csv", "part-3x.csv", False),
        ("part-[!0-4]*.csv", "part-7x.csv", True),
        ("*.{csv,csv.gz}", "a.csv.gz", True),
        ("*.{csv,csv.gz}", "a.json", False),
        ("{a,b/{c,d}}/*.json", "b/d/x.json", True),
        ("data/**", "data/x/y.csv", True),
        ("a+b(1).csv", "a+b(1).csv", True),  # regex metacharacters are literal
        ("a+b(1).csv", "aab1.csv", False),
    ],
)
def test_glob_semantics(pattern: str, key: str, matches: bool) -> None:
    assert (compile_glob(pattern).match(key) is not None) is matches


@pytest.mark.parametrize("pattern", ["[abc", "{a,b", "x/[", "*.{csv"])
def test_malformed_glob_is_a_configuration_error(pattern: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed glob"):
        compile_glob(pattern)


def test_filter_matches_below_the_prefix_and_since() -> None:
    import datetime as dt

    since = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    flt = Filter(prefix="landing/", pattern="*.csv", since=since)
    assert flt.accepts("landing/a.csv", since)
    assert not flt.accepts("landing/a.csv", since - dt.timedelta(seconds=1))
    assert not flt.accepts("landing/sub/a.csv", since)


def test_markers_and_hidden_files_are_skipped_with_a_reason() -> None:
    assert skip_reason("dt=1/_SUCCESS") is not None
    assert skip_reason(".part-0.crc") is not None
    assert skip_reason("_temporary/0/part.json") is not None
    assert skip_reason("dir/") == "folder marker"
    assert skip_reason("dt=1/part-0.json") is None
