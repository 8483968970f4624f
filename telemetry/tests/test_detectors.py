"""Tests of the pure numpy/scipy detector library (no database, no Django imports).

Synthetic signals use bounded (uniform, unit-variance) noise with fixed seeds, so "no flags on
the clean part" holds by construction rather than by luck, plus a known fault injected at a known
index. Rows 0..199 calibrate, rows 200..599 are scored with rows 0..199 as history.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import stats

from telemetry.detectors import (
    DETECTORS,
    CusumDetector,
    DetectorOutput,
    Episode,
    EwmaDetector,
    MadDetector,
    PcaT2QDetector,
    RollingZScore,
    build_detector,
    detector_from_state,
    find_episodes,
    q_limit,
    rolling_zscore,
    score_to_severity,
    t2_limit,
)
from telemetry.detectors.numerics import Z_CAP, rolling_median

N, CAL, FAULT = 600, 200, 400
SQRT3 = np.sqrt(3.0)


def uniform_noise(seed: int, n: int = N, m: int = 3) -> np.ndarray:
    """Unit-variance noise bounded by ±sqrt(3)."""
    return np.random.default_rng(seed).uniform(-SQRT3, SQRT3, size=(n, m))


def run(name: str, X: np.ndarray, **params: object) -> DetectorOutput:
    """Fit on the calibration rows and score the rest with the calibration rows as history."""
    det = build_detector(name, dict(params)).fit(X[:CAL])
    return det.score(X[CAL:], history=X[:CAL])


def flagged(out: DetectorOutput) -> np.ndarray:
    """Indices (in the original series) of the flagged points."""
    return np.flatnonzero(out.flags) + CAL


@pytest.fixture
def step() -> np.ndarray:
    X = uniform_noise(1)
    X[FAULT:, 1] += 8.0
    return X


@pytest.fixture
def spike() -> np.ndarray:
    X = uniform_noise(2)
    X[FAULT, 2] += 12.0
    return X


@pytest.fixture
def ramp() -> np.ndarray:
    X = uniform_noise(3)
    X[FAULT:, 0] += 0.02 * np.arange(N - FAULT)  # 0.02 sigma per point, 4 sigma at the end
    return X


@pytest.fixture
def broken_correlation() -> np.ndarray:
    """x0 and x1 move together until FAULT, then x1 mirrors x0; marginals never change."""
    rng = np.random.default_rng(4)
    s = rng.uniform(-SQRT3, SQRT3, N)
    X = np.column_stack([s, s + 0.05 * rng.normal(size=N), rng.uniform(-SQRT3, SQRT3, N)])
    X[FAULT:, 1] = -s[FAULT:] + 0.05 * rng.normal(size=N - FAULT)
    return X


# ----------------------------------------------------------------------------- rolling_zscore
def naive_rolling_zscore(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    z = np.full(x.shape, np.nan)
    for i in range(x.shape[0]):
        w = x[max(0, i - window) : i]
        if w.size >= min_periods:
            z[i] = (x[i] - w.mean()) / w.std(ddof=1)
    return z


def test_rolling_zscore_matches_a_naive_loop_over_the_preceding_window() -> None:
    x = np.random.default_rng(0).normal(5.0, 2.0, 300)
    got = rolling_zscore(x, window=20, min_periods=5)
    np.testing.assert_allclose(got, naive_rolling_zscore(x, 20, 5), rtol=1e-10, equal_nan=True)


def test_rolling_zscore_never_includes_the_point_itself() -> None:
    x = uniform_noise(5, 100, 1)[:, 0]
    x[70] = 50.0
    z = rolling_zscore(x, window=20)
    # With the point inside its own window |z| could not exceed (w-1)/sqrt(w) ~ 4.25.
    assert z[70] > 20.0


def test_rolling_zscore_is_nan_until_min_periods_points_precede() -> None:
    z = rolling_zscore(np.arange(10.0), window=5, min_periods=3)
    assert np.isnan(z[:3]).all()
    assert np.isfinite(z[3:]).all()


def test_rolling_zscore_of_a_flat_window_is_zero_or_capped_without_warnings() -> None:
    x = np.array([1.0] * 10 + [1.0, 2.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = rolling_zscore(x, window=10)
    assert z[10] == 0.0
    assert z[11] == Z_CAP
    assert z[12] < 0 and np.isfinite(z[12])


@pytest.mark.parametrize(
    ("x", "window", "min_periods"),
    [
        (np.zeros((5, 2)), 3, 2),
        (np.array([1.0, np.nan, 2.0]), 3, 2),
        (np.zeros(5), 1, 1),
        (np.zeros(5), 3, 4),
    ],
)
def test_rolling_zscore_rejects_bad_input(x: np.ndarray, window: int, min_periods: int) -> None:
    with pytest.raises(ValueError):
        rolling_zscore(x, window=window, min_periods=min_periods)


# ----------------------------------------------------------------------------- step
@pytest.mark.parametrize("name", ["zscore", "mad", "pca_t2q"])
def test_it_flags_a_step_in_one_metric_at_the_step(name: str, step: np.ndarray) -> None:
    out = run(name, step)
    hits = flagged(out)
    assert hits.min() == FAULT
    assert out.metric_index[FAULT - CAL] == 1
    assert out.contributions[FAULT - CAL, 1] > 0.5


@pytest.mark.parametrize("name", ["zscore", "mad", "pca_t2q"])
def test_it_raises_no_flag_on_the_clean_part(name: str, step: np.ndarray) -> None:
    assert (flagged(run(name, step)) < FAULT).sum() == 0


def test_the_zscore_baseline_stops_flagging_once_the_window_has_absorbed_a_step(
    step: np.ndarray,
) -> None:
    hits = flagged(run("zscore", step, window=60))
    assert hits.max() < FAULT + 60
    assert set(range(FAULT, FAULT + 3)) <= set(hits.tolist())


def test_mad_keeps_flagging_a_step_relative_to_its_calibration(step: np.ndarray) -> None:
    hits = flagged(run("mad", step))
    np.testing.assert_array_equal(hits, np.arange(FAULT, N))


# ----------------------------------------------------------------------------- spike
@pytest.mark.parametrize("name", ["zscore", "mad"])
def test_it_flags_a_single_spike_and_nothing_else(name: str, spike: np.ndarray) -> None:
    out = run(name, spike)
    np.testing.assert_array_equal(flagged(out), [FAULT])
    assert out.metric_index[FAULT - CAL] == 2
    assert out.kind[FAULT - CAL] == "spike"


def test_pca_flags_the_spike_and_blames_its_metric(spike: np.ndarray) -> None:
    out = run("pca_t2q", spike)
    np.testing.assert_array_equal(flagged(out), [FAULT])
    assert out.metric_index[FAULT - CAL] == 2


def test_a_rolling_median_removes_an_isolated_spike(spike: np.ndarray) -> None:
    assert flagged(run("mad", spike, smooth=3)).size == 0


def test_min_run_ignores_a_spike_but_keeps_a_step(spike: np.ndarray, step: np.ndarray) -> None:
    assert flagged(run("mad", spike, min_run=2)).size == 0
    np.testing.assert_array_equal(flagged(run("mad", step, min_run=3)), np.arange(FAULT + 2, N))


# ----------------------------------------------------------------------------- ramp
@pytest.mark.parametrize(
    ("name", "params", "latest_first_flag"),
    [("cusum", {"h": 8.0}, 480), ("ewma", {"lam": 0.1, "L": 3.5}, 500)],
)
def test_drift_charts_catch_a_slow_ramp(
    name: str, params: dict, latest_first_flag: int, ramp: np.ndarray
) -> None:
    out = run(name, ramp, **params)
    hits = flagged(out)
    assert hits.size > 0 and (hits < FAULT).sum() == 0
    assert FAULT <= hits.min() <= latest_first_flag
    assert (out.metric_index[hits - CAL] == 0).all()
    assert (out.kind[hits - CAL] == "drift").all()


def test_cusum_and_ewma_follow_their_textbook_recursions() -> None:
    x = np.random.default_rng(12).normal(size=(80, 2)) + np.linspace(0, 2, 80)[:, None]
    cal = np.random.default_rng(13).normal(size=(50, 2))
    mu, sd = cal.mean(axis=0), cal.std(axis=0, ddof=1)
    u = (x - mu) / sd
    k, lam = 0.5, 0.2
    cp, cm, e = np.zeros(2), np.zeros(2), np.zeros(2)
    cusum, ewma = [], []
    for i, ui in enumerate(u, start=1):
        cp, cm = np.maximum(0, cp + ui - k), np.maximum(0, cm - ui - k)
        e = lam * ui + (1 - lam) * e
        cusum.append(np.maximum(cp, cm).max())
        ewma.append((np.abs(e) / np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))).max())
    got_c = CusumDetector(k=k, autocorr=False).fit(cal).score(x).statistic
    got_e = EwmaDetector(lam=lam, autocorr=False).fit(cal).score(x).statistic
    np.testing.assert_allclose(got_c, cusum, rtol=1e-10)
    np.testing.assert_allclose(got_e, ewma, rtol=1e-10)


@pytest.mark.parametrize("cls", [MadDetector, EwmaDetector, CusumDetector, PcaT2QDetector])
def test_autocorrelated_calibration_widens_the_scale(cls: type) -> None:
    rng = np.random.default_rng(14)
    walk = np.cumsum(rng.normal(size=(400, 2)), axis=0)  # lag-1 autocorrelation near 1
    dev = walk - walk.mean(axis=0)
    rho = np.minimum((dev[1:] * dev[:-1]).sum(axis=0) / (dev * dev).sum(axis=0), 0.99)
    assert (rho > 0.9).all()
    plain = cls(autocorr=False).fit(walk).fitted_["scale"]
    wide = cls().fit(walk).fitted_["scale"]
    np.testing.assert_allclose(wide, plain * np.sqrt((1 + rho) / (1 - rho)), rtol=1e-9)


def test_a_statistic_exactly_on_its_limit_is_not_flagged() -> None:
    cal = np.array([[-1.0], [0.0], [1.0]])  # mean 0, sample std 1, no autocorrelation
    det = CusumDetector(k=0.0, h=5.0).fit(cal)
    out = det.score(np.array([[5.0], [1e-9]]))
    np.testing.assert_allclose(out.statistic, [5.0, 5.0 + 1e-9])
    assert out.flags.tolist() == [False, True]


def test_the_smoothing_is_a_causal_rolling_median() -> None:
    stat = np.random.default_rng(15).normal(size=40)
    naive = [np.median(stat[max(0, i - 4) : i + 1]) for i in range(40)]
    np.testing.assert_allclose(rolling_median(stat, 5), naive)
    np.testing.assert_allclose(rolling_median(stat, 5, start=2), naive[2:])


def test_the_zscore_baseline_misses_a_slow_ramp(ramp: np.ndarray) -> None:
    assert flagged(run("zscore", ramp)).size == 0


# ----------------------------------------------------------------------------- correlation
def test_pca_q_catches_a_broken_correlation(broken_correlation: np.ndarray) -> None:
    out = run("pca_t2q", broken_correlation, mode="q")
    hits = flagged(out)
    assert (hits < FAULT).sum() == 0
    assert hits.size >= 0.85 * (N - FAULT)
    shares = out.contributions[hits - CAL]
    assert set(out.metric_index[hits - CAL].tolist()) <= {0, 1}
    assert shares[:, 2].max() < 0.1  # the residual lies along (1, -1, 0)
    np.testing.assert_allclose(shares[:, 0], shares[:, 1], atol=0.2)


@pytest.mark.parametrize("name", ["zscore", "mad"])
def test_univariate_detectors_do_not_see_a_broken_correlation(
    name: str, broken_correlation: np.ndarray
) -> None:
    assert flagged(run(name, broken_correlation)).size == 0


# ----------------------------------------------------------------------------- output contract
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_outputs_have_the_documented_shapes_and_ranges(name: str, step: np.ndarray) -> None:
    out = run(name, step)
    n = N - CAL
    assert out.statistic.shape == out.score.shape == out.flags.shape == (n,)
    assert out.contributions.shape == (n, 3) and out.metric_index.shape == (n,)
    assert out.flags.dtype == bool and out.statistic.dtype == np.float64
    assert ((out.score >= 0) & (out.score <= 1)).all()
    np.testing.assert_allclose(out.contributions.sum(axis=1), 1.0)
    assert set(out.kind.tolist()) <= {"spike", "drift", "outlier"}
    np.testing.assert_array_equal(out.metric_index, out.contributions.argmax(axis=1))


def test_zscore_kind_and_score_follow_the_seed_rule() -> None:
    base = np.tile([1.0, -1.0], 30)  # window mean 0, sample std sqrt(60/59)
    sd = np.sqrt(60 / 59)
    values = [2.9, 3.0, 3.9, 4.0, 4.9, 5.0, 5.5]
    rows = np.concatenate([np.concatenate([base, [v * sd]]) for v in values])[:, None]
    out = RollingZScore(window=60).score(rows)
    idx = [61 * i + 60 for i in range(len(values))]
    np.testing.assert_allclose(out.statistic[idx], values)
    assert out.kind[idx].tolist() == ["drift"] * 3 + ["outlier"] * 2 + ["spike"] * 2
    np.testing.assert_allclose(out.score[idx], [0.58, 0.6, 0.78, 0.8, 0.98, 1.0, 1.0])
    assert out.flags[idx].tolist() == [False] + [True] * 6


@pytest.mark.parametrize(
    ("name", "params", "tol"),
    [
        ("zscore", {}, 1e-12),
        ("mad", {"smooth": 5, "min_run": 3}, 1e-12),
        ("pca_t2q", {"smooth": 3, "min_run": 2}, 1e-12),
        ("pca_t2q", {"lam": 0.3}, 3e-3),  # EWMA memory is truncated at 0.1 % weight
    ],
)
def test_scoring_row_by_row_with_history_matches_batch_scoring(
    name: str, params: dict, tol: float, step: np.ndarray
) -> None:
    det = build_detector(name, params).fit(step[:CAL])
    batch = det.score(step[CAL:], history=step[:CAL])
    h = det.history_length
    for i in range(CAL, N, 7):
        one = det.score(step[i : i + 1], history=step[i - h : i])
        assert one.flags[0] == batch.flags[i - CAL]
        np.testing.assert_allclose(one.statistic[0], batch.statistic[i - CAL], rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_a_state_round_trip_through_json_gives_identical_scores(
    name: str, broken_correlation: np.ndarray
) -> None:
    det = build_detector(name, {"smooth": 3}).fit(broken_correlation[:CAL])
    text = json.dumps(det.to_state())
    again = detector_from_state(json.loads(text))
    assert type(again) is DETECTORS[name]
    a = det.score(broken_correlation[CAL:], history=broken_correlation[:CAL])
    b = again.score(broken_correlation[CAL:], history=broken_correlation[:CAL])
    for field in ("statistic", "score", "flags", "contributions", "kind", "metric_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.threshold == b.threshold


def test_state_holds_only_plain_json_types() -> None:
    state = PcaT2QDetector().fit(uniform_noise(6, 300, 4)).to_state()

    def walk(v: object) -> None:
        if isinstance(v, dict):
            assert all(isinstance(k, str) for k in v)
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        else:
            assert v is None or type(v) in (float, int, str, bool)

    walk(state)


def test_from_state_refuses_a_state_of_another_detector() -> None:
    state = MadDetector().fit(uniform_noise(7, 50, 2)).to_state()
    with pytest.raises(ValueError, match="mad"):
        EwmaDetector.from_state(state)
    with pytest.raises(ValueError):
        detector_from_state({"name": "nope"})


# ----------------------------------------------------------------------------- limits
def test_q_limit_matches_the_simulated_quantile_of_q() -> None:
    eigs = np.array([0.3, 0.25, 0.2, 0.15, 0.1, 0.1, 0.05])
    rng = np.random.default_rng(8)
    q = (rng.normal(size=(400_000, eigs.size)) ** 2 * eigs).sum(axis=1)
    for method in ("jm", "box"):
        assert q_limit(eigs, 0.01, method) == pytest.approx(np.quantile(q, 0.99), rel=0.03)


def test_t2_limit_is_the_f_based_phase_two_limit() -> None:
    expected = 3 * 99 * 101 / (100 * 97) * stats.f.ppf(0.99, 3, 97)
    assert t2_limit(3, 100, 0.01) == pytest.approx(expected)
    with pytest.raises(ValueError):
        t2_limit(5, 5, 0.01)


@pytest.mark.parametrize("mode", ["t2", "q"])
def test_pca_false_alarm_rate_on_gaussian_data_is_close_to_alpha(mode: str) -> None:
    rng = np.random.default_rng(9)
    mix = rng.normal(size=(5, 5))
    X = rng.normal(size=(21_000, 5)) @ mix
    det = PcaT2QDetector(mode=mode, alpha=0.01, variance=0.8, autocorr=False).fit(X[:1000])
    rate = det.score(X[1000:]).flags.mean()
    assert 0.005 < rate < 0.02


# ----------------------------------------------------------------------------- episodes
def test_find_episodes_groups_runs_into_one_episode_each() -> None:
    flags = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    eps = find_episodes(flags)
    assert [(e.start, e.end, e.n_points) for e in eps] == [(1, 2, 2), (5, 7, 3), (9, 9, 1)]


def test_find_episodes_bridges_short_gaps_and_finds_the_peak() -> None:
    flags = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    score = np.array([0, 0.6, 0.7, 1.0, 0, 0.6, 0.9, 0.8, 0, 0.99])
    ts = np.arange(10) * 10
    eps = find_episodes(flags, ts=ts, max_gap=1, score=score)
    assert [(e.start, e.end, e.n_points, e.peak) for e in eps] == [(1, 2, 2, 2), (5, 9, 4, 9)]
    assert (eps[1].start_ts, eps[1].end_ts, eps[1].length) == (50, 90, 5)
    assert eps[1].peak_score == pytest.approx(0.99)


def test_a_long_alarm_run_is_one_episode_not_hundreds(step: np.ndarray) -> None:
    eps = find_episodes(run("mad", step).flags)
    assert eps == [Episode(start=FAULT - CAL, end=N - CAL - 1, peak=FAULT - CAL, n_points=200)]


def test_find_episodes_handles_no_flags_and_rejects_bad_input() -> None:
    assert find_episodes(np.zeros(5, dtype=bool)) == []
    with pytest.raises(ValueError):
        find_episodes(np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError):
        find_episodes(np.zeros(3, dtype=bool), max_gap=-1)
    with pytest.raises(ValueError):
        find_episodes(np.zeros(3, dtype=bool), ts=np.arange(4))


# ----------------------------------------------------------------------------- severity
@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (1.0, "critical"),
        (0.95, "critical"),
        (0.949, "high"),
        (0.85, "high"),
        (0.849, "medium"),
        (0.70, "medium"),
        (0.699, "low"),
        (0.0, "low"),
    ],
)
def test_score_to_severity_uses_the_seed_cut_offs(score: float, severity: str) -> None:
    assert score_to_severity(score) == severity


# ----------------------------------------------------------------------------- factory & errors
def test_build_detector_returns_the_registered_class_with_its_params() -> None:
    det = build_detector("cusum", {"h": 4.0})
    assert isinstance(det, CusumDetector) and det.params["h"] == 4.0
    assert {cls.name for cls in DETECTORS.values()} == set(DETECTORS)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", None, "unknown detector"),
        ("zscore", {"windw": 5}, "windw"),
        ("zscore", {"window": 0}, "window"),
        ("ewma", {"lam": 1.5}, "lam"),
        ("pca_t2q", {"mode": "x"}, "mode"),
        ("pca_t2q", {"autocorr": "yes"}, "autocorr"),
        ("mad", ["threshold"], "dict"),
    ],
)
def test_build_detector_rejects_unknown_names_and_bad_params(
    name: str, params: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_detector(name, params)  # type: ignore[arg-type]


def test_fitted_detectors_refuse_to_score_before_fit_or_with_other_metrics() -> None:
    X = uniform_noise(10, 50, 2)
    with pytest.raises(RuntimeError):
        MadDetector().score(X)
    with pytest.raises(ValueError):
        MadDetector().fit(X).score(uniform_noise(10, 5, 3))
    with pytest.raises(ValueError):
        MadDetector().fit(X).score(X, history=uniform_noise(10, 5, 3))
    assert RollingZScore().score(X).flags.shape == (50,)


def test_pca_needs_two_varying_metrics() -> None:
    with pytest.raises(ValueError):
        PcaT2QDetector().fit(uniform_noise(11, 50, 1))
    X = uniform_noise(11, 50, 3)
    X[:, 1] = 7.0
    with pytest.raises(ValueError):
        PcaT2QDetector().fit(X[:, :2])


# ----------------------------------------------------------------------------- SKAB benchmark
def test_the_skab_benchmark_reproduces_the_tuned_ewma_result() -> None:
    from benchmarks._skab import default_data_dir
    from benchmarks.skab_eval import TUNED_CONFIGS, evaluate

    if not (default_data_dir() / "manifest.json").is_file():
        pytest.fail("SKAB data not available (set OPSTWIN_SKAB_DIR)")
    config = next(c for c in TUNED_CONFIGS if c[1] == "ewma")
    (row,) = evaluate(detectors=[config])
    assert row["points"] == 23_801 and row["tp"] + row["fn"] == 12_771
    assert row["f1"] >= 0.76 and row["far"] < 20.0
