"""The simulation histogram (issue 15): a y-axis, x ticks, limit labels clear of the axis."""

from __future__ import annotations

import re

from simulation.charts import histogram_svg

RESULT = {
    "metrics": {"Pressure": {"p5": 0.02, "p50": 0.03, "p95": 0.04,
                             "histogram": {"edges": [0.01, 0.02, 0.03, 0.04, 0.05],
                                           "counts": [10, 40, 40, 10]}}},
    "constraints": [{"metric": "Pressure", "op": ">", "limit": 0.0431, "p_breach": 0.078}],
}


def _texts(svg: str) -> list[tuple[float, str]]:
    return [(float(y), text) for y, text in re.findall(r'<text[^>]* y="([\d.]+)"[^>]*>([^<]*)<',
                                                       svg)]


def test_the_limit_label_reads_as_a_sentence_below_the_axis_labels():
    svg = str(histogram_svg(RESULT, "Pressure"))
    texts = _texts(svg)
    label_y = next(y for y, t in texts if t.startswith("limit"))
    tick_y = max(y for y, t in texts if re.fullmatch(r"[\d.]+", t))
    assert "limit &gt; 0.0431 · P(breach) 0.078" in svg
    assert label_y > tick_y + 8  # its own row, not on top of the tick labels


def test_the_histogram_has_a_y_axis_in_share_of_samples():
    svg = str(histogram_svg(RESULT, "Pressure"))
    assert "share of samples" in svg
    assert ">40.0 %<" in svg and ">0 %<" in svg  # the tallest bin holds 40 % of samples


def test_no_histogram_draws_nothing():
    assert histogram_svg({"metrics": {}}, "Pressure") == ""


def test_percentile_labels_never_overprint_when_a_far_limit_squeezes_them():
    """GIVEN p5…p95 within a few pixels (a limit far out sets the x range), THEN each of
    p5, p50 and p95 gets its own row, and labels far apart share the lowest one."""
    squeezed = {"metrics": {"Pressure": RESULT["metrics"]["Pressure"]},
                "constraints": [{"metric": "Pressure", "op": ">", "limit": 5.0,
                                 "p_breach": 0.0}]}
    svg = str(histogram_svg(squeezed, "Pressure"))
    rows = {t: y for y, t in _texts(svg) if t in ("p5", "p50", "p95")}
    assert len(set(rows.values())) == 3 and min(rows.values()) > 10  # inside the picture
    wide = {t: y for y, t in _texts(str(histogram_svg(RESULT, "Pressure")))
            if t in ("p5", "p50", "p95")}
    assert len(set(wide.values())) == 1  # ~130 px apart: one row
