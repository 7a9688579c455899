import time

import pytest

from icefloe.discovery import Filter, skip_reason
from icefloe.errors import ConfigurationError
from icefloe.globs import compile_glob, may_overlap


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
        ("**/x.csv", "x.csv", True),
        ("a/**/b.csv", "a/b.csv", True),
        ("a/**/b.csv", "a/1/2/b.csv", True),
        ("a/**/b.csv", "a/1b.csv", False),
        ("a**b", "a/x/b", True),  # ** inside a segment still crosses segments
        ("?.csv", "/.csv", False),
        ("*", "", True),
        ("*", "a/b", False),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[^a-c]x", "dx", True),
        ("[-a]x", "-x", True),  # a leading or trailing '-' is literal
        ("[a-]x", "-x", True),
        ("[\\]x", "\\x", True),  # a backslash is literal, inside a class too
        ("a\\*", "a\\bc", True),
        ("{,x}.csv", ".csv", True),  # an empty alternative
        ("{a,b}{1,2}", "b2", True),
        ("{a,b}{1,2}", "b3", False),
        ("x}y,z", "x}y,z", True),  # '}' and ',' outside braces are literal
        ("dt=*/*.jsonl{,.gz}", "dt=1/a.jsonl.gz", True),
        ("dt=*/*.jsonl{,.gz}", "dt=1/a.jsonl.gzx", False),
    ],
)
def test_glob_semantics(pattern: str, key: str, matches: bool) -> None:
    assert compile_glob(pattern).match(key) is matches


@pytest.mark.parametrize("pattern", ["[abc", "{a,b", "x/[", "*.{csv", "[]", "[!]", "[z-a]", "{a,{b}"])
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
    assert skip_reason("a/.staging/b/part.json") == "hidden or marker file (.staging)"
    assert skip_reason("a/b_c.d/x_y.json") is None  # "_" and "." inside a name are not markers
    assert skip_reason("a/b/_committed_123") == "hidden or marker file (_committed_123)"


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("*_*_*_*_*_*.csv", "_" * 240 + "x"),  # the 241-character key: 11 s with a regex
        ("*_" * 20 + "*.csv", "_" * 5000),
        ("**a" * 20 + ".csv", "a" * 5000),
        ("{*a,*b}" * 10 + "z", "ab" * 2500),
    ],
)
def test_hostile_keys_match_in_linear_time(pattern: str, key: str) -> None:
    glob = compile_glob(pattern)
    started = time.perf_counter()
    assert not glob.match(key)
    assert not glob.match(key[:-1] + "/")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("outer", "inner", "below", "overlap"),
    [
        ("*.csv", "*.json", "", False),
        ("*.csv", None, "", True),
        (None, None, "eu/", True),
        ("*.csv", "*.csv", "eu/", False),  # * stays in the outer prefix's own folder
        ("**/*.csv", "*.csv", "eu/", True),
        ("eu/*.csv", "*", "eu/", True),
        ("us/**", None, "eu/", False),
        ("[!a]*", "x*", "", True),
        ("[!x]*", "x*", "", False),
        ("{a,b}/*", "*", "b/", True),
        ("part-[0-4]*", "part-[5-9]*", "", False),
        ("*.jsonl{,.gz}", "**/*.gz", "", True),
        ("dt=2025-*/**", "dt=2024-*/**", "", False),
    ],
)
def test_may_overlap_decides_whether_one_key_matches_both(
    outer: str | None, inner: str | None, below: str, overlap: bool
) -> None:
    assert may_overlap(outer, inner, inner_below=below) is overlap
