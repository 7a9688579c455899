"""Small charts as server-rendered SVG: bars of one series, with a title and a text alternative.

Our own ~60 lines rather than a chart library: the pages need bars of one series at a time, an
inline SVG needs no asset and no script, and the one library that renders SVG in Python (pygal)
links its tooltips script from a web address by default (nothing may be fetched at run time).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def bars(
    values: Sequence[float],
    *,
    title: str,
    labels: Sequence[str] | None = None,
    width: int = 240,
    height: int = 48,
    unit: str = "",
    alarm: bool = False,
    slots: int = 24,
) -> Markup:
    """A bar chart of ``values`` (one bar each, left to right, the last at the right edge);
    ``labels`` name the bars in their tooltips. At least ``slots`` bar widths: a few values make
    thin bars, not wide blocks. ``alarm`` draws the bars in the warning colour (failures)."""
    peak = max(values, default=0) or 1
    n = max(len(values), slots, 1)
    step = width / n
    gap = 1 if step > 3 else 0
    offset = n - len(values)  # right-aligned: the newest bar is always at the right edge
    parts = []
    for j, value in enumerate(values):
        if value <= 0:
            continue  # no bar to draw (the 24 hours of 100 ingestions are mostly empty)
        i = offset + j
        h = max(1.0, value / peak * (height - 2))
        tip = f"{labels[j]}: " if labels else ""
        parts.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - gap, 0.5):.1f}" height="{h:.1f}">'
            f"<title>{escape(tip)}{escape(human(value))}{escape(unit)}</title></rect>"
        )
    total = human(sum(values))
    summary = f"{title}: {len(values)} bars, peak {human(max(values, default=0))}{unit}, total {total}{unit}"
    css = "chart alarm" if alarm else "chart"
    return Markup(
        f'<svg class="{css}" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'preserveAspectRatio="none"><title>{escape(summary)}</title>{"".join(parts)}</svg>'
    )


def human(value: float) -> str:
    """1234567 → 1.2M; small numbers as they are (integers without a point)."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def spark(values: Sequence[float], *, title: str, width: int = 240, height: int = 48) -> Markup:
    """The same bars as :func:`bars` drawn as one SVG path, with one title for the whole chart: the
    overview draws two per ingestion, and 100 ingestions x 48 bars as elements would weigh ~0.5 MB."""
    peak = max(values, default=0) or 1
    step = width / max(len(values), 1)
    gap = 1 if step > 3 else 0
    path = "".join(
        f"M{i * step:.1f} {height}v-{max(1.0, v / peak * (height - 2)):.1f}h{max(step - gap, 0.5):.1f}V{height}z"
        for i, v in enumerate(values)
        if v > 0
    )
    summary = f"{title}: peak {human(max(values, default=0))}, total {human(sum(values))}"
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'preserveAspectRatio="none"><title>{escape(summary)}</title><path d="{path}"/></svg>'
    )
