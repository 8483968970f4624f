"""Adaptive baselines of the control charts: slow change is absorbed, a sustained fault is not.

The reference mean of EWMA/CUSUM moves towards the mean of each block's in-limit points unless
half the block was out of limits (``telemetry.detectors.robust._ChartDetector``)."""

from __future__ import annotations

import numpy as np
import pytest

from telemetry.detectors import build_detector

N = 4000
CALIBRATION = 300
ADAPTIVE = {
    "ewma": {"lam": 0.7, "L": 3.0, "smooth": 3, "adapt_every": 50, "adapt_rate": 0.1},
    "cusum": {"k": 0.5, "h": 8.0, "adapt_every": 50, "adapt_rate": 0.5},
}


def noise() -> np.ndarray:
    return np.random.default_rng(11).normal(size=N)


def flags(name: str, params: dict, x: np.ndarray) -> np.ndarray:
    det = build_detector(name, params).fit(x[:CALIBRATION, None])
    return det.score(x[CALIBRATION:, None], history=x[:CALIBRATION, None]).flags


@pytest.mark.parametrize("name", ["ewma", "cusum"])
def test_a_slow_level_shift_is_absorbed_by_the_adaptive_reference(name):
    """GIVEN a level creeping up by 5σ over 3,700 rows, THEN the fixed calibration reference
    flags all of the last 1,000 rows, and the adaptive one at most 3 % of them."""
    x = noise() + np.concatenate([np.zeros(CALIBRATION), np.linspace(0, 5, N - CALIBRATION)])
    fixed = flags(name, {**ADAPTIVE[name], "adapt_every": 0}, x)
    adaptive = flags(name, ADAPTIVE[name], x)
    assert fixed[-1000:].mean() == 1.0
    assert adaptive[-1000:].mean() <= 0.03


@pytest.mark.parametrize("name", ["ewma", "cusum"])
def test_a_sustained_fault_keeps_being_flagged_and_never_becomes_the_new_normal(name):
    """GIVEN a +6σ step held for the last 2,000 rows, THEN the adaptive chart flags every one of
    them but the first (its reference froze), and almost nothing before the step."""
    x = noise()
    x[2000:] += 6.0
    adaptive = flags(name, ADAPTIVE[name], x)
    after = adaptive[2000 - CALIBRATION :]
    assert after[1:].all()
    assert adaptive[: 2000 - CALIBRATION].mean() < 0.01


def test_the_reference_moves_only_at_block_ends_and_only_from_mostly_normal_blocks():
    """The carried reference after 100 rows at +1σ (EWMA at 1.7σ of its own spread, inside
    L = 3) has moved twice by β towards the block means; a block at +20σ leaves it alone."""
    det = build_detector("ewma", {"lam": 0.5, "L": 3.0, "adapt_every": 50, "adapt_rate": 0.5})
    det.fit(np.random.default_rng(1).normal(size=(200, 1)))
    center0 = det.fitted_["center"][0]
    scale = det.fitted_["scale"][0]
    level = np.full((100, 1), center0 + scale)
    _, carry = det.score_stream(level)
    assert carry["rec"]["center"][0] == pytest.approx(center0 + 0.75 * scale)
    _, after = det.score_stream(np.full((50, 1), center0 + 20 * scale), carry=carry)
    assert after["rec"]["center"] == carry["rec"]["center"]
