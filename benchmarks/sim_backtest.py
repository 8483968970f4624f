"""Backtest of the pump what-if model's "hold" forecast on SKAB (data read in place).

For each labelled SKAB file and the anomaly-free file:

1. fit ``PumpModel`` on the first 400 rows (SKAB's own train split);
2. calibrate the state from the last ``--window`` training rows (default 60 s);
3. run the "hold" what-if (10,000 Monte Carlo samples) and compare its p5-p95 band and p50
   with the held-back rows 400..549 that are labelled normal (``anomaly == 0``; the label is
   used only to pick those rows; all of them for the anomaly-free file).

Reported per metric, overall and per group: coverage of the p5-p95 band (nominal 90 %) and
the mean absolute error of p50. Baseline in the same run: the empirical 5-95 % quantiles of
the state window as the band, and the window's last value as the point forecast
(persistence).

Data location: ``$OPSTWIN_SKAB_DIR`` or ``../shared/datasets/skab`` next to the repository.
Run: ``python benchmarks/sim_backtest.py [--window 60] [--horizon 150]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from demo.skab import columns, default_data_dir, list_files, read_run  # noqa: E402
from simulation.engine import PumpModel, calibrate_state, run_monte_carlo  # noqa: E402

SKAB_DIR = default_data_dir(REPO_ROOT)
TRAIN_ROWS = 400
GROUPS = ("anomaly-free", "valve1", "valve2", "other")


def load(name: str) -> dict[str, np.ndarray]:
    """One SKAB file (``valve1/0.csv``) as column arrays, read by ``demo.skab``."""
    return columns(read_run(SKAB_DIR, name))


def files() -> list[tuple[str, str]]:
    """(group, name) of the anomaly-free file and every labelled file, in numeric order."""
    return [(name.split("/")[0], name) for name in list_files(SKAB_DIR)]


def evaluate(data: dict[str, np.ndarray], window: int, horizon: int) -> dict[str, dict] | None:
    """Per-metric arrays of (covered, abs error, baseline covered, baseline abs error)."""
    model = PumpModel.fit({k: v[:TRAIN_ROWS] for k, v in data.items()})
    recent = {k: v[TRAIN_ROWS - window : TRAIN_ROWS] for k, v in data.items()}
    rows = np.arange(TRAIN_ROWS, min(TRAIN_ROWS + horizon, len(data["Current"])))
    if "anomaly" in data:
        rows = rows[data["anomaly"][rows] == 0]
    if rows.size == 0:
        return None
    fn, inputs = model.what_if("hold", {}, calibrate_state(recent))
    result = run_monte_carlo(fn, inputs, n_samples=10_000, max_samples=10_000, seed=0)
    out = {}
    for metric, summary in result.metrics.items():
        actual = data[metric][rows]
        p5, p50, p95 = (summary.percentiles[q] for q in (5, 50, 95))
        b5, b95 = np.percentile(recent[metric], [5, 95])
        out[metric] = {
            "covered": (actual >= p5) & (actual <= p95),
            "abs_err": np.abs(actual - p50),
            "base_covered": (actual >= b5) & (actual <= b95),
            "base_abs_err": np.abs(actual - recent[metric][-1]),
        }
    return out


def summarise(parts: list[dict[str, np.ndarray]]) -> tuple[float, float, float, float, int]:
    """Pool per-file arrays: (coverage %, MAE, baseline coverage %, baseline MAE, rows)."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = cat["covered"].size
    return (
        100 * cat["covered"].mean(),
        cat["abs_err"].mean(),
        100 * cat["base_covered"].mean(),
        cat["base_abs_err"].mean(),
        n,
    )


def report(pooled: dict[str, dict[str, list]], title: str) -> None:
    """Print the per-group, per-metric table (and an all-metrics line per group)."""
    print(f"\n{title}")
    print(
        f"{'group':<13} {'metric':<22} {'rows':>5} {'cover%':>7} {'MAE p50':>10} "
        f"{'base cov%':>9} {'base MAE':>10}"
    )
    for group in [*GROUPS, "ALL"]:
        for metric, parts in pooled[group].items():
            cov, mae, bcov, bmae, n = summarise(parts)
            print(
                f"{group:<13} {metric:<22} {n:>5} {cov:>7.1f} {mae:>10.4g} {bcov:>9.1f} "
                f"{bmae:>10.4g}"
            )
        every = [p for parts in pooled[group].values() for p in parts]
        cov, _, bcov, _, n = summarise(every)
        print(f"{group:<13} {'(all metrics)':<22} {n:>5} {cov:>7.1f} {'':>10} {bcov:>9.1f}")


def main() -> None:
    """Run the backtest over every file and print per-file lines and the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=60, help="state window, rows (~s)")
    parser.add_argument("--horizon", type=int, default=150, help="held-back rows after 400")
    args = parser.parse_args()
    if not SKAB_DIR.is_dir():
        sys.exit(f"SKAB data not found at {SKAB_DIR} (set OPSTWIN_SKAB_DIR)")
    pooled: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    print(
        f"window {args.window} rows, held-back rows {TRAIN_ROWS}..{TRAIN_ROWS + args.horizon - 1}"
    )
    for group, file_name in files():
        per_metric = evaluate(load(file_name), args.window, args.horizon)
        name = file_name.removesuffix(".csv")
        if per_metric is None:
            print(f"{name:<28} skipped: no normal rows in the held-back range")
            continue
        every = list(per_metric.values())
        cov, _, bcov, _, n = summarise(every)
        print(f"{name:<28} rows {n // len(every):>4}  coverage {cov:5.1f}%  baseline {bcov:5.1f}%")
        for metric, arrays in per_metric.items():
            pooled[group][metric].append(arrays)
            pooled["ALL"][metric].append(arrays)
    report(pooled, "Coverage of the p5-p95 band (nominal 90%) and MAE of p50, 'hold' forecast")


if __name__ == "__main__":
    main()
