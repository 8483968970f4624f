"""Server-rendered SVG line chart of one metric with anomaly episodes shaded."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 720, 140, 22


def line_chart_svg(
    ts: np.ndarray, values: np.ndarray, episodes: list[tuple[datetime, datetime]], label: str
) -> SafeString:
    """SVG polyline of ``values`` (n,) over ``ts`` (n,) datetime64, episodes as shaded bands.

    Long series are thinned to at most ~1,400 points (every k-th point) for the drawing only.
    """
    if len(ts) < 2:
        return mark_safe("")
    step = max(1, len(ts) // 1400)
    t = ts[::step].astype("datetime64[ms]").astype(np.int64).astype(float)
    v = values[::step]
    t0, t1 = t[0], t[-1] if t[-1] > t[0] else t[0] + 1
    lo, hi = float(v.min()), float(v.max()) if v.max() > v.min() else float(v.min()) + 1

    def x(ms: float) -> float:
        return PAD + (ms - t0) / (t1 - t0) * (WIDTH - 2 * PAD)

    def y(val: float) -> float:
        return HEIGHT - PAD - (val - lo) / (hi - lo) * (HEIGHT - 2 * PAD)

    bands = []
    for start, end in episodes:
        a = x(start.timestamp() * 1000)
        b = x(end.timestamp() * 1000)
        a, b = max(a, PAD), min(max(b, a + 2), WIDTH - PAD)
        if b > a:
            bands.append(f'<rect x="{a:.1f}" y="{PAD}" width="{b - a:.1f}" '
                         f'height="{HEIGHT - 2 * PAD}" class="episode"/>')
    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, v, strict=True))
    return mark_safe(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f"<title>{escape(label)}</title>{''.join(bands)}"
        f'<polyline points="{points}" class="series"/>'
        f'<text x="{PAD}" y="14" class="lbl">{escape(label)}</text>'
        f'<text x="{WIDTH - PAD}" y="14" class="lbl" text-anchor="end">{lo:.3g} – {hi:.3g}</text>'
        f"</svg>"
    )
