"""The NAB scorer on a hand-made file whose score is computed by hand in the docstrings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from telemetry.scoring.nab import (
    CostMatrix,
    load_profiles,
    normalised,
    probation_rows,
    read_csv,
    read_windows,
    scaled_sigmoid,
    score_file,
    window_rows,
)

STANDARD = CostMatrix(tp=1.0, fn=1.0, fp=0.11)
LOW_FN = CostMatrix(tp=1.0, fn=2.0, fp=0.11)


@pytest.fixture
def tiny(tmp_path):
    """20 rows, 5 minutes apart, from 2020-01-01 00:00; window rows 8..11 (00:40 to 00:55)."""
    rows = ["timestamp,value"] + [
        f"2020-01-01 {i * 5 // 60:02d}:{i * 5 % 60:02d}:00,{float(i)}" for i in range(20)
    ]
    (tmp_path / "tiny.csv").write_text("\n".join(rows) + "\n")
    windows = {"x/tiny.csv": [["2020-01-01 00:40:00.000000", "2020-01-01 00:55:00.000000"]]}
    (tmp_path / "windows.json").write_text(json.dumps(windows))
    ts, values = read_csv(tmp_path / "tiny.csv")
    return ts, values, read_windows(tmp_path / "windows.json")["x/tiny.csv"]


def test_the_sigmoid_matches_nab_at_its_landmarks():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_is_15_percent_capped_at_750_rows():
    assert probation_rows(20) == 3
    assert probation_rows(4032) == 604
    assert probation_rows(15831) == 750


def test_a_hand_made_file_scores_as_computed_by_hand(tiny):
    """Alerts at rows 1, 5, 9, 10, 14; probation = floor(0.15 * 20) = 3 rows; window 8..11.

    - row 1: in probation, ignored.
    - row 5: before any window: -A_FP = -0.11.
    - row 9: y = -(11 - 9 + 1) / 4 = -0.75; sigma = 2 / (1 + e^-3.75) - 1 = 0.954045, divided
      by sigma(-1) = 0.986614: TP = 0.966989.
    - row 10: same window after its first detection: ignored.
    - row 14: y = |11 - 14| / (4 - 1) = 1; sigma(1) = -0.986614; FP = 0.11 * -0.986614 = -0.108528.
    raw = 0.966989 - 0.11 - 0.108528 = 0.748461; null = -1; perfect = +1;
    normalised = 100 * (0.748461 + 1) / 2 = 87.42.
    """
    ts, values, windows = tiny
    assert len(ts) == 20 and values[3] == 3.0
    spans = window_rows(ts, windows)
    assert spans == [(8, 11)]
    s = score_file(20, spans, np.array([1, 5, 9, 10, 14]), STANDARD)
    assert s.tp == pytest.approx(0.966989, abs=1e-6)
    assert s.fp == pytest.approx(-0.218528, abs=1e-6)
    assert s.raw == pytest.approx(0.748461, abs=1e-6)
    assert (s.null, s.perfect) == (-1.0, pytest.approx(1.0))
    assert (s.n_detections, s.n_fp, s.n_detected) == (4, 2, 1)
    assert normalised([s]) == pytest.approx(87.4230, abs=1e-3)


def test_a_missed_window_costs_a_fn_and_silence_scores_zero(tiny):
    """No alert: raw = -A_FN; with A_FN = 2 (reward_low_FN_rate) raw = -2, normalised 0."""
    ts, _, windows = tiny
    spans = window_rows(ts, windows)
    s = score_file(20, spans, np.array([], dtype=int), LOW_FN)
    assert (s.raw, s.null, s.perfect) == (-2.0, -2.0, pytest.approx(1.0))
    assert normalised([s]) == 0.0
    late = score_file(20, spans, np.array([11]), STANDARD)  # last row: y = -1/4
    expected = (2 / (1 + math.exp(-1.25)) - 1) / scaled_sigmoid(-1.0)
    assert late.tp == pytest.approx(expected)


def test_a_file_without_windows_cannot_be_normalised():
    s = score_file(100, [], np.array([50, 60]), STANDARD)
    assert s.raw == pytest.approx(-0.22)
    assert math.isnan(normalised([s]))


def test_the_shipped_profiles_load(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"standard": {"CostMatrix": {
        "tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}}))
    assert load_profiles(path) == {"standard": STANDARD}
