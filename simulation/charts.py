"""Server-rendered SVG histogram of a simulated metric (no JavaScript, works offline).

Layout: a y-axis on the left (share of samples per bin, 0 to the tallest bin), an x-axis with
five ticks in the metric's unit below the bars, p5/p50/p95 as dashed lines labelled above the
plot (each in the lowest of three rows where no label is nearer than ``LABEL_W``, so
neighbours never overprint, even when a far limit squeezes p5…p95 into a few pixels), and
each constraint limit as a red line whose label ("limit > 0.0431 · P(breach) 0.078") sits
in a legend row under the axis, never on top of the tick labels.
"""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, LEFT, RIGHT = 600, 52, 16
TOP, PLOT_H, AXIS_H, LEGEND_ROW = 40, 140, 30, 16
PERCENTILES = ("p5", "p50", "p95")
#: Horizontal room (px) a percentile label needs ("p95" at 10 px plus a margin); label rows.
LABEL_W, LABEL_ROW = 26, 11


def _x(value: float, low: float, high: float) -> float:
    return LEFT + (value - low) / ((high - low) or 1.0) * (WIDTH - LEFT - RIGHT)


def _bars(edges, counts, low, high) -> list[str]:
    total, peak = sum(counts) or 1, max(counts) or 1
    parts, base = [], TOP + PLOT_H
    for left, right, count in zip(edges, edges[1:], counts, strict=False):
        x0, x1 = _x(left, low, high), _x(right, low, high)
        h = PLOT_H * count / peak
        parts.append(f'<rect x="{x0:.1f}" y="{base - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                     f'height="{h:.1f}" class="bar"><title>{left:.4g} – {right:.4g}: '
                     f'{100 * count / total:.1f} %</title></rect>')
    top_share = 100 * peak / total
    parts += [f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}" class="axis"/>',
              f'<text x="{LEFT - 4}" y="{TOP + 4}" class="lbl" text-anchor="end">'
              f'{top_share:.1f} %</text>',
              f'<text x="{LEFT - 4}" y="{base}" class="lbl" text-anchor="end">0 %</text>',
              f'<text x="12" y="{TOP + PLOT_H / 2:.0f}" class="lbl" text-anchor="middle" '
              f'transform="rotate(-90 12 {TOP + PLOT_H / 2:.0f})">share of samples</text>']
    return parts


def _x_axis(low: float, high: float) -> list[str]:
    base = TOP + PLOT_H
    parts = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" class="axis"/>']
    for k in range(5):
        value = low + (high - low) * k / 4
        x = _x(value, low, high)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{base + 16}" class="lbl" text-anchor="{anchor}">'
                     f'{value:.4g}</text>')
    return parts


def label_rows(xs: list[float]) -> list[int]:
    """Row of each label centred at ``xs`` (px; 0 is the row nearest the plot): the lowest
    row holding no label nearer than ``LABEL_W``. Three rows hold the three percentiles
    apart however close they are."""
    taken: list[list[float]] = []
    rows = []
    for x in xs:
        row = next((r for r, row_xs in enumerate(taken)
                    if all(abs(x - o) >= LABEL_W for o in row_xs)), len(taken))
        if row == len(taken):
            taken.append([])
        taken[row].append(x)
        rows.append(row)
    return rows


def _markers(stats: dict, limits: list[dict], low: float, high: float) -> list[str]:
    parts, base = [], TOP + PLOT_H
    xs = [_x(stats[name], low, high) for name in PERCENTILES]
    for name, x, row in zip(PERCENTILES, xs, label_rows(xs), strict=True):
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{base}" class="pct"/>'
                     f'<text x="{x:.1f}" y="{TOP - 4 - LABEL_ROW * row}" class="lbl" '
                     f'text-anchor="middle">{name}</text>')
    for k, c in enumerate(limits):
        x = _x(c["limit"], low, high)
        y = base + AXIS_H + LEGEND_ROW * k + 10
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{base}" class="limit"/>'
                     f'<line x1="{LEFT}" x2="{LEFT + 18}" y1="{y - 4}" y2="{y - 4}" class="limit"/>'
                     f'<text x="{LEFT + 24}" y="{y}" class="lbl limit-lbl">limit '
                     f'{escape(c["op"])} {c["limit"]:.4g} · P(breach) {c["p_breach"]:.3f}</text>')
    return parts


def histogram_svg(result: dict, metric: str) -> SafeString:
    """SVG of ``result["metrics"][metric]["histogram"]`` with p5/p50/p95 and constraint lines.

    ``result`` is a Monte Carlo result dict (``MonteCarloResult.to_dict()``). Returns an empty
    string when the metric has no histogram.
    """
    stats = result.get("metrics", {}).get(metric)
    if not stats or "histogram" not in stats:
        return mark_safe("")
    edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
    limits = [c for c in result.get("constraints", []) if c["metric"] == metric]
    low = min([edges[0], *(c["limit"] for c in limits)])
    high = max([edges[-1], *(c["limit"] for c in limits)])
    height = TOP + PLOT_H + AXIS_H + LEGEND_ROW * len(limits) + 6
    parts = [*_bars(edges, counts, low, high), *_x_axis(low, high),
             *_markers(stats, limits, low, high)]
    title = f"<title>Simulated distribution of {escape(metric)}</title>"
    return mark_safe(f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img">{title}'
                     f'{"".join(parts)}</svg>')
