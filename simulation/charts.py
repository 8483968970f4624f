"""Server-rendered SVG histogram of a simulated metric (no JavaScript, works offline)."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 560, 180, 24
PERCENTILES = ("p5", "p50", "p95")


def _x(value: float, low: float, high: float) -> float:
    return PAD + (value - low) / ((high - low) or 1.0) * (WIDTH - 2 * PAD)


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
    peak = max(counts) or 1
    parts = []
    for left, right, count in zip(edges, edges[1:], counts, strict=False):
        x0, x1 = _x(left, low, high), _x(right, low, high)
        h = (HEIGHT - 2 * PAD) * count / peak
        parts.append(f'<rect x="{x0:.1f}" y="{HEIGHT - PAD - h:.1f}" '
                     f'width="{max(x1 - x0 - 1, 1):.1f}" height="{h:.1f}" class="bar"/>')
    for name in PERCENTILES:
        x = _x(stats[name], low, high)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD}" y2="{HEIGHT - PAD}" '
                     f'class="pct"/>'
                     f'<text x="{x + 2:.1f}" y="{PAD - 4}" class="lbl">{name}</text>')
    for c in limits:
        x = _x(c["limit"], low, high)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD}" y2="{HEIGHT - PAD}" '
                     f'class="limit"/>'
                     f'<text x="{x + 2:.1f}" y="{HEIGHT - 6}" class="lbl limit-lbl">'
                     f'{escape(c["op"])} {c["limit"]:.3g}: P={c["p_breach"]:.3f}</text>')
    axis = (f'<text x="{PAD}" y="{HEIGHT - 6}" class="lbl">{low:.3g}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="lbl" text-anchor="end">'
            f"{high:.3g}</text>")
    title = f"<title>Simulated distribution of {escape(metric)}</title>"
    return mark_safe(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{title}'
                     f'{"".join(parts)}{axis}</svg>')
