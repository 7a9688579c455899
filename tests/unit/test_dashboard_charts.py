"""The dashboard's SVG bar charts: one bar per value, scaled to the peak, text escaped."""

from __future__ import annotations

import re

from icefloe.dashboard import charts


def test_bars_scale_to_the_peak_and_align_right() -> None:
    svg = str(charts.bars([0, 5, 10], title="rows", labels=["a", "b", "c"], width=240, height=50, slots=24))
    rects = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)">', svg)
    assert len(rects) == 2  # no bar for 0
    heights = [float(h) for *_, h in rects]
    assert heights == [24.0, 48.0]
    assert float(rects[-1][0]) == 230.0  # the last of 24 slots of 10 px
    assert "<title>c: 10</title>" in svg and 'role="img"' in svg
    assert "rows: 3 bars, peak 10, total 15" in svg


def test_bars_of_nothing_and_hostile_labels() -> None:
    assert "0 bars" in str(charts.bars([], title="empty"))
    svg = str(charts.bars([1], title="<script>", labels=["<b>x</b>"]))
    assert "<script>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg


def test_human_numbers() -> None:
    assert [charts.human(v) for v in (0, 999, 1500, 2_500_000, 3.25)] == ["0", "999", "1.5k", "2.5M", "3.25"]


def test_spark_is_one_path_with_one_title() -> None:
    svg = str(charts.spark([0, 5, 10, 0], title="bytes", width=40, height=50))
    assert svg.count("<path") == 1 and svg.count("<title>") == 1
    assert 'd="M10.0 50v-24.0h9.0V50zM20.0 50v-48.0h9.0V50z"' in svg
    assert "bytes: peak 10, total 15" in svg
